"""Two voices on one channel: who spoke each utterance of a mixed mono line.

``Diarizer.decide(windows, speech_s)`` is the sync core: it takes the speaker embeddings of
one utterance (one unit row per 1.6 s window, from a ``VoiceEncoder``) and returns a
``SpeakerDecision``: ``rep``, ``customer`` or ``unknown``, with a confidence in [0, 1]
(``Diarizer`` says how the voices are found). Who is who comes from the anchor: the rep's
enrolled voiceprint (``cuecard enroll``), else the first voice heard, taken to be
``DiarizerOptions.first_speaker`` (``rep`` by default: the voice that opens a call the rep
places or answers). With two voices the nearer wins; the confidence is a logistic of the
margin between the two similarities (``margin_scale``), capped by the share of the
utterance's windows that agree (a voice change inside the utterance). Below
``min_confidence``, nearer to neither voice than ``min_similarity``, shorter than
``min_speech_s``, or before the other voice is known, the decision is ``unknown``: a call's
rules never run on a guessed speaker.

``diarize()`` is the async stage between ``segment()`` and ``transcribe()``: events of the
``unknown`` channel pass through unchanged (partials stay ``unknown``, so no card is raised on a
mixed line before the speaker is decided) until the utterance ends; its ``UtteranceEnded`` is
embedded on the encoder's executor and leaves relabelled with the decision and its confidence.
Events of declared channels pass untouched. The utterance keeps its id (progress tracks it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from audio.chunk import SAMPLE_RATE_HZ, Samples, Speaker
from audio.segmenter import SpeechEvent, UtteranceEnded

Embeddings = npt.NDArray[np.float32]  # (windows, dim), unit rows
WINDOW_S = 1.6  # an utterance this long gives full-length windows (the encoder's window)
Role = Literal["rep", "customer"]


class VoiceEncoder(Protocol):
    """Speaker embeddings of a 16 kHz clip, one unit row per window. Blocking: run it off the
    event loop."""

    name: str
    window_s: float

    def embed(self, audio: Samples) -> Embeddings: ...

    def warmup(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DiarizerOptions:
    first_speaker: Role = "rep"  # who the first voice is when no voiceprint decides it
    split_similarity: float = 0.86  # two groups whose centres are closer than this: one voice
    min_similarity: float = 0.5  # nearer to neither voice than this: unknown
    margin_scale: float = 0.03  # logistic scale of the margin between the two voices
    min_confidence: float = 0.75
    min_speech_s: float = 0.4  # shorter utterances carry too little voice: unknown
    min_voice_s: float = 1.0  # a voice is founded on at least this much speech
    voiceprint_weight: float = 3.0  # an enrolled voiceprint counts as this many windows
    history: int = 400  # windows kept for clustering (about 5 min of speech; the anchor stays)

    def __post_init__(self) -> None:
        if not 0 < self.min_similarity < self.split_similarity < 1:
            raise ValueError("need 0 < min_similarity < split_similarity < 1")
        if not 0.5 <= self.min_confidence < 1:
            raise ValueError("min_confidence must be within [0.5, 1)")
        if self.margin_scale <= 0 or self.voiceprint_weight <= 0:
            raise ValueError("margin_scale and voiceprint_weight must be positive")
        if not 0 <= self.min_speech_s <= self.min_voice_s:
            raise ValueError("need 0 <= min_speech_s <= min_voice_s")
        if self.history < 2:
            raise ValueError("history must keep at least 2 windows")


@dataclass(frozen=True, slots=True)
class SpeakerDecision:
    speaker: Speaker  # rep | customer | unknown
    confidence: float  # that the utterance is the voice chosen; 0.0: nothing to compare
    similarity: float  # cosine similarity to the voice chosen (or nearest)


def _unit(v: Embeddings) -> Embeddings:
    return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32)


def _other(role: Role) -> Role:
    return "customer" if role == "rep" else "rep"


class Diarizer:
    """One mixed channel's voices. ``decide`` once per utterance, in utterance order.

    Every decision re-clusters the call so far: two-means over the full-length windows heard
    (1.6 s each, so that the groups are voices and not utterance lengths; shorter utterances
    are judged, never clustered), seeded with the two least similar windows. The anchor is the
    enrolled voiceprint, else the first utterance long enough to found a voice
    (``min_voice_s``); the group holding most of it is the anchor's role. Two groups count as
    two voices only when their centres are less similar than ``split_similarity`` and each
    holds two windows or more; until then an utterance close to the call's one voice (without
    itself) is the anchor's, and anything else is ``unknown``: the other voice has not been
    heard well enough to name it."""

    def __init__(self, options: DiarizerOptions, voiceprint: Embeddings | None = None) -> None:
        self.options = options
        self._anchor_role: Role = "rep" if voiceprint is not None else options.first_speaker
        self._rows: list[Embeddings] = []
        self._weights: list[float] = []
        self._anchor_rows = 0
        if voiceprint is not None:  # counts as that many windows of the rep
            copies = max(2, round(options.voiceprint_weight))
            self._add(np.repeat(_unit(voiceprint)[None], copies, axis=0), 1.0)
            self._anchor_rows = copies
        self.voices = 0  # how many voices the last decision saw

    def decide(self, windows: Embeddings, speech_s: float) -> SpeakerDecision:
        """The speaker of one utterance from its window embeddings; ``speech_s``: its length."""
        o = self.options
        if len(windows) == 0 or speech_s < o.min_speech_s:
            return SpeakerDecision("unknown", 0.0, 0.0)
        full = speech_s >= WINDOW_S  # its windows are full-length: they may join the clusters
        if self._anchor_rows == 0:
            if speech_s < o.min_voice_s:
                return SpeakerDecision("unknown", 0.0, 0.0)
            self._add(windows, 1.0)
            self._anchor_rows = len(windows)
            self.voices = 1
            return SpeakerDecision(self._anchor_role, 1.0, 1.0)
        before = self._cluster()
        if full:
            self._add(windows, 1.0)
        centres = self._cluster() if full else before
        self.voices = len(centres)
        embedding = _unit(windows.mean(axis=0))
        if len(centres) == 1:
            sim = float(embedding @ before[0])  # the one voice without this utterance
            if sim < o.split_similarity:
                return SpeakerDecision("unknown", 0.0, sim)
            confidence = _logistic((sim - o.split_similarity) / o.margin_scale + 2)
            return SpeakerDecision(self._anchor_role, round(confidence, 3), sim)
        sims = np.array([float(embedding @ c) for c in centres])
        best = int(np.argmax(sims))
        confidence = _logistic(float(sims[best] - sims[1 - best]) / o.margin_scale)
        per_window = np.argmax(windows @ np.stack(centres).T, axis=1)
        confidence = round(min(confidence, float(np.mean(per_window == best))), 3)
        if confidence < o.min_confidence or sims[best] < o.min_similarity:
            return SpeakerDecision("unknown", confidence, float(sims[best]))
        role = self._anchor_role if best == 0 else _other(self._anchor_role)
        return SpeakerDecision(role, confidence, float(sims[best]))

    def _add(self, rows: Embeddings, weight: float) -> None:
        self._rows.extend(rows)
        self._weights.extend([weight] * len(rows))
        excess = len(self._rows) - self._anchor_rows - self.options.history
        if excess > 0:  # forget the oldest windows, never the anchor
            del self._rows[self._anchor_rows : self._anchor_rows + excess]
            del self._weights[self._anchor_rows : self._anchor_rows + excess]

    def _cluster(self) -> list[Embeddings]:
        """One centre, or two (the anchor's group first) when the call holds two voices."""
        o = self.options
        points = np.stack(self._rows)
        weights = np.array(self._weights)
        whole = [_unit(weights @ points)]
        if len(points) < 4:
            return whole
        sims = points @ points.T
        i, j = np.unravel_index(int(np.argmin(sims)), sims.shape)
        centres = [points[i], points[j]]
        member = np.zeros(len(points), bool)
        for _ in range(10):
            new = (points @ centres[1]) > (points @ centres[0])
            if new.all() or not new.any():
                return whole
            if np.array_equal(new, member):
                break
            member = new
            centres = [
                _unit(weights[~member] @ points[~member]),
                _unit(weights[member] @ points[member]),
            ]
        anchor = weights[: self._anchor_rows]
        if anchor[member[: self._anchor_rows]].sum() > anchor[~member[: self._anchor_rows]].sum():
            member, centres = ~member, centres[::-1]  # the anchor's group comes first
        if min(int(member.sum()), int((~member).sum())) < 2:
            return whole
        if float(centres[0] @ centres[1]) >= o.split_similarity:
            return whole
        return centres


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def voiceprint(encoder: VoiceEncoder, clips: list[Samples]) -> Embeddings:
    """One voice's print: the unit mean of every window of its clips (blocking)."""
    rows = [encoder.embed(c) for c in clips if len(c)]
    if not rows:
        raise ValueError("no audio to enroll")
    return _unit(np.concatenate(rows).mean(axis=0))


async def diarize(
    events: AsyncIterable[SpeechEvent],
    encoder: VoiceEncoder,
    executor: Executor,
    diarizer: Diarizer,
) -> AsyncIterator[SpeechEvent]:
    """Speech events of a call -> the same events, each ``UtteranceEnded`` of the ``unknown``
    channel labelled by ``diarizer`` (see the module docstring). Order is kept: an utterance's
    end waits for its embedding (tens of ms), and so do the events after it."""
    loop = asyncio.get_running_loop()
    async for event in events:
        if isinstance(event, UtteranceEnded) and event.speaker == "unknown":
            windows = await loop.run_in_executor(executor, encoder.embed, event.samples)
            decision = diarizer.decide(windows, len(event.samples) / SAMPLE_RATE_HZ)
            yield replace(event, speaker=decision.speaker, speaker_confidence=decision.confidence)
        else:
            yield event
