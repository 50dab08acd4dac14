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
    # None: the channel declared the speaker; else the diarizer's confidence in it (finals only)
    speaker_confidence: float | None = None
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


@dataclass(frozen=True, slots=True)
class RecognitionContext:
    """What the recognizer may know about a clip besides its audio.

    ``prompt`` is the call's recent final text (both speakers, newest last): Whisper reads it
    as the preceding transcript, which carries names, spelling and casing across utterances.
    ``hotwords`` are names to bias toward (playbook products, competitors, the account); they
    are given to the decoder ahead of the prompt. Both are hints: a transcriber may trim them.
    """

    prompt: str = ""
    hotwords: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not w.strip() for w in self.hotwords):
            raise ValueError("hotwords must be non-empty strings")


NO_CONTEXT = RecognitionContext()


class Transcriber(Protocol):
    """Speech to text for one clip of 16 kHz mono audio. Blocking: call it off the event loop."""

    name: str

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition: ...

    def warmup(self) -> None: ...
