"""Summary engines on a call's stored events (typed, as ``server.wire.from_wire`` reads them):
the built-in one (insight labels, action items, Markdown) and the LLM one against a real
chat-completions server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from audio.chunk import Speaker
from audio.prosody import Indicator, Prosody
from guidance.action_items import ActionItem
from guidance.cards import Card, CardState
from guidance.llm_summary import LlmOptions, LlmSummarizer
from guidance.score import Score
from guidance.summary import BuiltinSummarizer, SummaryOptions, build_summary
from guidance.summary_markdown import render_markdown
from guidance.turns import CallEvent
from nlp.insight import Entity, Insight
from nlp.transcript import Transcript
from server.wire import from_wire, to_wire

SAT = date(2026, 11, 21)  # a Saturday


def tr(uid: str, text: str, start_s: float, end_s: float, *, final: bool = True) -> Transcript:
    speaker: Speaker = "rep" if uid.startswith("rep") else "customer"
    return Transcript(uid, speaker, final, text, start_s, end_s)


def ins(
    uid: str,
    label: str,
    *,
    confidence: float = 0.9,
    sentiment: float = 0.0,
    entities: tuple[Entity, ...] = (),
    engagement: float | None = None,
) -> Insight:
    prosody = None
    if engagement is not None:
        indicators = {"engagement": Indicator(engagement, {})}
        prosody = Prosody(None, None, None, -20.0, None, 0.0, {}, indicators)
    speaker: Speaker = "rep" if uid.startswith("rep") else "customer"
    return Insight(uid, speaker, True, "", 0.0, 0.0, label, confidence, {}, entities, sentiment,
                   prosody)  # fmt: skip


def card(uid: str, title: str, card_id: str, state: CardState = "issued") -> Card:
    return Card(card_id, state, "objection_timing", 80, title, "", ("Ask why now",), None, 40.0,
                utterance_id=uid)  # fmt: skip


CALL: list[CallEvent] = [
    tr("rep-0", "Hi Dana, thanks for joining. What are you looking for?", 0.0, 4.0),
    tr(
        "customer-0",
        "We need a better way to track renewals. Our main problem is spreadsheets.",
        4.5,
        10.5,
    ),
    tr(
        "customer-1", "Honestly it sounds too expensive for our team.", 11.0, 14.0, final=False
    ),  # a partial: ignored
    tr("customer-1", "Honestly it sounds too expensive for our team.", 11.0, 14.0),
    tr("rep-1", "I understand. Most teams recover the cost in three months.", 14.5, 18.5),
    tr("customer-2", "OK. How soon can we get started?", 19.0, 21.0),
    tr(
        "rep-2",
        "Let's schedule a demo with your manager. I'll send you the proposal by Friday.",
        21.5,
        27.0,
    ),
    tr("customer-3", "Great. I will check with my manager tomorrow.", 27.5, 30.0),
    tr(
        "rep-3",
        "Could you send me your current renewal list by next Monday? Could you walk me through it?",
        30.5,
        35.0,
    ),
]
# What the session stores after every final: the intent classifier's insight.
INSIGHTS: list[CallEvent] = [
    ins("rep-0", "question"),
    ins("customer-0", "other"),
    ins("customer-1", "objection_price"),
    ins("rep-1", "other"),
    ins("customer-2", "buying_signal"),
    ins("rep-2", "next_step"),
    ins("customer-3", "positive"),
    ins("rep-3", "question"),
]


def test_action_items_from_transcripts_alone() -> None:
    """Spoken commitments become action items with owner, item and relative due date."""
    s = build_summary("c1", CALL, SAT)
    assert s.action_items == (
        ActionItem(
            "rep",
            "send the proposal",
            "2026-11-27",
            "by Friday",
            "rep-2",
            "I'll send you the proposal by Friday.",
        ),
        ActionItem(
            "customer",
            "check with my manager",
            "2026-11-22",
            "tomorrow",
            "customer-3",
            "I will check with my manager tomorrow.",
        ),
        ActionItem(
            "customer",
            "send your current renewal list",
            "2026-11-23",
            "by next Monday",
            "rep-3",
            "Could you send me your current renewal list by next Monday?",
        ),
    )


def test_a_commitments_due_date_is_the_one_inside_it() -> None:
    """The word "today" in the thanks before it is not the due date, comma or full stop between."""
    for said in (
        "Thanks for your time today, I will send the proposal by Friday.",
        "Thanks for your time today. I will send the proposal by Friday.",
    ):
        (item,) = build_summary("c1", [tr("rep-0", said, 0.0, 4.0)], SAT).action_items
        assert (item.owner, item.item, item.due, item.due_text) == (
            "rep",
            "send the proposal",
            "2026-11-27",
            "by Friday",
        ), said


def test_summary_from_transcripts_and_insights() -> None:
    """The insights' labels give the objection and its handling, the buying signal and the
    next step; needs come from the customer's words; talk statistics are exact."""
    s = build_summary("c1", [*CALL, *INSIGHTS], SAT)
    assert [m.text for m in s.needs] == [
        "We need a better way to track renewals.",
        "Our main problem is spreadsheets.",
    ]
    [obj] = s.objections
    assert (obj.kind, obj.utterance_id, obj.handling) == ("price", "customer-1", "addressed")
    assert obj.response == "I understand. Most teams recover the cost in three months."
    assert [m.utterance_id for m in s.buying_signals] == ["customer-2"]
    assert [m.utterance_id for m in s.next_steps] == ["rep-2"]
    assert s.outcome == "advanced"
    rep, cust = s.talk
    assert (rep.speaker, rep.talk_s, rep.utterances, rep.questions) == ("rep", 18.0, 4, 3)
    assert (cust.speaker, cust.talk_s, cust.utterances, cust.questions) == ("customer", 13.5, 4, 1)
    assert rep.talk_share == pytest.approx(18 / 31.5, abs=1e-3)
    assert rep.longest_monologue_s == 5.5  # rep-2; no two rep turns in a row
    assert s.duration_s == 35.0
    assert len(s.timeline) == 5 and s.timeline[0].start_s == 0 and s.timeline[-1].end_s == 35
    assert {p.customer_sentiment for p in s.timeline} == {None, 0.0}
    assert s.lead_score is None and s.score_reasons == ()


def test_without_insights_nothing_is_labelled() -> None:
    """Utterances without an insight (analysis failed) get no label: no objection, signal or
    next step is guessed, while needs, talk time and action items still come from the words."""
    s = build_summary("c1", CALL, SAT)
    assert (s.objections, s.buying_signals, s.next_steps) == ((), (), ())
    assert len(s.needs) == 2 and len(s.action_items) == 3 and s.talk[0].talk_s == 18.0
    assert all(p.customer_sentiment is None for p in s.timeline)


def test_insights_scores_and_cards_are_used() -> None:
    """A low-confidence insight label is ignored, a date entity of the insight is taken as
    it is, sentiment and engagement fill the timeline, the last score and the cards issued
    for an objection (once each, withdrawn ones left out) are kept."""
    said = "We can revisit it after the board meeting, I'll confirm then."
    meeting = "after the board meeting"  # a date only a richer entity extractor knows
    at, end = said.index(meeting), said.index(meeting) + len(meeting)
    events: list[CallEvent] = [
        *CALL,
        *INSIGHTS[:-2],
        tr("customer-4", "Let me think about the budget side.", 36.0, 40.0),
        tr("customer-5", said, 41.0, 45.0),
        ins("customer-4", "objection_timing", confidence=0.95, sentiment=-0.5, engagement=0.6),
        ins("customer-3", "objection_need", confidence=0.2, sentiment=0.4),  # too unsure
        ins("customer-5", "other", entities=(Entity("date", meeting, "2026-12-10", at, end),)),
        card("customer-4", "Timing objection", "card-1"),
        card("customer-4", "Timing objection", "card-1", "confirmed"),
        card("customer-4", "Budget check", "card-2", "withdrawn"),
        Score(55.0, 5.0, ("early",), 10.0),
        Score(63.4, 8.0, ("asked about start date", "budget ok", "champion", "more"), 40.0),
    ]
    s = build_summary("c1", events, SAT, SummaryOptions(max_reasons=2))
    assert [(o.kind, o.handling) for o in s.objections] == [
        ("price", "addressed"),
        ("timing", "unanswered"),
    ]
    assert s.objections[1].cards == ("Timing objection",)
    assert [m.utterance_id for m in s.buying_signals] == ["customer-2"]
    last = s.action_items[-1]
    assert (last.owner, last.item, last.due, last.due_text) == (
        "customer", "confirm then", "2026-12-10", meeting)  # fmt: skip
    assert s.lead_score == 63 and s.score_reasons == ("asked about start date", "budget ok")
    assert s.talk[1].longest_monologue_s == 9.5  # customer-0 + customer-1: 4.5 to 14.0
    window = next(p for p in s.timeline if p.start_s <= 38.0 < p.end_s)
    assert window.customer_sentiment == -0.25  # customer-4 (-0.5) and customer-5 (0.0)
    assert window.engagement == 0.9  # only the customer spoke (1.0); prosody (0.6 + 1) / 2


def test_reraised_objection_and_stalled_outcome() -> None:
    """An objection the customer raises again is 'reraised'; without next steps the call is
    stalled."""
    events: list[CallEvent] = [
        tr("customer-0", "This is too expensive.", 0.0, 2.0),
        tr("rep-0", "We offer a discount for annual plans.", 2.5, 5.0),
        tr("customer-1", "Still, it's over our budget.", 5.5, 7.0),
        ins("customer-0", "objection_price"),
        ins("rep-0", "other"),
        ins("customer-1", "objection_price"),
    ]
    s = build_summary("c2", events, SAT)
    assert [o.handling for o in s.objections] == ["reraised", "unanswered"]
    assert s.outcome == "stalled"
    assert s.action_items == () and s.next_steps == ()


def test_empty_call() -> None:
    """A call with no final transcript still gets a (near-empty) summary."""
    s = build_summary("c3", [tr("rep-0", "partial only", 0.0, 1.0, final=False)], SAT)
    assert (s.duration_s, s.outcome, s.timeline, s.needs) == (0.0, "no_decision", (), ())
    assert [t.talk_s for t in s.talk] == [0.0, 0.0]
    assert "0:00 call" in s.overview


async def test_wire_round_trip_and_markdown() -> None:
    """A summary survives to_wire -> JSON -> from_wire, and its Markdown lists the action
    items with owner and due date."""
    s = await BuiltinSummarizer().summarize("c1", [*CALL, *INSIGHTS], SAT)
    wire = json.loads(json.dumps(to_wire(s)))
    assert wire["type"] == "summary"
    assert from_wire(wire) == s
    md = render_markdown(s)
    assert md.startswith("# Call summary: c1\n")
    assert "- [ ] **rep**: send the proposal — due 2026-11-27 (by Friday)" in md
    assert "## Objections" in md and "**price**" in md and "| rep | 0:18 |" in md
    with pytest.raises(ValueError):
        from_wire({**wire, "outcome": "won-the-lottery"})


# -- the LLM engine ---------------------------------------------------------------------------

GOOD = {
    "overview": "Dana wants renewal tracking; price came up; a proposal is due Friday.",
    "outcome": "advanced",
    "needs": [{"utterance_id": "customer-0", "text": "Track renewals without spreadsheets"}],
    "objections": [
        {
            "kind": "price",
            "utterance_id": "customer-1",
            "text": "Too expensive",
            "response": "Payback in three months",
            "handling": "addressed",
        }
    ],
    "buying_signals": [{"utterance_id": "customer-2", "text": "How soon can we start?"}],
    "next_steps": [{"utterance_id": "rep-2", "text": "Demo with the manager"}],
    "action_items": [
        {
            "owner": "rep",
            "item": "Send the proposal",
            "due": "2026-11-27",
            "due_text": "by Friday",
            "utterance_id": "rep-2",
        }
    ],
}


class ChatServer:
    """A real OpenAI-compatible chat-completions server on 127.0.0.1 with scripted answers:
    a string is the assistant message content, an int an HTTP error status, a float a delay
    in seconds before answering (longer than the client's timeout)."""

    def __init__(self, script: list[str | int | float]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **req})
                step = outer.script.pop(0)
                if isinstance(step, float):
                    time.sleep(step)
                    step = json.dumps(GOOD)
                if isinstance(step, int):
                    self._send(step, {"error": {"message": "boom", "type": "server_error"}})
                    return
                self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": req["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": step}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })  # fmt: skip

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer([])
    try:
        yield server
    finally:
        server.close()


async def _llm(chat: ChatServer, script: list[str | int | float], **kw: Any) -> Any:
    chat.script[:] = script
    engine = LlmSummarizer(LlmOptions(base_url=chat.base_url, model="test-model", **kw))
    try:
        return await engine.summarize("c1", CALL, SAT)
    finally:
        await engine.aclose()


async def test_llm_good_answer(chat: ChatServer) -> None:
    """A valid structured answer becomes the summary's judgement parts; talk statistics and
    timeline still come from the built-in core; the request asked for a JSON schema."""
    s = await _llm(chat, [json.dumps(GOOD)])
    assert s.engine == "llm:test-model"
    assert s.overview == GOOD["overview"]
    assert [(a.owner, a.item, a.due) for a in s.action_items] == [
        ("rep", "Send the proposal", "2026-11-27")]  # fmt: skip
    assert s.objections[0].start_s == 11.0 and s.buying_signals[0].speaker == "customer"
    assert s.talk == build_summary("c1", CALL, SAT).talk
    [req] = chat.requests
    assert req["path"] == "/v1/chat/completions" and req["model"] == "test-model"
    assert req["response_format"]["type"] == "json_schema"
    assert "action_items" in json.dumps(req["response_format"]["json_schema"]["schema"])
    assert "[rep-2]" in req["messages"][1]["content"]
    assert "Saturday 2026-11-21" in req["messages"][1]["content"]


async def test_llm_malformed_then_good_retries_once(chat: ChatServer) -> None:
    """A malformed first answer is retried, and the valid second one is used."""
    s = await _llm(chat, ["{not json", "```json\n" + json.dumps(GOOD) + "\n```"],
                   response_format="json_object")  # fmt: skip
    assert s.engine == "llm:test-model"
    assert len(chat.requests) == 2
    assert chat.requests[0]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("script", "why"),
    [
        (["{not json", json.dumps({**GOOD, "outcome": "won"})], "invalid answer"),
        (
            [json.dumps({**GOOD, "needs": [{"utterance_id": "customer-99", "text": "x"}]})] * 2,
            "unknown utterance_id",
        ),
        ([500, 503], "HTTP 503"),
    ],
)
async def test_llm_failing_twice_falls_back(
    chat: ChatServer, script: list[str | int | float], why: str
) -> None:
    """Two bad answers (malformed, schema-invalid, unknown ids, HTTP errors) fall back to the
    built-in summary, which says why."""
    s = await _llm(chat, script)
    assert len(chat.requests) == 2
    assert s.engine.startswith("builtin (llm failed: ") and why in s.engine
    builtin = build_summary("c1", CALL, SAT)
    assert s.action_items == builtin.action_items and s.overview == builtin.overview


async def test_llm_timeout_falls_back(chat: ChatServer) -> None:
    """An endpoint slower than the timeout falls back to the built-in summary."""
    s = await _llm(chat, [2.0, 2.0], timeout_s=0.2)
    assert s.engine == "builtin (llm failed: timed out)"


def test_llm_options_validated() -> None:
    """A corrupt LLM configuration fails at construction with a clear ValueError."""
    with pytest.raises(ValueError, match="base_url"):
        LlmOptions(base_url="localhost:11434", model="m")
    with pytest.raises(ValueError, match="model"):
        LlmOptions(base_url="http://127.0.0.1:1/v1", model="")


def test_action_item_survives_asr_slips() -> None:
    """Whisper hearing "by" as "my" (seen with espeak-ng + tiny.en) still gives a clean item
    and the due date."""
    events = [tr("rep-0", "I'll send you the proposal my Friday. Could you send me your "
                 "renewal list my next Monday?", 0.0, 6.0)]  # fmt: skip
    s = build_summary("c1", events, SAT)
    assert [(a.owner, a.item, a.due) for a in s.action_items] == [
        ("rep", "send the proposal", "2026-11-27"),
        ("customer", "send your renewal list", "2026-11-23"),
    ]


@pytest.mark.parametrize(
    ("said", "owner", "item", "due"),
    [
        ("I will send the proposal buy Friday.", "rep", "send the proposal", "2026-11-27"),
        ("I will send the proposal bye Friday.", "rep", "send the proposal", "2026-11-27"),
        ("I'll send over the pricing I end the day.", "rep", "send over the pricing", "2026-11-21"),
        ("We will renew the contract next month.", "rep", "renew the contract", "2026-12-01"),
    ],
)
def test_action_items_survive_streamed_asr_slips(
    said: str, owner: str, item: str, due: str
) -> None:
    """Slips heard from tiny.en on espeak-ng calls ("buy Friday", "I end the day") still give
    a clean item and its due date; "renew" is a commitment."""
    s = build_summary("c1", [tr("rep-0", said, 0.0, 4.0)], SAT)
    assert [(a.owner, a.item, a.due) for a in s.action_items] == [(owner, item, due)]
