"""The README and the guides link only to files inside the repository, and every such link resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _local_links(page: Path) -> list[str]:
    return [target.split("#")[0] for target in LINK.findall(page.read_text())
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def test_every_local_link_in_the_docs_points_at_a_file_in_the_repository() -> None:
    for page in PAGES:
        for target in _local_links(page):
            path = (page.parent / target).resolve()
            assert path.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
            assert path.exists(), f"{page.name} links to a missing file: {target}"


def test_the_readme_leads_developers_to_the_architecture_page() -> None:
    assert "docs/architecture.md" in _local_links(ROOT / "README.md")
    assert "DESIGN.md" not in (ROOT / "README.md").read_text()


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_anchor_a_doc_links_to_is_a_heading_of_that_page() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if "#" not in target or re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            assert anchor in _anchors(linked), f"{page.name} links to a missing heading: {target}"
