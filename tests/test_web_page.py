"""The rep's page in a real headless Chromium against the real server: a finished call's
transcript, cards, score and summary; a live espeak-ng call with its charts, Used/Dismiss and
Esc reaching the server, scroll-back and the narrow layout; a server killed and restarted
mid-call; the events socket's ``after_seq`` resume.

Playwright drives Debian's Chromium (``tests/chromium.py``) and waits for what the page says,
never for a guessed delay: a slow machine makes a test slower, not flaky. No assertion names
the words Whisper heard, beyond the one the finished-call test has always checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from playwright.async_api import Browser, Page, expect

from clients.callgen import Turn, render
from clients.simulator import SimOptions, SimResult, simulate
from guidance.playbook import ALERT_KINDS
from tests.chromium import NARROW, browser, low_contrast, open_page, screenshot
from tests.conftest import REPO, ServerProcess, start_server, stop_server

__all__ = ["browser"]  # the fixture
pytestmark = [pytest.mark.model, pytest.mark.slow]

SCRIPT = (
    Turn("rep", "Thanks for taking my call today.", rate_wpm=140),
    Turn("customer", "Honestly, the price is way too high for us."),
    Turn("rep", "I understand, most teams see the cost come back quickly.", rate_wpm=140),
)
LIVE_SCRIPT = (  # cards here: a price and an authority objection, then a next step
    Turn("rep", "Hi Dana, thanks for taking my call today.", rate_wpm=140),
    Turn("customer", "Sure. Honestly, the price is way too high for us."),
    Turn("rep", "I understand, most teams see the cost come back within a quarter.", rate_wpm=140),
    Turn("customer", "We would also have to run it by our legal team first."),
    Turn("rep", "That makes sense. Who else should be part of that conversation?", rate_wpm=140),
    Turn("customer", "Our head of IT, and probably the finance director."),
    Turn("rep", "Great. Could we set up a call with them next Tuesday?", rate_wpm=140),
    Turn("customer", "Yes, please send me a calendar invite for Tuesday."),
    Turn("rep", "I will send the invite and the proposal by Friday.", rate_wpm=140),
    Turn("customer", "Sounds good, thank you."),
)
FINAL = "#transcript .line.final"
OPEN_CARD = "#cards .card"


def page_url(server: ServerProcess, call_id: str) -> str:
    return f"{server.http}/#token={server.token}&call={call_id}"


async def stored_call(server: ServerProcess, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {server.token}"}) as client:
        res = await client.get(f"{server.http}/v1/calls/{call_id}")
        res.raise_for_status()
        data: dict[str, Any] = res.json()
        return data


async def final_seqs(page: Page) -> list[str]:
    seqs: list[str] = await page.locator(FINAL).evaluate_all("els => els.map(e => e.dataset.seq)")
    return seqs


def live_call(server: ServerProcess, path: Path, call_id: str) -> asyncio.Task[SimResult]:
    opts = SimOptions(server=server.ws, token=server.token, speed=1.0, call_id=call_id)
    return asyncio.create_task(simulate(path, opts))


async def cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def test_alert_kinds_on_the_page_are_the_playbooks() -> None:
    """The page tells alerts from cue cards by the playbook's alert kinds, all of them."""
    source = (REPO / "clients/web/common.js").read_text()
    listed = re.search(r"ALERT_KINDS = new Set\(\[(.*?)\]\)", source, re.S)
    assert listed is not None
    assert set(re.findall(r'"(\w+)"', listed.group(1))) == set(ALERT_KINDS)


async def test_page_shows_transcript_cards_score_and_summary(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    """A finished call replays whole: both sides' lines, every card, the score, the summary."""
    path = tmp_path / "call.wav"
    render(SCRIPT).write(path)
    opts = SimOptions(server=server.ws, token=server.token, speed=0, call_id="page-call")
    result = await simulate(path, opts)
    cards = [e for e in result.events if e["type"] == "card" and e["state"] == "issued"]
    assert any(c["kind"] == "objection_price" for c in cards)
    finals = [e for e in result.events if e["type"] == "transcript" and e["is_final"]]

    watched = await open_page(browser, page_url(server, "page-call"))
    page = watched.page
    await expect(page.locator("#state")).to_have_text(re.compile(r"^ended: "))
    await expect(page.locator("#conn")).to_have_text(re.compile(r"closed 1000 call ended"))
    await expect(page.locator("#summary .overview")).to_have_text(re.compile(r"^A 0:\d\d call"))
    for speaker, label in (("rep", "Rep"), ("customer", "Customer")):
        line = page.locator(f"{FINAL}.{speaker}").first
        await expect(line.locator(".who")).to_have_text(label)
        await expect(line.locator(".at")).to_have_text(re.compile(r"^\d+:\d\d$"))
        await expect(line.locator(".text")).to_have_text(re.compile(r"\w"))
    await expect(page.locator("#transcript")).to_contain_text("too high")
    await expect(page.locator(FINAL)).to_have_count(len(finals))
    for c in cards:
        await expect(page.locator(f"#card-{c['card_id']}")).to_have_count(1)
    price = page.locator('.card[data-kind="objection_price"]')
    await expect(price.locator("h3")).to_have_text("Price objection")
    await expect(price.locator(".tag").last).to_have_text("issued")  # no action taken
    await expect(page.locator("#score")).to_have_text(re.compile(r"^\d+$"))
    watched.assert_clean()


async def test_page_without_the_token_shows_the_refusal(
    server: ServerProcess, browser: Browser
) -> None:
    """A page opened without the token says it was refused and shows nothing of the call."""
    watched = await open_page(browser, f"{server.http}/#call=page-call")
    page = watched.page
    await expect(page.locator("#conn")).to_have_text(re.compile(r"closed 1008 missing token"))
    await expect(page.locator("#conn")).to_have_attribute("data-kind", "refused")
    assert await page.locator(".line").count() == 0


async def test_page_during_a_live_call(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    """Mid-call: both sides, cards with talk track and evidence, score trend, talk ratio, pace
    and sentiment; scroll-back is kept; 400 px stacks cards first; Dismiss and Esc reach the
    server; text passes WCAG AA contrast; nothing comes from another host."""
    path = tmp_path / "live.wav"
    render(LIVE_SCRIPT).write(path)
    wide = await open_page(browser, page_url(server, "live-page"))  # before the call starts
    narrow = await open_page(browser, page_url(server, "live-page"), NARROW)
    stream = live_call(server, path, "live-page")
    try:
        page = wide.page
        await shows_the_call(page)
        await expect(page.locator(OPEN_CARD).nth(1)).to_be_attached()  # a fuller screen
        await screenshot(page, tmp_path, "rep-wide.png")
        await screenshot(narrow.page, tmp_path, "rep-narrow.png")
        assert await low_contrast(page) == []
        assert await low_contrast(narrow.page) == []
        await stacks_when_narrow(narrow.page)
        dismissed = await dismiss_two(page)
        await scroll_back_is_kept(page)
        await stream
    finally:
        await cancelled(stream)
    await expect(page.locator("#summary")).to_be_visible()
    await expect(page.locator("#summary h3").first).to_have_text("Action items")
    assert await low_contrast(page) == []  # the summary and the cards of the ended call
    assert await final_seqs(page) == await final_seqs(narrow.page)  # both saw every line once
    cards = (await stored_call(server, "live-page"))["cards"]
    states = {c["card_id"]: c["state"] for c in cards}  # the last stored state of each
    assert all(states[card_id] == "dismissed" for card_id in dismissed), states
    wide.assert_clean()
    narrow.assert_clean()


async def shows_the_call(page: Page) -> None:
    await expect(page.locator("#conn")).to_have_text("connected")
    for speaker in ("rep", "customer"):
        await expect(page.locator(f"{FINAL}.{speaker}").first).to_be_visible()
    card = page.locator(OPEN_CARD, has=page.locator("blockquote")).first
    await expect(card.locator("h3")).to_have_text(re.compile(r"\w"))
    await expect(card.locator(".track li").first).to_have_text(re.compile(r"\w"))  # talk track
    await expect(card.locator("blockquote")).to_contain_text("Customer")  # evidence, speaker
    await expect(card.locator(".tag").first).to_have_text(re.compile(r"^(Card|Alert)$"))
    await expect(page.locator("#announce")).to_have_text(re.compile(r"^New (card|alert): \w"))
    await expect(page.locator("#score")).to_have_text(re.compile(r"^\d+$"))
    await expect(page.locator("#score-trend svg circle").first).to_be_attached()
    talk = page.locator("#talk .value")
    await expect(talk).to_have_text(re.compile(r"^Rep \d+ % · Customer \d+ %$"))
    await expect(page.locator("#talk svg")).to_have_attribute("aria-label", re.compile(r"\d+ %"))
    await expect(page.locator("#pace .value")).to_have_text(re.compile(r"^\d+ words/min$"))
    sentiment = re.compile(r"^(positive|neutral|negative) \([+−]\d\.\d\d\)$")
    await expect(page.locator("#sentiment .value")).to_have_text(sentiment)
    await expect(page.locator("#timer")).not_to_have_text("0:00")


async def stacks_when_narrow(page: Page) -> None:
    """At 400 px: one column, cards above the score above the transcript, nothing wider."""
    boxes = {}
    for sel in ("#cards-pane", "#metrics", "#transcript"):
        box = await page.locator(sel).bounding_box()
        assert box is not None, sel
        boxes[sel] = box
    assert boxes["#cards-pane"]["y"] < boxes["#metrics"]["y"] < boxes["#transcript"]["y"]
    for sel, box in boxes.items():
        assert box["x"] < 40 and box["width"] > 300, (sel, box)  # full width, not squeezed
    assert await page.evaluate("document.documentElement.scrollWidth") <= 400


async def scroll_back_is_kept(page: Page) -> None:
    """A rep who scrolls back stays there while lines arrive, and is offered a way down."""
    await page.set_viewport_size({"width": 1280, "height": 230})
    box = page.locator("#transcript")
    await expect(page.locator(FINAL).nth(5)).to_be_attached()
    await box.evaluate("b => { b.scrollTop = 0; }")
    lines = await page.locator("#transcript .line").count()
    await expect(page.locator("#transcript .line").nth(lines)).to_be_attached()
    assert await box.evaluate("b => b.scrollTop") == 0
    await expect(page.locator("#jump")).to_be_visible()
    await page.locator("#jump").click()
    await expect(page.locator("#jump")).to_be_hidden()
    assert await box.evaluate("b => b.scrollHeight - b.scrollTop - b.clientHeight") < 40
    await page.set_viewport_size({"width": 1280, "height": 800})


async def dismiss_two(page: Page) -> list[str]:
    """Dismiss one card by its button, then the top one by Esc; returns their ids. Only cards
    the server has stored (not provisional), so that their dismissal is stored too."""
    stored = f"{OPEN_CARD}:not(.provisional)"
    await expect(page.locator(stored).nth(1)).to_be_attached()
    first = page.locator(stored).last
    first_id = (await first.get_attribute("id") or "").removeprefix("card-")
    await first.get_by_role("button", name="Dismiss").click()
    await expect(page.locator(f"#past-cards #card-{first_id} .tag").last).to_have_text("dismissed")
    top = page.locator("#cards .card:first-child:not(.provisional)")
    top_id = (await top.get_attribute("id") or "").removeprefix("card-")
    await page.keyboard.press("Escape")
    await expect(page.locator(f"#past-cards #card-{top_id} .tag").last).to_have_text("dismissed")
    return [first_id, top_id]


async def test_page_reconnects_after_a_server_restart(browser: Browser, tmp_path: Path) -> None:
    """Killed mid-call and restarted on the same data: the page reconnects by itself, resumes
    after its last event, and ends with every stored line exactly once and the summary."""
    path = tmp_path / "live.wav"
    render(LIVE_SCRIPT).write(path)
    srv = start_server(tmp_path / "data")
    restarted: ServerProcess | None = None
    try:
        watched = await open_page(browser, page_url(srv, "restart-call"))
        page = watched.page
        stream = live_call(srv, path, "restart-call")
        await expect(page.locator(FINAL).nth(2)).to_be_attached()
        srv.proc.kill()
        srv.proc.wait()
        await cancelled(stream)
        await expect(page.locator("#conn")).to_have_attribute("data-kind", "down")
        before = await final_seqs(page)
        restarted = start_server(tmp_path / "data", CUECARD_PORT=str(srv.port))
        await expect(page.locator("#state")).to_have_text(re.compile(r"^interrupted: "))
        await expect(page.locator("#conn")).to_have_attribute("data-kind", "over")
        await expect(page.locator("#summary .overview")).to_have_text(re.compile(r"\w"))
        after = await final_seqs(page)
        stored = (await stored_call(restarted, "restart-call"))["transcript"]
        assert sorted(map(int, after)) == [t["seq"] for t in stored]  # each once, none missing
        assert set(before) <= set(after)
        watched.assert_clean()
    finally:
        if srv.proc.poll() is None:
            stop_server(srv)
        if restarted is not None:
            stop_server(restarted)


async def events_after(server: ServerProcess, call_id: str, query: str) -> tuple[list[int], int]:
    url = f"{server.ws}/v1/calls/{call_id}/events?{query}"
    seqs: list[int] = []
    async with websockets.connect(url, additional_headers=server.auth) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                seqs.append(json.loads(message)["seq"])
    assert ws.close_code is not None
    return seqs, ws.close_code


async def test_events_socket_resumes_after_seq(server: ServerProcess, tmp_path: Path) -> None:
    """?after_seq=N sends the stored events after N only; a malformed N is refused (1008)."""
    path = tmp_path / "call.wav"
    render(SCRIPT).write(path)
    opts = SimOptions(server=server.ws, token=server.token, speed=0, call_id="resume-call")
    await simulate(path, opts)
    every, code = await events_after(server, "resume-call", "after_seq=0")
    assert code == 1000 and every == list(range(1, len(every) + 1)) and len(every) > 4
    tail, code = await events_after(server, "resume-call", f"after_seq={every[3]}")
    assert code == 1000 and tail == every[4:]
    assert (await events_after(server, "resume-call", f"after_seq={every[-1]}")) == ([], 1000)
    for bad in ("-1", "x", "1.5"):
        assert (await events_after(server, "resume-call", f"after_seq={bad}")) == ([], 1008)
