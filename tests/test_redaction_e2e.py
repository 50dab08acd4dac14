"""Redaction through the real server: a customer dictating a card number in a live call, with
whatever the recognizer makes of it, never shows or stores the number (partials included);
nor a number read out in groups with pauses, which the segmenter cuts into several finals."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from audio.chunk import SAMPLE_RATE_HZ
from bench.realspeech import ROOT
from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from tests.conftest import ServerProcess
from tests.test_redaction import longest_number_run

pytestmark = [pytest.mark.model, pytest.mark.slow]

CARD = "four five five six, seven three seven five, eight six eight nine, nine five three three"
DICTATION = (
    Turn("rep", "Great. What card would you like to put this on?", rate_wpm=140),
    Turn("customer", f"Sure. My card number is {CARD}.", rate_wpm=150),
    Turn("rep", "Thanks. And a phone number for the receipt?", rate_wpm=140),
    Turn("customer", "You can reach me on four one five, five five five, two six seven one."),
)


def texts(event: dict[str, Any]) -> list[str]:
    """Every piece of text of an event a viewer could read."""
    out = [str(event.get("text", ""))]
    out += [str(w["text"]) for w in event.get("words") or []]
    out.append("".join(str(w["text"]) for w in event.get("words") or []))
    if event.get("evidence"):
        out.append(str(event["evidence"]["quote"]))
    return out


def assert_nothing_leaks(server: ServerProcess, path: Path, telephone: bool) -> None:
    """Streams ``path`` (left rep, right customer) at 1.0x; no transcript (partial or final),
    insight or card received, and nothing stored, holds four or more digits in a row, and
    a placeholder stands in some customer final."""
    if telephone:
        phone = path.with_name(f"{path.stem}-8k.wav")
        subprocess.run(["sox", str(path), "-r", "8000", "-e", "mu-law", str(phone)], check=True)
        path = phone
    options = SimOptions(server=server.ws, token=server.token, speed=1.0, twilio=telephone)
    result = asyncio.run(simulate(path, options))
    customer = [e for e in result.events if e.get("speaker") == "customer"]
    assert any(e["type"] == "transcript" and e["is_final"] for e in customer), result.events
    assert any(e["type"] == "transcript" and not e["is_final"] for e in customer)  # partials
    stored = httpx.get(
        f"{server.http}/v1/calls/{result.call_id}",
        headers={"Authorization": f"Bearer {server.token}"},
    ).json()
    seen = [*result.events, *(e for k in ("transcript", "insights", "cards") for e in stored[k])]
    for event in seen:
        for text in texts(event):
            assert longest_number_run(text) < 4, (event["type"], text)
    placeholders = ("[CARD]", "[DIGITS]", "[PHONE]")
    finals = [e["text"] for e in customer if e["type"] == "transcript" and e["is_final"]]
    assert any(p in t for t in finals for p in placeholders), finals


@pytest.mark.parametrize("telephone", [False, True], ids=["16k", "8k-mulaw"])
def test_a_dictated_card_number_never_reaches_a_viewer_or_the_store(
    server: ServerProcess, tmp_path: Path, telephone: bool
) -> None:
    """The card and phone number the customer dictated after the rep asked for them."""
    path = tmp_path / "dictation.wav"
    render(DICTATION).write(path)
    assert_nothing_leaks(server, path, telephone)


AN4 = ROOT / "read/misc/an4_10001-90210-01803.wav"


@pytest.mark.skipif(not AN4.exists(), reason="needs the real-speech set (CUECARD_REAL_SPEECH)")
@pytest.mark.parametrize("telephone", [False, True], ids=["16k", "8k-mulaw"])
def test_a_number_read_in_groups_never_reaches_a_viewer_or_the_store(
    server: ServerProcess, tmp_path: Path, telephone: bool
) -> None:
    """A real talker reading "one zero zero zero one, nine oh two one oh, zero one eight zero
    three" with pauses, unprompted, on the customer's line: the segmenter cuts it into
    several finals, each too short for the stateless rules, and none of them shows or
    stores four digits in a row."""
    speech, rate = sf.read(AN4, dtype="float32")
    assert rate == SAMPLE_RATE_HZ
    customer = np.concatenate([np.zeros(rate // 2), speech, np.zeros(3 * rate // 2)])
    path = tmp_path / "an4.wav"
    sf.write(path, np.stack([np.zeros_like(customer), customer], axis=1), rate, subtype="PCM_16")
    assert_nothing_leaks(server, path, telephone)
