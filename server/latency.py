"""A call's latencies as the server sees them, by REFERENCE.md's definitions (the ones
``bench.metrics`` applies on the client): the time an event is published minus the time the
audio it refers to arrived. Sans-I/O: the caller passes the times (any monotonic seconds).

- final: a final transcript minus the arrival of its last word's end (its ``end_s`` when it
  has no words);
- partial: an utterance's first partial minus the arrival of its start;
- card: an issued card triggered by the customer minus the arrival of the end of that
  utterance (``audio_end_s``).

At 1.0x the arrival of audio time ``t`` is the call's start plus ``t``, so these are the
benchmark's figures less the last network hop to the viewer. A faster replay compresses the
arrivals, and the latencies include the backlog it builds.

``ArrivalTimes`` remembers when each stretch of audio arrived: one point per ``feed``, kept
for ``keep_s`` seconds of audio (a latency over that is not measured).
"""

from __future__ import annotations

import bisect
from typing import Literal

from guidance.cards import Card
from nlp.transcript import Transcript

LatencyKind = Literal["final", "partial", "card"]


class ArrivalTimes:
    """When the audio up to each audio time arrived (``arrived``), and the lookup (``at``)."""

    def __init__(self, keep_s: float = 120.0) -> None:
        self.keep_s = keep_s
        self._audio_s: list[float] = []
        self._at_s: list[float] = []
        self._forgot = False

    def arrived(self, audio_s: float, now_s: float) -> None:
        """The call's audio now reaches ``audio_s`` (its end on any channel)."""
        if self._audio_s and audio_s <= self._audio_s[-1]:
            return
        self._audio_s.append(audio_s)
        self._at_s.append(now_s)
        if audio_s - self._audio_s[0] > 2 * self.keep_s:  # forget in halves: amortized O(1)
            cut = bisect.bisect_left(self._audio_s, audio_s - self.keep_s)
            del self._audio_s[:cut], self._at_s[:cut]
            self._forgot = True

    def at(self, audio_s: float) -> float | None:
        """When audio time ``audio_s`` had arrived; None if that is forgotten or nothing came."""
        if not self._audio_s:
            return None
        i = bisect.bisect_left(self._audio_s, audio_s)
        if i == 0 and self._forgot and audio_s < self._audio_s[0]:
            return None
        return self._at_s[min(i, len(self._at_s) - 1)]


class LatencyProbe:
    """One call: ``arrived`` from feed, ``observe`` for each event published."""

    def __init__(self, keep_s: float = 120.0) -> None:
        self.arrivals = ArrivalTimes(keep_s)
        self._partial_seen: set[str] = set()

    def arrived(self, audio_s: float, now_s: float) -> None:
        self.arrivals.arrived(audio_s, now_s)

    def observe(self, event: object, now_s: float) -> tuple[LatencyKind, float] | None:
        """The latency ``event``, published at ``now_s``, measures, if it measures one."""
        point = self._point(event)
        if point is None:
            return None
        kind, audio_s = point
        at = self.arrivals.at(audio_s)
        return None if at is None else (kind, now_s - at)

    def _point(self, event: object) -> tuple[LatencyKind, float] | None:
        if isinstance(event, Transcript):
            if event.is_final:
                self._partial_seen.discard(event.utterance_id)
                return "final", event.words[-1].end_s if event.words else event.end_s
            if event.utterance_id in self._partial_seen:
                return None
            self._partial_seen.add(event.utterance_id)
            return "partial", event.start_s
        if isinstance(event, Card) and event.state == "issued" and event.evidence is not None:
            if event.evidence.speaker == "customer" and event.audio_end_s > 0:
                return "card", event.audio_end_s
        return None
