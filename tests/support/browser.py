"""A real browser for the web tests: Debian's chromium, driven by Playwright (sync API).

Playwright drives the system chromium by its executable path; its own browser download
is never used (nor reachable here), and nothing in the tests runs `playwright install`.

Fixtures (tests/conftest.py imports them, once for the whole suite: a session fixture imported
by two conftests would be two fixtures, and a second Playwright in one session fails):

- `browser` (session): ONE headless chromium for the whole session.
- `page`: a page in a fresh browser context (its own cookies and storage), closed after the test.
- `context`: that page's context (`page.context`), for cookies, storage or routes.
- `new_page`: `new_page(**context_options)` → a page in ANOTHER new context, e.g. a second
  user signed in beside the first; all are closed after the test.

Every page these give has a default timeout of 15 s (actions, navigation and `expect`), and
- `page.dialogs`: the JavaScript dialogs (alert/confirm/prompt/beforeunload) it raised, as
  `Dialog(type, message)`, each dismissed at once;
- `page.console_errors`: console messages of type "error" (a failed load with its URL; chromium's
  own /favicon.ico request left out), and uncaught exceptions ("uncaught: ...").

`screenshot(page, name)` writes `name.png` (full page) into `$RAIN_TEST_OUTPUT/<test>/` if that
variable is set, else into `<pytest basetemp>/screenshots/<test>/`, and returns its path. A passing
run removes basetemp (`tmp_path_retention_policy = "failed"`): set RAIN_TEST_OUTPUT to keep them.

Without fixtures: `with browser_page(out_dir) as page:` launches its own chromium (or uses
`browser=`) and gives a page prepared the same way, screenshots going to `out_dir`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# --no-sandbox: chromium refuses to start as root with its sandbox (tests run as root in CI containers).
# --disable-dev-shm-usage: containers' /dev/shm is small; chromium crashes when it fills.
# --disable-gpu: no GPU here; spares the GPU process's software fallback.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
DEFAULT_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Dialog:
    type: str  # "alert", "confirm", "prompt" or "beforeunload"
    message: str


def chromium_path() -> str:
    """The system chromium; CI fails (never skips) when it is missing."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        raise AssertionError(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)")
    return str(CHROMIUM)


def launch(playwright: Playwright) -> Browser:
    """Headless system chromium; never a downloaded one."""
    expect.set_options(timeout=DEFAULT_TIMEOUT_MS)  # `expect(...)` waits 5 s by default
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=LAUNCH_ARGS)


def screenshot_root(default: Path) -> Path:
    """$RAIN_TEST_OUTPUT if set, else `default`."""
    env = os.environ.get("RAIN_TEST_OUTPUT")
    return Path(env) if env else default


def prepare_page(page: Page, screenshot_dir: Path) -> Page:
    """Timeouts, dialogs recorded and dismissed, console errors recorded, where screenshots go."""
    page.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
    dialogs: list[Dialog] = []
    console_errors: list[str] = []
    page.dialogs = dialogs  # type: ignore[attr-defined]
    page.console_errors = console_errors  # type: ignore[attr-defined]
    page.screenshot_dir = screenshot_dir  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        dialogs.append(Dialog(dialog.type, dialog.message))
        dialog.dismiss()

    page.on("dialog", on_dialog)
    def on_console(msg: Any) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if msg.text.startswith("Failed to load resource"):
            if url.endswith("/favicon.ico"):  # chromium asks for it by itself, at a racy moment
                return
            console_errors.append(f"{msg.text}: {url}")  # the bare message does not name the resource
        else:
            console_errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: console_errors.append(f"uncaught: {exc}"))
    return page


def screenshot(page: Page, name: str) -> Path:
    """Write `name`.png (full page) into the page's screenshot directory; return its path."""
    directory: Path = getattr(page, "screenshot_dir", None) or screenshot_root(Path.cwd() / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_safe(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "screenshot"


@contextmanager
def browser_page(out_dir: Path | None = None, *, browser: Browser | None = None,
                 **context_options: Any) -> Iterator[Page]:
    """A prepared page in a new context: of `browser`, or of a chromium launched for this block."""
    shots = screenshot_root(out_dir if out_dir is not None else Path.cwd() / "screenshots")
    if browser is not None:
        ctx = browser.new_context(**context_options)
        try:
            yield prepare_page(ctx.new_page(), shots)
        finally:
            ctx.close()
        return
    with sync_playwright() as pw:
        own = launch(pw)
        try:
            ctx = own.new_context(**context_options)
            yield prepare_page(ctx.new_page(), shots)
        finally:
            own.close()


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = launch(pw)
        yield chromium
        chromium.close()


def _test_screenshots(request: pytest.FixtureRequest) -> Path:
    """$RAIN_TEST_OUTPUT or <basetemp>/screenshots, then a directory for the test."""
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    base = screenshot_root(factory.getbasetemp() / "screenshots")
    return base / _safe(request.node.name)


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    ctx = browser.new_context()
    yield prepare_page(ctx.new_page(), _test_screenshots(request))
    ctx.close()


@pytest.fixture
def context(page: Page) -> BrowserContext:
    """The context of `page` (its cookies, storage, routes)."""
    return page.context


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """new_page(**context_options) → a prepared page in a new context (separate cookies)."""
    contexts: list[BrowserContext] = []

    def make(**context_options: Any) -> Page:
        ctx = browser.new_context(**context_options)
        contexts.append(ctx)
        return prepare_page(ctx.new_page(), _test_screenshots(request))

    yield make
    for ctx in contexts:
        ctx.close()
