"""The web catalog in a real browser: Debian's chromium, driven by Playwright, against the real
`fg-image serve` on 127.0.0.1 with the embedded repository (issue #15, acceptance 1, 3, 4, 5 and 6).

Screenshots of the catalog and the admin page go into the test output directory (support/browser.py);
the image page's is taken by tests/e2e/register/test_register_debian_e2e.py, on a generated image."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect
from support.browser import screenshot
from support.mongo import mongo_client
from support.service import Service
from support.web import Catalog, add_many

from rain.config import Settings
from rain.repository.connect import open_store

pytestmark = [pytest.mark.integration]


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(url + "/signin")
    page.get_by_label("Repository token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "/")


def listed(page: Page) -> set[str]:
    return set(page.locator("#catalog a.image-link").all_inner_texts())


def test_alice_signs_in_and_sees_her_shared_and_public_images_filters_narrow_them_and_pages_turn(
        service: Service, catalog: Catalog, settings: Settings, page: Page) -> None:
    sign_in(page, service.url, catalog.tokens["alice"])
    expect(page.locator("#signed-in-as")).to_have_text("alice")
    assert listed(page) == {"alpha", "alice-private", "alice-shares", "bob-public", "bob-shares"}
    assert "bob-secret" not in page.content(), "nor in the page's source"
    screenshot(page, "catalog")
    # typing narrows the rows at once (script), Enter asks the server (the whole catalog)
    page.locator("#search").fill("shares")
    expect(page.locator("#catalog tbody tr:visible")).to_have_count(2)
    page.locator("#search").press("Enter")
    expect(page).to_have_url(f"{service.url}/?search=shares&os_family=&release=&arch=&tag=&owner=&visibility="
                             "&verdict=&registered=&sort=-created")
    assert listed(page) == {"alice-shares", "bob-shares"}
    page.get_by_role("link", name="clear").click()
    page.get_by_label("OS family").fill("rocky")
    page.get_by_label("visibility").select_option("public")
    page.get_by_role("button", name="Filter").click()
    assert listed(page) == {"bob-public"}
    # 55 more of hers: the catalog pages through them, 50 a page
    add_many(settings)
    page.goto(service.url + "/?tag=many")
    expect(page.locator("#catalog tbody tr")).to_have_count(50)
    page.get_by_role("link", name="next →").click()
    assert listed(page) == {f"many-{n:02d}" for n in range(5)}, "the oldest five on page 2"
    page.get_by_role("link", name="← previous").click()
    expect(page.locator("#catalog tbody tr")).to_have_count(50)
    assert page.dialogs == [] and page.console_errors == []


def test_alice_shares_with_bob_through_the_page_and_unshares(
        service: Service, catalog: Catalog, page: Page, new_page) -> None:
    sign_in(page, service.url, catalog.tokens["alice"])
    page.goto(f"{service.url}/images/{catalog.id('alice-private')}")
    page.get_by_label("Share with").fill("bob")
    page.get_by_role("button", name="Share", exact=True).click()
    expect(page.locator("#shared-with")).to_have_text("bob")
    expect(page.get_by_role("status")).to_have_text("shared with bob")
    bob = new_page()
    sign_in(bob, service.url, catalog.tokens["bob"])
    assert "alice-private" in listed(bob)
    bob.get_by_role("link", name="alice-private").click()
    expect(bob.locator("#image-name")).to_have_text("alice-private")
    expect(bob.locator("#owner")).to_have_count(0)  # bob reads it; its forms are the owner's
    page.get_by_role("button", name="Stop sharing with bob").click()
    expect(page.locator("#shared-with")).to_have_text("-")
    bob.goto(service.url + "/")
    assert "alice-private" not in listed(bob)
    bob.goto(f"{service.url}/images/{catalog.id('alice-private')}")
    expect(bob.locator("h1")).to_have_text("Not found")


class _Evil(BaseHTTPRequestHandler):
    """A page on another origin whose form posts to the catalog as soon as it loads."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = (f'<form id="f" method="post" action="{self.target}"><input name="users" value="mallory">'
                '<input name="public" value="1"></form><script>document.getElementById("f").submit()</script>')
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def evil_site() -> Iterator[tuple[str, type[_Evil]]]:
    handler = type("Evil", (_Evil,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_hostile_text_shows_as_text_and_a_form_from_another_origin_changes_nothing(
        service: Service, catalog: Catalog, settings: Settings, page: Page, evil_site) -> None:

    script = "<script>alert(1)</script>"
    with mongo_client(settings.mongo_uri) as client:  # the API refuses such a name: a record holds it
        client[settings.mongo_db]["images"].update_one({"_id": catalog.id("alpha")}, {"$set": {"name": script}})
    owner = open_store(settings, "alice")
    from rain.repository.models import ImageChanges

    owner.modify(catalog.id("alpha"), ImageChanges(description='<img src=x onerror="alert(2)"><b>bold</b>'))
    sign_in(page, service.url, catalog.tokens["alice"])
    expect(page.locator("#catalog a.image-link").filter(has_text=script)).to_have_count(1)
    page.goto(f"{service.url}/images/{catalog.id('alpha')}")
    expect(page.locator("#image-name")).to_have_text(script)
    expect(page.locator("#description")).to_have_text('<img src=x onerror="alert(2)"><b>bold</b>')
    assert page.locator("#description b, #description img").count() == 0
    assert page.dialogs == [], "no script ran"

    # a signed-in alice visits another site whose form posts to her image: refused, nothing changes
    url, handler = evil_site
    for action in ("share", "visibility"):
        handler.target = f"{service.url}/images/{catalog.id('alice-private')}/{action}"
        page.goto(url + "/")
        page.wait_for_url(handler.target)
        assert page.locator("h1").inner_text() in ("Not allowed", "Sign in first"), page.content()
    record = owner.show(catalog.id("alice-private"))
    assert record.shared_with == [] and record.visibility == "private", "nothing changed"
    assert page.dialogs == []


def test_visitors_see_public_images_users_no_admin_page_and_sign_out_ends_the_session(
        service: Service, catalog: Catalog, page: Page, new_page) -> None:
    page.goto(service.url + "/")
    assert listed(page) == {"alpha", "bob-public"}
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()

    sign_in(page, service.url, catalog.tokens["alice"])
    answer = page.goto(service.url + "/admin")
    assert answer is not None and answer.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    [cookie] = page.context.cookies(service.url)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == "", "no script reads the session"
    page.goto(service.url + "/me")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    # the old cookie, put back into another browser, opens nothing
    thief = new_page()
    thief.context.add_cookies([cookie])
    answer = thief.goto(service.url + "/me")
    assert answer is not None and answer.status == 401

    admin = new_page()
    sign_in(admin, service.url, catalog.tokens["admin"])
    admin.get_by_role("link", name="Admin").click()
    expect(admin.locator("#users")).to_contain_text("alice")
    admin.get_by_label("quota of bob").fill("3G")
    admin.locator("form.user-form").filter(has=admin.get_by_label("quota of bob")).get_by_role(
        "button", name="Save").click()
    expect(admin.get_by_role("status")).to_have_text("saved bob")
    assert open_store_quota(service, catalog, "bob") == 3 << 30
    screenshot(admin, "admin")
    assert admin.console_errors == []
    assert [e for e in page.console_errors if "403 (Forbidden)" not in e] == [], "only the refusal asked for"


def open_store_quota(service: Service, catalog: Catalog, name: str) -> int | None:
    import requests

    users = requests.get(service.url + "/api/v1/users",
                         headers={"Authorization": f"Bearer {catalog.tokens['admin']}"}).json()
    return next(u["quota_bytes"] for u in users if u["name"] == name)
