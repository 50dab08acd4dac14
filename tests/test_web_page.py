"""The rep's page in a real headless Chromium against the real server: a finished call's
transcript, cue cards, lead score and summary render from the events socket.

Playwright drives Debian's Chromium (never a downloaded browser) and waits for the page's own
state line, so the assertions run when the page says the call has ended, not after a guessed
delay: a slow machine makes the test slower, not flaky.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # an upper bound for a loaded machine; the test passes as soon as the page is done
SCRIPT = (
    Turn("rep", "Thanks for taking my call today.", rate_wpm=140),
    Turn("customer", "Honestly, the price is way too high for us."),
    Turn("rep", "I understand, most teams see the cost come back quickly.", rate_wpm=140),
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: apt-get install -y chromium (make test does it)"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser: Browser, url: str) -> Page:
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(url)
    return page


async def test_page_shows_transcript_cards_score_and_summary(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    path = tmp_path / "call.wav"
    render(SCRIPT).write(path)
    opts = SimOptions(server=server.ws, token=server.token, speed=0, call_id="page-call")
    result = await simulate(path, opts)
    cards = [e for e in result.events if e["type"] == "card" and e["state"] == "issued"]
    assert any(c["kind"] == "objection_price" for c in cards)

    page = await open_page(browser, f"{server.http}/#token={server.token}&call=page-call")
    await expect(page.locator("#state")).to_have_text(
        re.compile(r"^ended: .*\(closed 1000 call ended\)")
    )
    await expect(page.locator("pre")).to_have_text(re.compile(r"^A 0:\d\d call"))  # the overview
    dom = await page.content()

    for speaker in ("rep", "customer"):
        assert re.search(rf'class="line {speaker} "><b>{speaker}</b> \[\d+\.\d+s\] \w', dom)
    assert "too high" in dom
    for c in cards:
        assert f'id="card-{c["card_id"]}"' in dom
    assert re.search(r"<h3>Price objection <small>issued</small></h3>", dom)
    assert re.search(r'id="score">\d+</span>', dom)


async def test_page_without_the_token_shows_the_refusal(
    server: ServerProcess, browser: Browser
) -> None:
    page = await open_page(browser, f"{server.http}/#call=page-call")
    await expect(page.locator("#state")).to_have_text(
        re.compile(r"closed 1008 missing or wrong token")
    )
    assert 'class="line' not in await page.content()
