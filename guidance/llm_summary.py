"""The LLM summary engine: any OpenAI-compatible chat-completions endpoint (OpenAI, a local
vLLM or Ollama) through the ``openai`` package.

The deterministic parts (talk statistics, timeline, lead score) always come from the built-in
core; the model writes the judgement parts (overview, needs, objections and their handling,
buying signals, next steps, action items, outcome) as JSON. The request asks for structured
output (``response_format`` ``json_schema`` by default, ``json_object`` for servers without
schema support); the answer is validated with pydantic, and every quoted ``utterance_id`` must
exist in the call. An invalid answer, an HTTP error or a timeout is retried once; a second
failure falls back to the built-in summary, whose ``engine`` then says why
(``"builtin (llm failed: ...)"``). ``summarize`` therefore never raises for a model failure.

The transcript it is shown marks each line with its insight's intent label where the call has
one; a call without insights (an analysis that failed) is shown as plain lines, and the model
judges them from the words alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, cast

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guidance.action_items import ActionItem
from guidance.summary import Moment, Objection, Summary, SummaryOptions, build_summary
from guidance.turns import CallEvent, Turn, turns_of

log = logging.getLogger("cuecard.summary")


@dataclass(frozen=True, slots=True)
class LlmOptions:
    base_url: str  # e.g. "http://127.0.0.1:11434/v1" (Ollama), "https://api.openai.com/v1"
    model: str
    api_key: str = "unused"  # local servers ignore it; the client needs a value
    timeout_s: float = 30.0
    response_format: Literal["json_schema", "json_object"] = "json_schema"
    max_transcript_chars: int = 48_000
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM base_url must start with http:// or https://: {self.base_url!r}")
        if not self.model:
            raise ValueError("LLM model name must not be empty")
        if self.timeout_s <= 0 or self.max_transcript_chars < 1000:
            raise ValueError("timeout_s must be > 0 and max_transcript_chars >= 1000")


Text = Field(min_length=1, max_length=2000)


class LlmMoment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    utterance_id: str
    text: str = Text


class LlmObjection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["price", "timing", "authority", "need", "competitor", "trust", "other"]
    utterance_id: str
    text: str = Text
    response: str = Field(max_length=2000)
    handling: Literal["addressed", "unanswered", "reraised"]


class LlmActionItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: Literal["rep", "customer"]
    item: str = Text
    due: date | None
    due_text: str | None
    utterance_id: str


class LlmAnswer(BaseModel):
    """What the model must return (its JSON schema is sent as the response format)."""

    model_config = ConfigDict(extra="forbid")
    overview: str = Text
    outcome: Literal["advanced", "stalled", "no_decision"]
    needs: list[LlmMoment]
    objections: list[LlmObjection]
    buying_signals: list[LlmMoment]
    next_steps: list[LlmMoment]
    action_items: list[LlmActionItem]


_SYSTEM = """You summarize recorded sales calls for a CRM. Answer with one JSON object only,
matching this JSON schema:
{schema}
Rules: quote the customer's needs, objections, buying signals and agreed next steps with the
utterance_id of the line they come from (ids appear in square brackets). For each objection say
how the rep handled it ("addressed", "unanswered", or "reraised" if the customer raised it
again). Action items are commitments or requests with an owner ("rep" or "customer"); give
"due" as an ISO date resolved against the call date when a date was said, else null, and
"due_text" as the words said. outcome is "advanced" when next steps were agreed, "stalled"
when objections remain open, else "no_decision"."""


class LlmSummarizer:
    """``Summarizer`` through an OpenAI-compatible endpoint, falling back to the built-in one."""

    def __init__(self, opts: LlmOptions, summary_opts: SummaryOptions | None = None) -> None:
        self.opts = opts
        self.name = f"llm:{opts.model}"
        self.summary_opts = summary_opts or SummaryOptions()
        self._client = openai.AsyncOpenAI(
            base_url=opts.base_url, api_key=opts.api_key, timeout=opts.timeout_s, max_retries=0
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def summarize(
        self, call_id: str, events: Sequence[CallEvent], call_date: date
    ) -> Summary:
        base = build_summary(call_id, events, call_date, self.summary_opts)
        turns = {t.utterance_id: t for t in turns_of(events, self.summary_opts.min_confidence)}
        if not turns:
            return base
        messages = self.messages(list(turns.values()), call_date)
        reason = ""
        for attempt in (1, 2):
            try:
                answer = await self._ask(messages)
                return _merge(base, answer, turns, self.name, self.summary_opts.max_items)
            except (openai.OpenAIError, ValidationError, ValueError) as exc:
                reason = _reason(exc)
                log.warning("LLM summary of call %s, attempt %d: %s", call_id, attempt, reason)
        log.error("LLM summary of call %s failed twice (%s); using the built-in one", call_id,
                  reason)  # fmt: skip
        return dataclasses.replace(base, engine=f"builtin (llm failed: {reason})")

    def messages(self, turns: list[Turn], call_date: date) -> list[dict[str, str]]:
        lines = [
            f"[{t.utterance_id}] {t.speaker} {int(t.start_s // 60)}:{int(t.start_s % 60):02d}"
            + (f" ({t.label})" if t.label else "")
            + f": {t.text}"
            for t in turns
        ]
        while sum(len(x) + 1 for x in lines) > self.opts.max_transcript_chars and len(lines) > 2:
            mid = len(lines) // 2
            lines[mid - 1 : mid + 1] = ["[... lines omitted ...]"]
        schema = json.dumps(LlmAnswer.model_json_schema(), separators=(",", ":"))
        user = f"Call date: {call_date:%A %Y-%m-%d}\nTranscript:\n" + "\n".join(lines)
        return [
            {"role": "system", "content": _SYSTEM.format(schema=schema)},
            {"role": "user", "content": user},
        ]

    async def _ask(self, messages: list[dict[str, str]]) -> LlmAnswer:
        fmt: dict[str, Any] = {"type": "json_object"}
        if self.opts.response_format == "json_schema":
            fmt = {
                "type": "json_schema",
                "json_schema": {"name": "call_summary", "schema": LlmAnswer.model_json_schema()},
            }
        resp = await self._client.chat.completions.create(
            model=self.opts.model,
            messages=cast(Any, messages),  # plain dicts: the SDK's TypedDicts are stricter
            response_format=cast(Any, fmt),
            temperature=self.opts.temperature,
        )
        if not resp.choices or not resp.choices[0].message.content:
            raise ValueError("the model returned no content")
        content = resp.choices[0].message.content.strip()
        fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", content, re.DOTALL)
        return LlmAnswer.model_validate_json(fenced.group(1) if fenced else content)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"invalid answer ({exc.error_count()} error(s): {exc.errors()[0]['msg']})"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return f"{type(exc).__name__}: {exc}"[:200]


def _merge(
    base: Summary, a: LlmAnswer, turns: Mapping[str, Turn], engine: str, max_items: int
) -> Summary:
    """The built-in summary with the model's judgement parts; unknown ids are an invalid
    answer (``ValueError``)."""

    def turn(uid: str) -> Turn:
        if uid not in turns:
            raise ValueError(f"invalid answer: unknown utterance_id {uid!r}")
        return turns[uid]

    def moments(xs: list[LlmMoment]) -> tuple[Moment, ...]:
        return tuple(
            Moment(x.utterance_id, turn(x.utterance_id).speaker, x.text,
                   turn(x.utterance_id).start_s)
            for x in xs[:max_items]
        )  # fmt: skip

    cards = {o.utterance_id: o.cards for o in base.objections}
    objections = tuple(
        Objection(o.kind, o.utterance_id, o.text, turn(o.utterance_id).start_s, o.response,
                  o.handling, cards.get(o.utterance_id, ()))
        for o in a.objections[:max_items]
    )  # fmt: skip
    items = tuple(
        ActionItem(x.owner, x.item, x.due.isoformat() if x.due else None, x.due_text,
                   x.utterance_id, turn(x.utterance_id).text)
        for x in a.action_items[:max_items]
    )  # fmt: skip
    return dataclasses.replace(
        base,
        engine=engine,
        outcome=a.outcome,
        overview=a.overview,
        needs=moments(a.needs),
        objections=objections,
        buying_signals=moments(a.buying_signals),
        next_steps=moments(a.next_steps),
        action_items=items,
    )
