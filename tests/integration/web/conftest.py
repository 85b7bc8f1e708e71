"""Web catalog fixtures: a real chromium (one per session, a fresh context per test) against
`fg-image serve`, and a repository seeded with alice's, bob's and public images."""

import pytest
from support.browser import browser, context, new_page, page  # noqa: F401
from support.web import Catalog, seed


@pytest.fixture
def catalog(settings) -> Catalog:
    return seed(settings)
