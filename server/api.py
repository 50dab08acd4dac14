"""The REST API over stored calls (``/v1``), documented by its OpenAPI schema.

``build_router(store, auth=...)`` returns a router the app mounts; ``auth(scope, per_call)``
makes each route's FastAPI dependency (``server.access.Authenticator.requirement``: 401 on a
missing or invalid token, 403 on a token without the scope, or for another call). Reads of
one call need ``events:read`` on that call, lists and statistics ``events:read`` on every call
(``*``), ``DELETE`` needs ``admin``.

- ``GET /v1/calls`` — newest first; filters ``since``/``until`` (ISO 8601 or epoch seconds,
  on the call's start), ``rep``, ``outcome``, ``status``, ``q`` (all words must occur in the
  call's final transcripts), ``limit``/``offset``.
- ``GET /v1/calls/{call_id}`` — the call with its transcript, insights, cards, scores and
  status changes, each with its ``seq``.
- ``GET /v1/calls/{call_id}/summary`` — JSON; Markdown with ``?format=markdown`` or
  ``Accept: text/markdown``. A call that ended without a stored summary (e.g. interrupted by
  a crash) is summarized on the fly by the built-in engine; a live call answers 409.
- ``GET /v1/calls/{call_id}/deliveries`` — webhook attempts (``pending``: queued, not sent).
- ``POST /v1/calls/{call_id}/deliveries/redeliver`` — admin only: re-send the call's summary
  webhook (same delivery id, a new attempt series) to every URL or the body's ``url``; 202.
- ``DELETE /v1/calls/{call_id}`` — the call and everything derived from it; 204.
- ``GET /v1/cards/stats`` — per card kind over stored calls (``since``/``until``/``rep``):
  cards shown, used, dismissed, no action, and the dismiss rate (``server.card_stats``).

Unknown call ids answer 404 with ``{"detail": "unknown call id '...'"}``; an unusable store
(``StoreError``: the backends raise nothing else when their storage fails, Redis errors and
dropped connections included) answers 503 with a JSON ``detail``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from guidance.summary import BuiltinSummarizer, Outcome, Summarizer, Summary
from guidance.summary_markdown import render_markdown
from nlp.insight import Insight
from nlp.transcript import Transcript
from server.auth import Scope
from server.card_stats import card_stats
from server.handoff import summarize_stored, summary_from_wire
from server.store import (
    CallFilter,
    CallNotFound,
    CallRecord,
    CallStatus,
    CallStore,
    DeliveryOutcome,
    StoreError,
)
from server.wire import from_wire, to_wire

if TYPE_CHECKING:
    from server.webhooks import WebhookSender

T = TypeVar("T")
MAX_OFFSET = 2**62  # SQLite integers are 64-bit signed: a larger OFFSET is a 500, not a 422


class SummaryNotReady(Exception):
    """The call is still live: its summary is made when it ends. Retry after the call ends."""


class CallOut(BaseModel):
    call_id: str
    source: str
    rep_id: str | None
    started_at: float = Field(description="epoch seconds")
    ended_at: float | None = Field(description="epoch seconds; null while live")
    status: CallStatus
    outcome: str | None = Field(description="the summary's outcome once summarized")
    event_count: int
    has_summary: bool


class CallList(BaseModel):
    calls: list[CallOut]
    limit: int
    offset: int


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    seq: int


class WordOut(BaseModel):
    text: str
    start_s: float
    end_s: float
    probability: float


class TranscriptOut(_Event):
    utterance_id: str
    speaker: str
    text: str
    start_s: float
    end_s: float
    words: list[WordOut] = []


class EntityOut(BaseModel):
    kind: str
    text: str
    value: str
    start_char: int
    end_char: int


class InsightOut(_Event):
    utterance_id: str
    speaker: str
    text: str
    label: str
    confidence: float
    scores: dict[str, float] = {}
    entities: list[EntityOut] = []
    sentiment: float | None = None
    prosody: dict[str, Any] | None = None


class CardOut(_Event):
    """A coaching card as it was shown (fields as defined by ``guidance``)."""


class ScoreOut(_Event):
    score: float
    delta: float | None = None
    reasons: list[Any] = []


class StatusOut(_Event):
    state: str


class CallDetail(BaseModel):
    call: CallOut
    transcript: list[TranscriptOut]
    insights: list[InsightOut]
    cards: list[CardOut]
    scores: list[ScoreOut]
    statuses: list[StatusOut]


class CardKindOut(BaseModel):
    kind: str
    group: Literal["card", "alert"]
    shown: int = Field(description="cards shown (not withdrawn), one per card id")
    used: int
    dismissed: int
    no_action: int
    dismiss_rate: float = Field(description="dismissed / shown")
    use_rate: float = Field(description="used / shown")


class CardStatsOut(BaseModel):
    calls: int = Field(description="stored calls counted")
    kinds: list[CardKindOut] = Field(description="most shown first")


class DeliveryOut(BaseModel):
    delivery_id: str
    url: str
    attempt: int
    at: float
    outcome: DeliveryOutcome = Field(
        description="pending: queued, not sent yet (attempt 0); retrying: this attempt "
        "failed and another follows; delivered; failed: no more attempts"
    )
    status_code: int | None
    error: str | None


class RedeliverIn(BaseModel):
    url: str | None = Field(None, description="one of the configured URLs; default: all")


class RedeliveryOut(BaseModel):
    delivery_id: str = Field(description="the call's latest delivery id, kept for dedupe")
    urls: list[str]


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown call id"}}


def _call_out(r: CallRecord) -> CallOut:
    return CallOut(
        call_id=r.call_id,
        source=r.source,
        rep_id=r.rep_id,
        started_at=r.started_at,
        ended_at=r.ended_at,
        status=r.status,
        outcome=r.outcome,
        event_count=r.event_count,
        has_summary=r.has_summary,
    )


async def summary_of(store: CallStore, call_id: str, fallback: Summarizer) -> Summary:
    """The stored summary, or for an ended call without one, ``fallback``'s summary of its
    stored events. Raises ``CallNotFound`` or ``SummaryNotReady`` (live call)."""
    stored = await store.get_summary(call_id)
    if stored is not None:
        return summary_from_wire(stored)
    record = await store.get_call(call_id)
    if record.status == "live":
        raise SummaryNotReady(f"call {call_id!r} is live; its summary is made when it ends")
    return await summarize_stored(store, fallback, record)


def build_router(
    store: CallStore,
    *,
    auth: Callable[[Scope, bool], Callable[..., Any]],
    fallback: Summarizer | None = None,
    webhooks: WebhookSender | None = None,
) -> APIRouter:
    """The ``/v1`` routes over ``store``; each depends on ``auth(scope, per_call)``;
    ``webhooks`` (the server's sender, if URLs are configured) serves redelivery."""
    router = APIRouter(prefix="/v1", tags=["calls"])
    summarizer = fallback or BuiltinSummarizer()
    read_all = [Depends(auth("events:read", False))]
    read_one = [Depends(auth("events:read", True))]
    admin = [Depends(auth("admin", False))]

    @router.get(
        "/calls", response_model=CallList, dependencies=read_all,
        summary="List calls, newest first",
    )  # fmt: skip
    async def list_calls(
        since: Annotated[datetime | None, Query(description="started at or after")] = None,
        until: Annotated[datetime | None, Query(description="started before")] = None,
        rep: Annotated[str | None, Query(description="rep id")] = None,
        outcome: Outcome | None = None,
        status: CallStatus | None = None,
        q: Annotated[str | None, Query(max_length=200, description="transcript words")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> CallList:
        flt = CallFilter(
            since=since.timestamp() if since else None,
            until=until.timestamp() if until else None,
            rep_id=rep,
            outcome=outcome,
            status=status,
            text=q,
            limit=limit,
            offset=offset,
        )
        records = await _guard(store.list_calls(flt))
        return CallList(calls=[_call_out(r) for r in records], limit=limit, offset=offset)

    @router.get(
        "/calls/{call_id}", response_model=CallDetail, responses=_NOT_FOUND, dependencies=read_one,
        summary="A call with its transcript, insights, cards, scores and status changes",
    )  # fmt: skip
    async def get_call(call_id: str) -> CallDetail:
        record = await _guard(store.get_call(call_id))
        events = await _guard(store.events(call_id))
        by_type: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            event = from_wire(e)  # a stored event that is no wire event is corruption: 500
            if not isinstance(event, Transcript | Insight) or event.is_final:
                by_type.setdefault(type(event).type, []).append(e)
        return CallDetail.model_validate(
            {
                "call": _call_out(record),
                "transcript": by_type.get("transcript", []),
                "insights": by_type.get("insight", []),
                "cards": by_type.get("card", []),
                "scores": by_type.get("score", []),
                "statuses": by_type.get("status", []),
            }
        )

    @router.get(
        "/calls/{call_id}/summary",
        response_model=Summary,
        dependencies=read_one,
        summary="The call's summary (JSON, or Markdown with ?format=markdown)",
        responses={
            **_NOT_FOUND,
            409: {"description": "The call is still live"},
            200: {"content": {"text/markdown": {}}},
        },
    )
    async def get_summary(
        call_id: str, request: Request, format: Literal["json", "markdown"] | None = None
    ) -> Any:
        try:
            summary = await _guard(summary_of(store, call_id, summarizer))
        except SummaryNotReady as exc:
            raise HTTPException(409, str(exc)) from exc
        wants_md = format == "markdown" or (
            format is None and "text/markdown" in request.headers.get("accept", "")
        )
        if wants_md:
            return PlainTextResponse(render_markdown(summary), media_type="text/markdown")
        return summary

    @router.get(
        "/calls/{call_id}/deliveries", response_model=list[DeliveryOut], responses=_NOT_FOUND,
        dependencies=read_one, summary="Webhook delivery attempts for the call",
    )  # fmt: skip
    async def get_deliveries(call_id: str) -> list[DeliveryOut]:
        attempts = await _guard(store.deliveries(call_id))
        return [
            DeliveryOut(
                delivery_id=a.delivery_id,
                url=a.url,
                attempt=a.attempt,
                at=a.at,
                outcome=a.outcome,
                status_code=a.status_code,
                error=a.error,
            )
            for a in attempts
        ]

    @router.post(
        "/calls/{call_id}/deliveries/redeliver", status_code=202, dependencies=admin,
        response_model=RedeliveryOut, tags=["webhooks"],
        summary="Re-send the call's summary webhook (admin)",
        responses={
            **_NOT_FOUND,
            409: {"description": "The call is live, or no webhook URL is configured"},
            422: {"description": "url is not a configured webhook URL"},
        },
    )  # fmt: skip
    async def redeliver(call_id: str, body: RedeliverIn | None = None) -> RedeliveryOut:
        """Admin only. Re-send the call's summary webhook as a new attempt series (attempt 1
        again) with the call's latest ``delivery_id`` and payload, so receivers dedupe it, to
        every configured URL or only ``url``; a series in progress to those URLs is replaced.
        A call that never had a delivery gets a new one of its summary. The attempts appear
        in ``GET .../deliveries``."""
        record = await _guard(store.get_call(call_id))
        if record.status == "live":
            raise HTTPException(409, f"call {call_id!r} is live; its summary is sent when it ends")
        if webhooks is None:
            raise HTTPException(409, "no webhook URLs are configured (CUECARD_WEBHOOK_URLS)")
        urls = list(webhooks.opts.urls)
        if body is not None and body.url is not None:
            if body.url not in urls:
                raise HTTPException(422, "url is not one of the configured webhook URLs")
            urls = [body.url]
        summary = await _guard(summary_of(store, call_id, summarizer))
        delivery_id = await _guard(
            webhooks.redeliver(call_id, to_wire(summary), record.status, urls)
        )
        return RedeliveryOut(delivery_id=delivery_id, urls=urls)

    @router.delete(
        "/calls/{call_id}", status_code=204, responses=_NOT_FOUND, dependencies=admin,
        summary="Delete a call and everything derived from it",
    )  # fmt: skip
    async def delete_call(call_id: str) -> Response:
        await _guard(store.delete_call(call_id))
        return Response(status_code=204)

    @router.get(
        "/cards/stats", response_model=CardStatsOut, tags=["cards"], dependencies=read_all,
        summary="Per card kind: shown, used, dismissed, no action, dismiss rate",
    )  # fmt: skip
    async def get_card_stats(
        since: Annotated[datetime | None, Query(description="calls started at or after")] = None,
        until: Annotated[datetime | None, Query(description="calls started before")] = None,
        rep: Annotated[str | None, Query(description="rep id")] = None,
    ) -> CardStatsOut:
        stats = await _guard(
            card_stats(
                store,
                since=since.timestamp() if since else None,
                until=until.timestamp() if until else None,
                rep_id=rep,
            )
        )
        kinds = [CardKindOut.model_validate(k.as_dict()) for k in stats.kinds]
        return CardStatsOut(calls=stats.calls, kinds=kinds)

    return router


async def _guard(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except CallNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except StoreError as exc:
        raise HTTPException(503, f"call storage unavailable: {exc}") from exc
