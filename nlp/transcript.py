"""Transcript events and the ``Transcriber`` model seam.

Contract of the ASR stage: per utterance, zero or more partials (``is_final=False``) and
exactly one final (``is_final=True``), in that order; a final with no text is never emitted
(silence and noise produce nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from audio.chunk import Samples, Speaker


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """A partial or final transcript of one utterance of one speaker, in call audio time."""

    type: ClassVar[str] = "transcript"

    utterance_id: str
    speaker: Speaker
    is_final: bool
    text: str
    start_s: float
    end_s: float
    words: tuple[Word, ...] = ()
    # The utterance's 16 kHz audio, finals only: prosody reads it. Never sent on the wire.
    audio: Samples | None = field(default=None, repr=False, compare=False, metadata={"wire": False})
    audio_start_s: float = field(default=0.0, compare=False, metadata={"wire": False})


@dataclass(frozen=True, slots=True)
class Recognition:
    """What a transcriber heard in one clip; times are seconds from the clip's first sample."""

    text: str
    words: tuple[Word, ...]
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


class Transcriber(Protocol):
    """Speech to text for one clip of 16 kHz mono audio. Blocking: call it off the event loop."""

    name: str

    def recognize(self, audio: Samples, *, with_words: bool) -> Recognition: ...

    def warmup(self) -> None: ...
