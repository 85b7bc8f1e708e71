"""The web catalog's pieces that need no server: the lineage graph, the same-origin check, and the
listing conditions its filters add."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from starlette.requests import Request

from rain.repository.listing import matches, name_words, words_of
from rain.web import lineage
from rain.web.sessions import same_origin

SVG = "{http://www.w3.org/2000/svg}"


def test_the_lineage_graph_is_well_formed_svg_with_names_as_text_and_links_to_each_image() -> None:
    hostile = '<script>alert(1)</script>"&'
    svg = lineage.draw([lineage.Node("aaaaaaaaaaaa", "base"), lineage.Node("bbbbbbbbbbbb", "(not visible to you)",
                                                                             link=False)],
                       lineage.Node("cccccccccccc", hostile),
                       [lineage.Node(f"d{i:011d}", f"child-{i}") for i in range(7)], more=2)
    root = ET.fromstring(svg)  # escaping kept it well-formed XML
    assert root.tag == f"{SVG}svg" and "<script>" not in svg
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert hostile in texts, "whole: it fits the box"
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert links == ["/images/aaaaaaaaaaaa", *[f"/images/d{i:011d}" for i in range(5)]], \
        "ancestors and children link; the current image and one the viewer may not read do not"
    assert "and 4 more" in texts, "two past the row, and two not fetched"
    assert int(root.get("height")) > 4 * lineage.BOX_H, "four rows: two ancestors, the image, its children"


def _request(**headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


def test_a_form_is_same_origin_only_when_the_browser_says_so() -> None:
    host = "rain.example:8780"
    assert same_origin(_request(host=host, origin=f"https://{host}", sec_fetch_site="same-origin"))
    assert same_origin(_request(host=host, origin=f"http://{host}"))
    assert same_origin(_request(host=host, sec_fetch_site="same-origin")), "a browser that hides Origin"
    assert not same_origin(_request(host=host, origin="https://evil.example"))
    assert not same_origin(_request(host=host, origin=f"https://{host}.evil.example"))
    assert not same_origin(_request(host=host, origin=f"https://{host}", sec_fetch_site="same-site"))
    assert not same_origin(_request(host=host, origin="null", sec_fetch_site="cross-site"))
    assert not same_origin(_request(host=host)), "neither header: not a browser's form"


def test_listing_conditions_reach_into_arrays_of_records_and_test_emptiness_and_text() -> None:
    doc = {"name": "Debian-HPC", "registrations": [{"target": "hpc"}, {"target": "ec2"}],
           "quarantined": [], "vetting": {"hpc": {"verdict": "pass"}}, "tags": ["a", "b"], "status": "available"}
    assert matches(doc, {"registrations.target": "ec2", "tags": "b"})
    assert not matches(doc, {"registrations.target": "openstack"})
    assert matches(doc, {"quarantined": {"$nonempty": False}, "vetting": {"$nonempty": True}})
    assert not matches(doc, {"quarantined": {"$nonempty": True}})
    assert matches({"name": "x"}, {"vetting": {"$nonempty": False}}), "a missing field is empty"
    words = {"name_words": name_words(doc["name"])}
    assert matches(words, {"name_words": {"$all": ["deb", "hpc"]}}) and matches(words, {"name_words": "debian"})
    assert not matches(words, {"name_words": {"$all": ["deb", "rocky"]}})
    assert matches(doc, {"status": {"$ne": "uploading"}}) and not matches(doc, {"status": {"$ne": "available"}})


def test_a_name_is_found_by_the_starts_of_its_words_in_any_case() -> None:
    assert name_words("Debian-bookworm.K8s") == sorted({"d", "de", "deb", "debi", "debia", "debian", "b", "bo", "boo",
                                                       "book", "bookw", "bookwo", "bookwor", "bookworm", "k", "k8",
                                                       "k8s"})
    assert words_of("  deb/Book ") == ["deb", "book"] and words_of("--") == []
    assert max(map(len, name_words("a" * 100))) == 24, "a long word is indexed by its first 24 characters"


def test_every_form_that_changes_something_carries_the_csrf_token() -> None:
    """Each POST form of the templates posts the session's token back (sign-in has no session yet: the
    origin check alone guards it, tests/integration/web)."""
    import re
    from pathlib import Path

    import rain.web

    forms = 0
    for template in (Path(rain.web.__file__).parent / "templates").glob("*.j2"):
        for form in re.findall(r"<form\b[^>]*>.*?</form>", template.read_text(), re.S):
            if 'method="post"' not in form or 'action="/signin"' in form:
                continue
            forms += 1
            assert '<input type="hidden" name="csrf" value="{{ csrf }}">' in form, (template.name, form[:120])
    assert forms >= 10, "share, unshare, visibility, describe, remove, sign out, token, revoke, user, gc"
