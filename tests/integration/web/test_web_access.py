"""The web catalog over HTTP, as a browser would speak it: who sees what, the session cookie, forms that
must carry a CSRF token and come from this origin. The real `fg-image serve` on 127.0.0.1 with the embedded
repository; the same checks in chromium are in test_web_browser.py."""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from support.mongo import mongo_client
from support.service import Service, start_service
from support.web import Catalog, add_many, csrf_of, signed_in
from support.wire import Relay

from rain.config import Settings
from rain.register.targets.base import TargetName
from rain.repository.connect import open_store
from rain.repository.models import ImageQuery

pytestmark = [pytest.mark.integration]
EVERY = ("alpha", "alice-private", "alice-shares", "bob-secret", "bob-public", "bob-shares")


def seen_of(html: str) -> str:
    found = re.search(r'name="seen" value="([^"]+)"', html)
    assert found, "the token form names the token list it was shown with"
    return found.group(1)


def names_on(html: str) -> set[str]:
    """The image names the catalog's table lists (links to image pages), as the page source holds them."""
    return set(re.findall(r'class="image-link">([^<]+)</a>', html))


def test_a_visitor_sees_public_images_only_and_a_private_one_is_not_found(service: Service, catalog: Catalog,
                                                                         settings: Settings) -> None:
    home = requests.get(service.url + "/")
    assert home.status_code == 200 and names_on(home.text) == {"alpha", "bob-public"}
    offered = re.search(r'<select name="registered".*?</select>', home.text, re.S)
    assert offered and set(re.findall(r"<option>([a-z0-9]+)</option>", offered.group(0))) == \
        {t.value for t in TargetName}, "the filter offers every target Rain registers on"
    for private in ("bob-secret", "alice-private", "bob-shares"):
        assert private not in home.text, "not in the page's source either"
    hidden = requests.get(f"{service.url}/images/{catalog.id('bob-secret')}")
    missing = requests.get(f"{service.url}/images/0123456789ab")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace(catalog.id("bob-secret"), "ID") == missing.text.replace("0123456789ab", "ID"), \
        "a private image reads exactly as one that does not exist"
    assert requests.get(f"{service.url}/images/{catalog.id('bob-secret')}/download").status_code == 404
    public = requests.get(f"{service.url}/images/{catalog.id('alpha')}/download")
    assert public.content == catalog.data["alpha"], "a public image downloads without signing in"
    downloads = [e.user for e in open_store(settings, "admin").history(catalog.id("alpha")) if e.action == "download"]
    assert downloads == ["(visitor)"], "the owner's history names who downloaded: a visitor, not a blank"
    assert requests.get(service.url + "/nowhere").status_code == 404
    assert "<h1>Not found</h1>" in requests.get(service.url + "/nowhere").text, "a page, not JSON"
    api = requests.get(service.url + "/api/v1/nowhere", headers={"Authorization": f"Bearer {catalog.tokens['bob']}"})
    assert api.json()["error"] == "not_found", "the API keeps its JSON"


def test_sign_in_sets_a_session_cookie_that_is_not_the_token(service: Service, catalog: Catalog,
                                                             settings: Settings) -> None:
    bad = requests.post(service.url + "/signin", data={"token": "rain_nope"}, headers={"Origin": service.url})
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    assert re.search(r'role="alert">[^<\n]+</p>', bad.text), "one line says why"
    good = requests.post(service.url + "/signin", data={"token": catalog.tokens["alice"]},
                         headers={"Origin": service.url}, allow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    assert "Secure" not in cookie, "plain HTTP on 127.0.0.1: Secure only with TLS"
    value = good.cookies["rain_session"]
    assert value != catalog.tokens["alice"] and catalog.tokens["alice"] not in cookie
    with mongo_client(settings.mongo_uri) as client:
        [doc] = list(client[settings.mongo_db]["web_sessions"].find())
    assert doc["_id"] == hashlib.sha256(value.encode()).hexdigest(), "the database keeps the id's hash only"
    assert value not in str(doc) and catalog.tokens["alice"] not in str(doc)


def test_alice_sees_hers_shared_and_public_never_bobs_private_and_filters_narrow(
        service: Service, catalog: Catalog, settings: Settings) -> None:
    alice = signed_in(service.url, catalog.tokens["alice"])
    page = alice.get(service.url + "/")
    assert names_on(page.text) == {"alpha", "alice-private", "alice-shares", "bob-public", "bob-shares"}
    assert "bob-secret" not in page.text and catalog.id("bob-secret") not in page.text
    # vetting and registrations, as register records them
    owner = open_store(settings, "alice")
    owner.set_vetting(catalog.id("alpha"), "hpc", {"verdict": "pass", "findings": []})
    owner.set_vetting(catalog.id("alice-private"), "ec2", {"verdict": "fail", "findings": []})
    owner.add_registration(catalog.id("alpha"), "openstack", "", "9c0e6f5e-0000-4000-8000-000000000001", {})

    def shown(**filters: str) -> set[str]:
        answer = alice.get(service.url + "/", params=filters)
        assert answer.status_code == 200, answer.text
        return names_on(answer.text)
    assert shown(os_family="rocky") == {"alice-private", "bob-public"}
    assert shown(visibility="public") == {"alpha", "bob-public"}
    assert shown(search="SHARES") == {"alice-shares", "bob-shares"}, "search holds the text, any case"
    assert shown(tag="hpc") == {"alice-private"}
    assert shown(owner="bob") == {"bob-public", "bob-shares"}, "never bob-secret"
    assert shown(verdict="fail") == {"alice-private"}
    assert shown(verdict="pass") == {"alpha"}
    assert shown(registered="openstack") == {"alpha"}
    assert shown(os_family="debian", search="al") == {"alpha", "alice-shares"}
    # the API and the CLI have the same filters
    assert [i.name for i in owner.list(ImageQuery(registered="openstack", verdict="pass"))] == ["alpha"]
    bad = alice.get(service.url + "/", params={"verdict": "maybe"})
    assert bad.status_code == 400 and "verdict" in bad.text
    nothing = alice.get(service.url + "/", params={"search": "--"})
    assert nothing.status_code == 400 and "holds no letter or digit" in nothing.text


def test_the_catalog_pages_through_many_images(service: Service, catalog: Catalog, settings: Settings) -> None:
    add_many(settings)
    alice = signed_in(service.url, catalog.tokens["alice"])
    first = alice.get(service.url + "/", params={"tag": "many"})
    assert names_on(first.text) == {f"many-{n:02d}" for n in range(5, 55)}, "newest first, 50 a page"
    older = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert older, "a link to the next page"
    mine = {i.name: i.id for i in open_store(settings, "alice").list(ImageQuery(tag="many"))}
    # "next" reads on after the last image shown (many-05), not by skipping the first page's 50
    assert older.group(1).replace("&amp;", "&") == f"/?tag=many&page=2&after={mine['many-05']}"
    second = alice.get(service.url + older.group(1).replace("&amp;", "&"))
    assert names_on(second.text) == {f"many-{n:02d}" for n in range(5)}
    assert 'rel="next"' not in second.text and 'href="/?tag=many&amp;page=1" rel="prev"' in second.text
    # "previous" from a later page reads back before the first image shown, and links on both ways
    back = alice.get(service.url + "/", params={"tag": "many", "page": "3", "before": mine["many-02"]})
    assert names_on(back.text) == {f"many-{n:02d}" for n in range(3, 53)}
    assert 'href="/?tag=many&amp;page=1" rel="prev"' not in back.text
    assert f'href="/?tag=many&amp;page=2&amp;before={mine["many-52"]}" rel="prev"' in back.text
    assert f'href="/?tag=many&amp;page=4&amp;after={mine["many-03"]}" rel="next"' in back.text
    by_name = alice.get(service.url + "/", params={"tag": "many", "sort": "name"})
    assert re.findall(r'class="image-link">([^<]+)</a>', by_name.text)[:2] == ["many-00", "many-01"]
    by_name_next = re.search(r'href="([^"]+)" rel="next"', by_name.text)
    assert by_name_next
    assert names_on(alice.get(service.url + by_name_next.group(1).replace("&amp;", "&")).text) == \
        {f"many-{n:02d}" for n in range(50, 55)}
    gone = alice.get(service.url + "/", params={"tag": "many", "page": "2", "after": catalog.id("bob-secret")})
    assert gone.status_code == 404 and "list from the first page" in gone.text, "another's private image: not found"


def test_forms_without_the_csrf_token_or_from_another_origin_change_nothing(
        service: Service, catalog: Catalog, settings: Settings) -> None:
    alice = signed_in(service.url, catalog.tokens["alice"])
    image = catalog.id("alpha")
    token = csrf_of(alice.get(f"{service.url}/images/{image}").text)
    url = f"{service.url}/images/{image}/share"
    attempts = [
        ({"users": "bob"}, {"Origin": service.url}),  # no token
        ({"users": "bob", "csrf": "x" * 43}, {"Origin": service.url}),  # another token
        ({"users": "bob", "csrf": token}, {"Origin": "http://evil.example"}),  # another origin
        ({"users": "bob", "csrf": token}, {"Origin": service.url, "Sec-Fetch-Site": "cross-site"}),
        ({"users": "bob", "csrf": token}, {}),  # neither Origin nor Sec-Fetch-Site: not a browser's form
    ]
    for form, headers in attempts:
        refused = alice.post(url, data=form, headers=headers, allow_redirects=False)
        assert refused.status_code == 403, (form, headers, refused.status_code)
    assert open_store(settings, "alice").show(image).shared_with == [], "nothing changed"
    # bob, signed in, cannot change alice's image with his own session's token
    bob = signed_in(service.url, catalog.tokens["bob"])
    bobs = csrf_of(bob.get(service.url + "/me").text)
    taken = bob.post(url, data={"users": "bob", "csrf": bobs}, headers={"Origin": service.url}, allow_redirects=False)
    assert taken.status_code == 403 and "only the owner" in taken.text
    hidden = bob.post(f"{service.url}/images/{catalog.id('alice-private')}/remove",
                      data={"confirm": "alice-private", "csrf": bobs}, headers={"Origin": service.url})
    assert hidden.status_code == 404, "an image bob may not read is not found, also to a form"
    done = alice.post(url, data={"users": "bob", "csrf": token}, headers={"Origin": service.url}, allow_redirects=False)
    assert done.status_code == 303
    assert open_store(settings, "alice").show(image).shared_with == ["bob"]


def test_the_owner_changes_visibility_tags_and_removes_only_with_the_name_typed(
        service: Service, catalog: Catalog, settings: Settings) -> None:
    alice = signed_in(service.url, catalog.tokens["alice"])
    image = catalog.id("alice-private")
    token = csrf_of(alice.get(f"{service.url}/images/{image}").text)
    origin = {"Origin": service.url}

    def post(action: str, **form: str) -> requests.Response:
        return alice.post(f"{service.url}/images/{image}/{action}", data={"csrf": token, **form}, headers=origin)
    assert post("visibility", public="1").status_code == 200
    assert post("describe", tags="hpc gpu", description="GPU nodes\nfor <b>everyone</b>").status_code == 200
    record = open_store(settings, "alice").show(image)
    assert record.visibility == "public" and sorted(record.tags) == ["gpu", "hpc"]
    assert record.description == "GPU nodes\nfor <b>everyone</b>"
    assert "for &lt;b&gt;everyone&lt;/b&gt;" in alice.get(f"{service.url}/images/{image}").text
    bad_tag = post("describe", tags="no/slash")
    assert bad_tag.status_code == 400 and "tag" in bad_tag.text
    wrong = post("remove", confirm="alpha")
    assert wrong.status_code == 400 and "type the image's name (alice-private)" in html.unescape(wrong.text)
    assert open_store(settings, "alice").show(image).name == "alice-private", "nothing was removed"
    gone = post("remove", confirm="alice-private")
    assert gone.status_code == 200 and gone.url == service.url + "/", "back to the catalog"
    assert "removed alice-private" in gone.text
    assert "alice-private" not in [i.name for i in open_store(settings, "alice").list()]


def test_an_admin_page_is_403_for_a_user_and_sign_out_ends_the_session_on_the_server(
        service: Service, catalog: Catalog) -> None:
    alice = signed_in(service.url, catalog.tokens["alice"])
    assert alice.get(service.url + "/admin").status_code == 403
    assert requests.get(service.url + "/admin").status_code == 403
    admin = signed_in(service.url, catalog.tokens["admin"])
    page = admin.get(service.url + "/admin")
    assert page.status_code == 200 and 'id="dedup-ratio"' in page.text
    assert {"admin", "alice", "bob"} <= set(re.findall(r"<tr><td>([a-z]+)</td>", page.text))
    token = csrf_of(page.text)
    def save(name: str, **form: str) -> requests.Response:
        return admin.post(f"{service.url}/admin/users/{name}", data={"csrf": token, **form},
                          headers={"Origin": service.url})
    assert save("bob", role="user", status="active", quota="2G").status_code == 200
    assert save("alice", role="user", status="active", quota="100000000").status_code == 200
    page = save("bob", role="admin", status="active", quota="2G")  # the quota as shown: unchanged
    assert 'aria-label="quota of bob" value="2G"' in page.text
    assert 'aria-label="quota of alice" value="100000000"' in page.text, "shown exactly: a save keeps it"
    for bad in ("inf", "1e308", "9" * 40, "-1", "lots"):
        refused = save("bob", quota=bad)
        assert refused.status_code == 400 and "quota" in refused.text, bad
    assert save("nobody-here", quota="1G").status_code == 404
    history = requests.get(service.url + "/api/v1/history", params={"user": "admin"},
                           headers={"Authorization": f"Bearer {catalog.tokens['admin']}"}).json()
    actions = [e["action"] for e in history]
    assert actions.count("user-quota") == 2 and actions.count("user-role") == 1, "a save changes what differs"
    # a user's session cannot do what only an administrator may; a visitor changes nothing
    alice_token = csrf_of(alice.get(service.url + "/me").text)
    for path in ("/admin/users/bob", "/admin/gc"):
        assert alice.post(service.url + path, data={"csrf": alice_token, "quota": "1T"},
                          headers={"Origin": service.url}).status_code == 403
    assert requests.post(f"{service.url}/images/{catalog.id('alpha')}/share", data={"users": "x"},
                         headers={"Origin": service.url}).status_code == 401
    cookie = alice.cookies["rain_session"]
    me = alice.get(service.url + "/me")
    out = alice.post(service.url + "/signout", data={"csrf": csrf_of(me.text)}, headers={"Origin": service.url},
                     allow_redirects=False)
    assert out.status_code == 303 and "rain_session=" in out.headers["set-cookie"]
    replay = requests.get(service.url + "/me", cookies={"rain_session": cookie})
    assert replay.status_code == 401, "the old cookie opens nothing: the session is gone on the server"


def test_a_token_made_on_the_me_page_is_shown_once_works_and_can_be_revoked(
        service: Service, catalog: Catalog) -> None:
    alice = signed_in(service.url, catalog.tokens["alice"])
    me = alice.get(service.url + "/me")
    assert "of 1.0 GiB" in me.text, me.text
    form = {"csrf": csrf_of(me.text), "seen": seen_of(me.text), "name": "laptop", "days": "30"}
    made = alice.post(service.url + "/me/tokens", data=form, headers={"Origin": service.url})
    assert made.status_code == 200
    secret = re.search(r'<code id="new-token">([^<]+)</code>', made.text)
    assert secret
    # a reload of that page sends the same form again: no second token, and the page says why
    reloaded = alice.post(service.url + "/me/tokens", data=form, headers={"Origin": service.url})
    assert reloaded.status_code == 200 and reloaded.url == service.url + "/me"
    assert "No token was made" in reloaded.text and secret.group(1) not in reloaded.text
    assert reloaded.text.count("<td>laptop</td>") == 1, "one token, not two"
    api = requests.get(service.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {secret.group(1)}"})
    assert api.json()["name"] == "alice"
    again = alice.get(service.url + "/me")
    assert secret.group(1) not in again.text and "laptop" in again.text, "shown once"
    row = re.search(r"<tr><td><code>([^<]+)</code></td><td>laptop</td>", again.text)
    assert row, "the new token is listed by its name"
    revoked = alice.post(f"{service.url}/me/tokens/{row.group(1)}/revoke", data={"csrf": csrf_of(again.text)},
                         headers={"Origin": service.url})
    assert revoked.status_code == 200 and f"revoked token {row.group(1)}" in revoked.text
    assert requests.get(service.url + "/api/v1/whoami",
                        headers={"Authorization": f"Bearer {secret.group(1)}"}).status_code == 401


def test_the_token_form_sent_twice_at_once_makes_one_token(service: Service, catalog: Catalog) -> None:
    """A double click sends the form twice before either answer: both see the token list unchanged, so
    the list alone cannot tell them apart. The session takes each form once."""
    alice = signed_in(service.url, catalog.tokens["alice"])
    me = alice.get(service.url + "/me")
    form = {"csrf": csrf_of(me.text), "seen": seen_of(me.text), "name": "twice", "days": "1"}
    start = threading.Barrier(4)

    def send(_: int) -> str:
        start.wait()
        return alice.post(service.url + "/me/tokens", data=form, headers={"Origin": service.url}).text
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    assert sum('<code id="new-token">' in a for a in answers) == 1, "one answer shows a new token"
    assert alice.get(service.url + "/me").text.count("<td>twice</td>") == 1, "one token, not two"


def test_a_hostile_name_and_description_show_as_text(service: Service, catalog: Catalog, settings: Settings) -> None:
    """The repository refuses such a name from any client; a record that holds one anyway (an old
    database, another tool) still shows as text."""
    script = "<script>alert(1)</script>"
    with mongo_client(settings.mongo_uri) as client:
        images = client[settings.mongo_db]["images"]
        images.update_one({"_id": catalog.id("alpha")}, {"$set": {
            "name": script, "description": '<img src=x onerror="alert(2)"> and </dd></dl><script>alert(3)</script>',
            "tags": ['"><svg onload=alert(4)>'], "updated": datetime.now(UTC)}})
    for path in ("/", f"/images/{catalog.id('alpha')}"):
        html = requests.get(service.url + path).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<svg onload" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_revoked_token_ends_its_sessions_and_a_suspended_user_cannot_sign_in(
        service: Service, catalog: Catalog, settings: Settings) -> None:
    admin = open_store(settings, "admin")
    laptop = admin.create_token("alice", "laptop")
    alice = signed_in(service.url, laptop.token)
    assert alice.get(service.url + "/me").status_code == 200
    admin.revoke_token("alice", laptop.id)
    assert alice.get(service.url + "/me").status_code == 401, "the session went with its token"
    short = admin.create_token("alice", "an hour", expires_in=3600)
    brief = signed_in(service.url, short.token)
    with mongo_client(settings.mongo_uri) as client:
        [doc] = [d for d in client[settings.mongo_db]["web_sessions"].find() if d["user"] == "alice"]
    assert abs((doc["expires"] - doc["created"]).total_seconds() - 3600) < 5, "no longer than its token"
    assert brief.get(service.url + "/me").status_code == 200
    admin.suspend("bob")
    refused = requests.post(service.url + "/signin", data={"token": catalog.tokens["bob"]},
                            headers={"Origin": service.url}, allow_redirects=False)
    assert refused.status_code in (401, 403) and "set-cookie" not in refused.headers
    assert "suspended" in refused.text
    odd = signed_in(service.url, catalog.tokens["alice"])
    assert odd.post(f"{service.url}/images/{catalog.id('alpha')}/share", data={"users": "bob", "csrf": "é"},
                    headers={"Origin": service.url}).status_code == 403, "a token that is not ASCII: refused"
    for page in ("²", "0", "99999999"):
        assert odd.get(service.url + "/", params={"page": page}).status_code == 400, page


def test_a_form_too_large_and_a_database_gone_are_pages_on_the_web_and_json_on_the_api(
        rain_env: dict[str, str], catalog: Catalog, tmp_path: Path) -> None:
    """A person gets a page for every refusal, the API's clients the Error JSON, also for the refusals made
    before a route runs: a body over the limit (413) and a database that stopped answering (503)."""
    uri = urlsplit(rain_env["RAIN_MONGO_URI"])
    with Relay(uri.hostname or "127.0.0.1", uri.port or 27017) as gate:
        through = uri._replace(netloc=uri.netloc.rsplit(":", 1)[0] + f":{gate.port}").geturl()
        service = start_service({**rain_env, "RAIN_MONGO_URI": through, "RAIN_TIMEOUT": "2"}, tmp_path / "serve.log")
        try:
            assert "bob-public" in names_on(requests.get(service.url + "/", timeout=30).text)
            for path in ("/signin", "/api/v1/images"):  # declared over the limit: refused before it is read
                conn = http.client.HTTPConnection("127.0.0.1", int(urlsplit(service.url).port or 80), timeout=30)
                conn.putrequest("POST", path)
                conn.putheader("Content-Type", "application/x-www-form-urlencoded")
                conn.putheader("Content-Length", str(8 << 20))
                conn.putheader("Authorization", f"Bearer {catalog.tokens['alice']}")
                conn.endheaders()
                answer = conn.getresponse()
                body = answer.read().decode()
                conn.close()
                assert answer.status == 413, (path, answer.status, body)
                if path == "/signin":
                    assert answer.getheader("Content-Type", "").startswith("text/html"), body
                    assert "<h1>Too large</h1>" in body and "over the limit" in body and "shorten" in body
                else:
                    assert json.loads(body)["error"] == "too_large"
            gate.close()  # the database goes away under the running service
            page = requests.get(service.url + "/", timeout=30)
            assert page.status_code == 503 and page.headers["Content-Type"].startswith("text/html"), page.text
            assert "the repository database failed" in page.text and "try again" in page.text
            api = requests.get(service.url + "/api/v1/images", timeout=30,
                               headers={"Authorization": f"Bearer {catalog.tokens['alice']}"})
            assert api.status_code == 503 and api.json()["error"] == "unreachable", api.text
        finally:
            service.stop()
