"""The page at / in headless Chromium (Debian's chromium, driven by Playwright): type a prime, press
Generate, watch the text grow while it streams, press Stop; at 375 px and at desktop width, with no
request leaving the server. Under CI=true a missing browser fails instead of skipping.

CHARRNN_SCREENSHOTS=DIR keeps the screenshots (page-375.png, page-1280.png) there to look at."""
import os
import shutil
import time
from pathlib import Path

import pytest
from support.serve import Server, write_checkpoint

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _need_browser():
    missing = "playwright is not installed" if not _has_playwright() else \
        None if Path(CHROMIUM).exists() else "Debian's chromium is not installed (apt-get install chromium)"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(missing + ": CI must run the page tests")
    if missing:
        pytest.skip(missing)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """A server slowed to about 25 characters a second per stream, so streaming is visible."""
    ckpt = write_checkpoint(tmp_path_factory.mktemp("page") / "shakespeare" / "best.npz")
    with Server(ckpt, slow=(0.04, 1)) as s:
        yield s


def _browser(p, profile: Path, width: int):
    return p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                viewport={"width": width, "height": 800})


@pytest.mark.parametrize("width", [375, 1280])
def test_page_streams_text_and_stops(slow_server, tmp_path, width):
    _need_browser()
    from playwright.sync_api import sync_playwright
    shots = Path(os.environ.get("CHARRNN_SCREENSHOTS") or tmp_path)
    with sync_playwright() as p:
        ctx = _browser(p, tmp_path / "profile", width)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            elsewhere = []
            page.on("request", lambda r: None if r.url.startswith(slow_server.url) else elsewhere.append(r.url))
            page.goto(slow_server.url + "/")
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            assert page.input_value("#model") == "shakespeare"
            page.fill("#prime", "the quick ")
            page.fill("#length", "400")
            page.fill("#seed", "42")
            page.click("#go")
            page.wait_for_function("document.querySelector('#text').textContent.length >= 5", timeout=30000)
            sizes = []
            for _ in range(6):  # the text grows while the request runs: it is shown as it comes
                sizes.append(len(page.text_content("#text")))
                time.sleep(0.25)
            assert sizes == sorted(sizes) and sizes[-1] > sizes[0] and sizes[-1] < 400, sizes
            assert page.text_content("#echo") == "the quick "
            page.screenshot(path=str(shots / f"page-{width}.png"), full_page=True)
            page.click("#stop")
            page.wait_for_function("document.querySelector('#info').textContent.startsWith('stopped')")
            stopped = len(page.text_content("#text"))
            time.sleep(0.5)
            assert len(page.text_content("#text")) == stopped < 400
            assert page.is_enabled("#go") and not page.is_enabled("#stop")
            # no sideways scrolling at any width; nothing asked of any other host
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert not elsewhere
            # a bad value comes back as the server's one-line message
            page.fill("#prime", "\u00e9t\u00e9")
            page.click("#go")
            page.wait_for_selector("#error:not([hidden])")
            assert "does not know" in page.text_content("#error")
        finally:
            ctx.close()
