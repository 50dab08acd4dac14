"""The rep's page in a real headless Chromium against the real server: a finished call's
transcript, cue cards, lead score and summary render from the events socket."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.slow]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",  # let the page's socket replay the call before the dump
    "--dump-dom",
)
SCRIPT = (
    Turn("rep", "Thanks for taking my call today.", rate_wpm=140),
    Turn("customer", "Honestly, the price is way too high for us."),
    Turn("rep", "I understand, most teams see the cost come back quickly.", rate_wpm=140),
)


def rendered_page(url: str) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: apt-get install -y chromium (make test does it)"
    out = subprocess.run([exe, *CHROMIUM_FLAGS, url], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


async def test_page_shows_transcript_cards_score_and_summary(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "call.wav"
    render(SCRIPT).write(path)
    opts = SimOptions(server=server.ws, token=server.token, speed=0, call_id="page-call")
    result = await simulate(path, opts)
    cards = [e for e in result.events if e["type"] == "card" and e["state"] == "issued"]
    assert any(c["kind"] == "objection_price" for c in cards)

    url = f"{server.http}/#token={server.token}&call=page-call"
    dom = await asyncio.get_running_loop().run_in_executor(None, rendered_page, url)

    assert re.search(r'id="state">ended: [^<]*\(closed 1000 call ended\)', dom), dom[:2000]
    for speaker in ("rep", "customer"):
        assert re.search(rf'class="line {speaker} "><b>{speaker}</b> \[\d+\.\d+s\] \w', dom)
    assert "too high" in dom
    for c in cards:
        assert f'id="card-{c["card_id"]}"' in dom
    assert re.search(r"<h3>Price objection <small>issued</small></h3>", dom)
    assert re.search(r'id="score">\d+</span>', dom)
    assert re.search(r"<pre>A 0:\d\d call", dom)  # the summary's overview


async def test_page_without_the_token_shows_the_refusal(server: ServerProcess) -> None:
    dom = await asyncio.get_running_loop().run_in_executor(
        None, rendered_page, f"{server.http}/#call=page-call"
    )
    assert re.search(r'id="state">[^<]*closed 1008 missing or wrong token', dom), dom[:2000]
    assert 'class="line' not in dom
