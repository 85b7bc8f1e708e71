"""HTTP details of the data URL: 416 with Content-Range, conditional requests, HEAD, If-Range."""

from __future__ import annotations

import pytest
import requests
from support.repository import payload, put, sha

from rain.repository.client import Client
from rain.repository.connect import open_store

pytestmark = pytest.mark.integration
API = "/api/v1"


@pytest.fixture
def image(settings, service):
    """Alice's token, her 300 kB image and its bytes."""
    admin = open_store(settings, "admin")
    admin.add_user("alice")
    token = admin.issue_token("alice")
    data = payload(300_000)
    return token, put(Client(service.url, token), data, "dl"), data


def fetch(service, token: str, image_id: str, method: str = "GET", **headers: str) -> requests.Response:
    return requests.request(method, f"{service.url}{API}/images/{image_id}/data", timeout=30,
                            headers={"Authorization": f"Bearer {token}", **headers})


def accesses(service, token: str, image_id: str) -> int:
    shown = requests.get(f"{service.url}{API}/images/{image_id}", timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    return int(shown.json()["access_count"])


def test_a_range_outside_the_image_is_416_with_content_range_star(service, image):
    token, img, data = image
    response = fetch(service, token, img.id, Range=f"bytes={len(data)}-")
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(data)}"
    assert response.json()["error"] == "invalid_input"


def test_if_none_match_with_the_current_etag_is_304_and_no_download(service, image):
    token, img, data = image
    etag = f'"{sha(data)}"'
    assert fetch(service, token, img.id).headers["ETag"] == etag
    before = accesses(service, token, img.id)

    for header in (etag, f'W/{etag}', f'"other", {etag}', "*"):
        response = fetch(service, token, img.id, **{"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b"" and response.headers["ETag"] == etag
    assert accesses(service, token, img.id) == before  # nothing was downloaded

    stale = fetch(service, token, img.id, **{"If-None-Match": '"0000"'})
    assert stale.status_code == 200 and stale.content == data


def test_head_gives_the_headers_of_a_download_without_the_bytes(service, image):
    token, img, data = image
    before = accesses(service, token, img.id)
    response = fetch(service, token, img.id, "HEAD")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["ETag"] == f'"{sha(data)}"'
    assert response.headers["Accept-Ranges"] == "bytes"
    assert accesses(service, token, img.id) == before
    assert fetch(service, token, "0123456789ab", "HEAD").status_code == 404


def test_range_with_if_range_resumes_only_the_same_content(service, image):
    token, img, data = image
    etag = f'"{sha(data)}"'
    same = fetch(service, token, img.id, Range="bytes=100-199", **{"If-Range": etag})
    assert same.status_code == 206 and same.content == data[100:200]
    changed = fetch(service, token, img.id, Range="bytes=100-199", **{"If-Range": '"0000"'})
    assert changed.status_code == 200 and changed.content == data
    assert "Content-Range" not in changed.headers
