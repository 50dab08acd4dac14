"""The built-in summary of an espeak-ng call streamed through the real server lists the action
items that were spoken, with owner and due date relative to the call."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from server.clock import call_date_of
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.model, pytest.mark.slow]

# tiny.en hears this customer voice's "review" as "renew", "remove" or "unmute" (checked with
# `cuecard transcribe`), so the customer commits to "discuss" and "check" instead.
SCRIPT = (
    Turn("rep", "Thanks for your time today. I will send the proposal by Friday."),
    Turn("customer", "Okay. We will discuss it with our legal team next week."),
    Turn("rep", "Great. I will email you the contract tomorrow."),
    Turn("customer", "Good. I will check the contract with our lawyers next week."),
    Turn("rep", "Perfect, thank you."),
)


def expected_items(call_date: date) -> list[tuple[str, str, str]]:
    """(owner, key word of the item, due date) as a person reads the script."""
    friday = call_date + timedelta(days=(4 - call_date.weekday()) % 7 or 7)
    next_monday = call_date + timedelta(days=7 - call_date.weekday())
    return [
        ("rep", "proposal", friday.isoformat()),
        ("customer", "legal team", next_monday.isoformat()),
        ("rep", "contract", (call_date + timedelta(days=1)).isoformat()),
        ("customer", "contract", next_monday.isoformat()),
    ]


def check_items(summary: dict[str, Any], call_date: date) -> None:
    got = [(a["owner"], a["item"].lower(), a["due"]) for a in summary["action_items"]]
    want = expected_items(call_date)
    assert len(got) == len(want), got
    for (owner, item, due), (w_owner, w_word, w_due) in zip(got, want, strict=True):
        assert (owner, due) == (w_owner, w_due) and w_word in item, (got, want)
    assert summary["call_date"] == call_date.isoformat()


async def test_summary_event_lists_the_spoken_action_items(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The summary event and the stored summary list the rep's and the customer's
    commitments, each with its owner and its due date resolved against the call date."""
    path = tmp_path / "actions.wav"
    render(SCRIPT).write(path)
    result = await simulate(path, SimOptions(server=server.ws, token=server.token, speed=1.0))
    summaries = [e for e in result.events if e["type"] == "summary"]
    assert len(summaries) == 1, [e for e in result.events if e["type"] == "status"]
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.http, headers=headers) as client:
        call = (await client.get(f"/v1/calls/{result.call_id}")).json()["call"]
        stored = (await client.get(f"/v1/calls/{result.call_id}/summary")).json()
    call_date = call_date_of(call["started_at"])
    finals = [(e["speaker"], e["text"]) for e in result.events
              if e["type"] == "transcript" and e["is_final"]]  # fmt: skip
    try:
        check_items(summaries[0], call_date)
    except AssertionError as err:
        raise AssertionError(f"{err}\nheard: {finals}") from err
    assert stored["action_items"] == summaries[0]["action_items"]
    assert stored["engine"] == "builtin" and call["outcome"] == "advanced"
