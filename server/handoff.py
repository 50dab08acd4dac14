"""The CRM hand-off at call end: read the call's stored events, summarize, store the summary,
submit the webhooks (kept in the store as pending before they are sent).

``hand_off_call`` is what the session calls when a call ends (stop message, socket close or
idle timeout) and what start-up calls for a call a dead process left live. The summary is
stored before anyone sees it, so nothing is shown or POSTed that a restart could lose.

The stored events are dicts; here they become typed events (``server.wire.from_wire``) and
only those a summary reads (``guidance.turns.CallEvent``) go to the summarizer. A stored
event that is not a valid wire event raises ``WireError``: the store holds only what the
session wrote through ``to_wire``, so that is corruption, not something to guess around.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from guidance.cards import Card
from guidance.score import Score
from guidance.summary import Summarizer, Summary
from guidance.turns import CallEvent
from nlp.insight import Insight
from nlp.transcript import Transcript
from server.clock import call_date_of
from server.store import CallRecord, CallStatus, CallStore
from server.wire import WireError, from_wire, to_wire

if TYPE_CHECKING:  # server.webhooks re-exports hand_off_call; no import cycle at run time
    from server.webhooks import WebhookSender

_CALL_EVENTS = (Transcript, Insight, Card, Score)


async def call_events(store: CallStore, call_id: str) -> list[CallEvent]:
    """The call's stored events that a summary reads, typed, in stored order. Raises
    ``CallNotFound``, or ``WireError`` for a stored event that is no wire event."""
    events = (from_wire(e) for e in await store.events(call_id))
    return [e for e in events if isinstance(e, _CALL_EVENTS)]


async def summarize_stored(store: CallStore, summarizer: Summarizer, call: CallRecord) -> Summary:
    """``summarizer``'s summary of the stored call, dates counted from the call's start."""
    events = await call_events(store, call.call_id)
    return await summarizer.summarize(call.call_id, events, call_date_of(call.started_at))


def summary_from_wire(data: Mapping[str, Any]) -> Summary:
    """A stored summary dict back into a ``Summary``; ``WireError`` if it is not one."""
    event = from_wire(data)
    if not isinstance(event, Summary):
        raise WireError(f"expected a summary, got a {type(event).type} event")
    return event


async def hand_off_call(
    store: CallStore,
    summarizer: Summarizer,
    sender: WebhookSender | None,
    call_id: str,
    call_status: CallStatus = "ended",
) -> Summary:
    """At call end: summarize the stored events, store the summary, enqueue the webhooks
    (``call_status``: ``ended``, or ``interrupted`` when the call was cut off).
    Returns the summary to send as the ``summary`` event on the call's socket. Raises
    ``CallNotFound`` for an unknown call; a storage failure propagates (nothing is sent that
    was not stored)."""
    summary = await summarize_stored(store, summarizer, await store.get_call(call_id))
    wire = to_wire(summary)
    await store.put_summary(call_id, wire)
    if sender is not None:
        await sender.submit(call_id, wire, call_status)
    return summary
