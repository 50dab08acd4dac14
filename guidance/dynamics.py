"""``Dynamics``: conversation-dynamics alerts from the timing of both channels' transcripts.

Inputs are transcripts (partials and finals, either speaker), final insights and audio-time
ticks; outputs are ``Alert`` values, each raised when its condition *becomes* true (edge
triggered, re-armed when the condition clears) with ``audio_end_s`` the audio time at which it
became true:

- ``monologue``: the rep's current turn (rep speech with gaps under ``monologue_max_gap_s`` and no
  customer speech longer than a backchannel) reaches ``monologue_s``; at turn start + threshold.
- ``talk_ratio``: the rep's share of speech in the last ``talk_ratio_window_s`` exceeds
  ``max_rep_talk_ratio`` once at least ``talk_ratio_min_speech_s`` of speech is in the window.
- ``fast_speech``: the rep's words per minute over the last ``fast_speech_window_s`` of finals,
  timed by each final's utterance audio (the VAD's extent: what the rep took to say it), not
  by its word alignment, whose spans run short and vary with the CPU's int8 kernels.
- ``customer_silence``: no customer speech for ``customer_silence_s``, counted from the end of
  the customer's last utterance; before the customer's first words, from the end of the rep's
  first question, and not at all if neither happened (a call's opening is not silence).
- ``interruption``: a rep utterance starts while a customer utterance still has at least
  ``interruption_min_overlap_s`` to go.
- ``unanswered_question``: the rep has not spoken ``unanswered_after_s`` after the customer
  finished a turn that contained a question.
- ``no_next_step``: no next step yet when the customer says a closing phrase or when the call
  reaches ``no_next_step_after_s``.
- ``sentiment_drop``: the customer's smoothed sentiment (or prosodic engagement) falls by
  ``sentiment_drop`` (``engagement_drop``) from its peak in the last ``sentiment_window_s``.

Tick-driven alerts (silence, unanswered question) wait ``transcript_lag_s`` past the threshold
before firing, because the words that would cancel them may still be in transcription.

An intent counts (a question, a next step) at ``min_confidence`` or more: the coach passes the
playbook's ``deck.min_confidence``, so cards, alerts and the score agree on what was said.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from audio.chunk import SAMPLE_RATE_HZ
from guidance.cards import Evidence
from guidance.playbook import AlertKind, DynamicsSettings
from nlp.insight import Insight
from nlp.transcript import Transcript

_EMA_ALPHA = 0.4


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    audio_end_s: float
    detail: str
    evidence: Evidence | None = None


@dataclass(slots=True)
class _Span:
    speaker: str
    start_s: float
    end_s: float
    n_words: int
    text: str
    is_final: bool
    speaking_s: float  # the utterance's audio for finals that carry it, else the word span


@dataclass(slots=True)
class _Question:
    evidence: Evidence
    answer_from_s: float  # the rep must speak after this audio time


class Dynamics:
    """Per-call conversation-dynamics core; each method returns the alerts that became true."""

    def __init__(self, settings: DynamicsSettings, *, min_confidence: float = 0.4) -> None:
        self._s = settings
        self._min_confidence = min_confidence
        self._spans: dict[str, _Span] = {}
        self._old_talk_s = {"rep": 0.0, "customer": 0.0}  # finals pruned out of ``_spans``
        self._turn_start_s: float | None = None
        self._turn_end_s = 0.0
        self._monologue_fired = False
        self._talk_ratio_armed = True
        self._fast_armed = True
        self._silence_from_s: float | None = None  # None: the customer's silence is not counted
        self._silence_fired = False
        self._interrupting: set[str] = set()
        self._questions: list[_Question] = []
        self._next_step_agreed = False
        self._no_next_step_fired = False
        self._sentiment = _Trend(settings.sentiment_window_s, settings.sentiment_drop)
        self._engagement = _Trend(settings.sentiment_window_s, settings.engagement_drop)
        self._latest_s = 0.0  # audio time seen: transcripts and ticks
        self._latest_speech_s = 0.0  # the end of the latest transcribed speech

    @property
    def next_step_agreed(self) -> bool:
        return self._next_step_agreed

    def rep_talk_share(self, prior_s: float = 0.0) -> float | None:
        """The rep's share of all speech so far in the call, None before anyone spoke.
        ``prior_s`` seconds of evenly shared talk are counted in, so a call's first lines
        (the rep's opening) cannot swing the share on their own."""
        rep, customer = self._talk_s(float("-inf"), float("inf"))
        total = rep + customer
        return (rep + prior_s / 2) / (total + prior_s) if total > 0 else None

    def observe_transcript(self, t: Transcript) -> list[Alert]:
        if t.speaker not in ("rep", "customer"):
            return []
        start_s, end_s = (
            (t.words[0].start_s, t.words[-1].end_s) if t.words else (t.start_s, t.end_s)
        )
        speaking_s = len(t.audio) / SAMPLE_RATE_HZ if t.audio is not None else end_s - start_s
        span = _Span(t.speaker, start_s, end_s, len(t.text.split()), t.text, t.is_final, speaking_s)
        self._spans[t.utterance_id] = span
        self._latest_s = max(self._latest_s, end_s)
        self._latest_speech_s = max(self._latest_speech_s, end_s)
        alerts: list[Alert] = []
        if t.speaker == "rep":
            alerts += self._rep_spoke(t.utterance_id, span)
        else:
            alerts += self._customer_spoke(span)
        alerts += self._check_talk_ratio(self._latest_speech_s)
        self._prune()
        return alerts

    def observe_insight(self, i: Insight) -> list[Alert]:
        """Final insights only: questions, next steps, closing phrases and sentiment."""
        if not i.is_final:
            return []
        sure = i.confidence >= self._min_confidence
        if i.label == "next_step" and sure:
            self._next_step_agreed = True
        if i.speaker == "rep" and self._silence_from_s is None:
            if (i.label == "question" and sure) or i.text.rstrip().endswith("?"):
                self._silence_from_s = i.end_s  # the rep asked: the customer's turn to speak
        if i.speaker != "customer":
            return []
        evidence = Evidence(i.text, i.speaker, i.start_s, i.end_s)
        alerts: list[Alert] = []
        if i.label == "question" and sure:
            self._questions.append(_Question(evidence, answer_from_s=i.end_s))
        text = i.text.lower()
        if not self._next_step_agreed and not self._no_next_step_fired:
            if any(p in text for p in self._s.closing_phrases):
                self._no_next_step_fired = True
                alerts.append(Alert("no_next_step", i.end_s, "The call is wrapping up.", evidence))
        drop = self._sentiment.add(i.end_s, i.sentiment)
        if drop is not None:
            detail = f"Customer sentiment fell by {drop:.1f} (now {self._sentiment.value:+.1f})."
            alerts.append(Alert("sentiment_drop", i.end_s, detail, evidence))
        engagement = i.prosody.indicators.get("engagement") if i.prosody is not None else None
        if engagement is not None:
            drop = self._engagement.add(i.end_s, engagement.value)
            if drop is not None:
                detail = f"The customer sounds less engaged (down {drop:.1f})."
                alerts.append(Alert("sentiment_drop", i.end_s, detail, evidence))
        return alerts

    def tick(self, audio_now_s: float) -> list[Alert]:
        """Alerts that become true with time alone: silence, unanswered questions, no next step."""
        self._latest_s = max(self._latest_s, audio_now_s)
        known_s = audio_now_s - self._s.transcript_lag_s
        alerts: list[Alert] = []
        if self._silence_from_s is not None and not self._silence_fired:
            silent_at_s = self._silence_from_s + self._s.customer_silence_s
            if known_s >= silent_at_s:
                self._silence_fired = True
                detail = f"The customer has not spoken for {self._s.customer_silence_s:.0f} s."
                alerts.append(Alert("customer_silence", silent_at_s, detail))
        for q in list(self._questions):
            due_s = q.answer_from_s + self._s.unanswered_after_s
            if known_s >= due_s:
                self._questions.remove(q)
                detail = f"No answer {self._s.unanswered_after_s:.0f} s after the question."
                alerts.append(Alert("unanswered_question", due_s, detail, q.evidence))
        due_s = self._s.no_next_step_after_s
        if not self._next_step_agreed and not self._no_next_step_fired and audio_now_s >= due_s:
            self._no_next_step_fired = True
            detail = f"{due_s / 60:.0f} minutes in and no next step agreed."
            alerts.append(Alert("no_next_step", due_s, detail))
        return alerts

    def _rep_spoke(self, utterance_id: str, span: _Span) -> list[Alert]:
        alerts: list[Alert] = []
        if (
            self._turn_start_s is None
            or span.start_s - self._turn_end_s > self._s.monologue_max_gap_s
        ):
            if span.end_s > self._turn_end_s:
                self._turn_start_s = span.start_s
                self._monologue_fired = False
        self._turn_end_s = max(self._turn_end_s, span.end_s)
        if self._turn_start_s is not None and not self._monologue_fired:
            at_s = self._turn_start_s + self._s.monologue_s
            if self._turn_end_s >= at_s:
                self._monologue_fired = True
                detail = f"You have been talking for {self._s.monologue_s:.0f} s without a break."
                alerts.append(Alert("monologue", at_s, detail))
        if span.n_words >= 2:
            self._questions = [q for q in self._questions if span.end_s <= q.answer_from_s]
        alerts += self._check_interruption(utterance_id, span)
        if span.is_final:
            alerts += self._check_fast_speech(span.end_s)
        return alerts

    def _customer_spoke(self, span: _Span) -> list[Alert]:
        self._silence_from_s = max(self._silence_from_s or 0.0, span.end_s)
        self._silence_fired = False
        substantive = span.end_s - span.start_s > self._s.backchannel_max_s or span.n_words >= 3
        if substantive and self._turn_start_s is not None and span.end_s > self._turn_start_s:
            self._turn_start_s = None  # the customer took the floor: the rep's turn is over
        for q in self._questions:
            if span.start_s >= q.evidence.start_s:
                q.answer_from_s = max(q.answer_from_s, span.end_s)
        alerts: list[Alert] = []
        for rep_id, rep in list(self._spans.items()):
            if rep.speaker == "rep" and rep.end_s > span.start_s - 1.0:
                alerts += self._check_interruption(rep_id, rep)
        return alerts

    def _check_interruption(self, rep_id: str, rep: _Span) -> list[Alert]:
        if rep_id in self._interrupting or rep.end_s - rep.start_s <= self._s.backchannel_max_s:
            return []
        overlap_s = self._s.interruption_min_overlap_s
        for c in self._spans.values():
            if c.speaker != "customer":
                continue
            if c.start_s + 0.2 < rep.start_s and c.end_s - rep.start_s >= overlap_s:
                self._interrupting.add(rep_id)
                detail = f"You started {rep.start_s - c.start_s:.1f} s into the customer's turn."
                evidence = Evidence(c.text, "customer", c.start_s, c.end_s)
                return [Alert("interruption", rep.start_s + overlap_s, detail, evidence)]
        return []

    def _check_fast_speech(self, now_s: float) -> list[Alert]:
        since_s = now_s - self._s.fast_speech_window_s
        recent = [
            s
            for s in self._spans.values()
            if s.speaker == "rep" and s.is_final and s.end_s > since_s
        ]
        words = sum(s.n_words for s in recent)
        speech_s = sum(s.speaking_s for s in recent)
        if words < self._s.fast_speech_min_words or speech_s <= 0:
            return []
        wpm = 60.0 * words / speech_s
        if wpm < self._s.max_rep_wpm - 15.0:
            self._fast_armed = True
        if wpm > self._s.max_rep_wpm and self._fast_armed:
            self._fast_armed = False
            return [Alert("fast_speech", now_s, f"You are speaking at {wpm:.0f} words a minute.")]
        return []

    def _check_talk_ratio(self, now_s: float) -> list[Alert]:
        rep, customer = self._talk_s(now_s - self._s.talk_ratio_window_s, now_s)
        if rep + customer < self._s.talk_ratio_min_speech_s:
            return []
        share = rep / (rep + customer)
        if share < self._s.max_rep_talk_ratio - 0.1:
            self._talk_ratio_armed = True
        if share > self._s.max_rep_talk_ratio and self._talk_ratio_armed:
            self._talk_ratio_armed = False
            window = self._s.talk_ratio_window_s
            detail = f"You did {share:.0%} of the talking in the last {window:.0f} s."
            return [Alert("talk_ratio", now_s, detail)]
        return []

    def _talk_s(self, from_s: float, to_s: float) -> tuple[float, float]:
        whole_call = from_s == float("-inf")
        talk = dict(self._old_talk_s) if whole_call else {"rep": 0.0, "customer": 0.0}
        for s in self._spans.values():
            talk[s.speaker] += max(0.0, min(s.end_s, to_s) - max(s.start_s, from_s))
        return talk["rep"], talk["customer"]

    def _prune(self) -> None:
        """Forget finals older than every window, keeping their talk time for the call share."""
        horizon_s = max(self._s.talk_ratio_window_s, self._s.fast_speech_window_s) + 30.0
        for key, s in list(self._spans.items()):
            if s.is_final and s.end_s < self._latest_s - horizon_s:
                self._old_talk_s[s.speaker] += s.end_s - s.start_s
                del self._spans[key]
                self._interrupting.discard(key)


class _Trend:
    """Smoothed value with an edge-triggered drop detector against its recent peak."""

    def __init__(self, window_s: float, drop: float) -> None:
        self._window_s = window_s
        self._drop = drop
        self._history: deque[tuple[float, float]] = deque()
        self.value = 0.0
        self._armed = True

    def add(self, at_s: float, x: float) -> float | None:
        """Add a sample; the size of the drop when a drop has just become true, else None."""
        self.value = x if not self._history else _EMA_ALPHA * x + (1 - _EMA_ALPHA) * self.value
        self._history.append((at_s, self.value))
        while self._history and self._history[0][0] < at_s - self._window_s:
            self._history.popleft()
        drop = max(v for _, v in self._history) - self.value
        if drop < self._drop / 2:
            self._armed = True
        if drop >= self._drop and self._armed:
            self._armed = False
            return drop
        return None
