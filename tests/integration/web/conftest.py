"""Web catalog fixtures: a repository seeded with alice's, bob's and public images. The browser
fixtures (one chromium per session, a fresh context per test) are tests/conftest.py's."""

import pytest
from support.web import Catalog, seed


@pytest.fixture
def catalog(settings) -> Catalog:
    return seed(settings)
