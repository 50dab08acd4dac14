"""``Progress``: how far a call's audio is transcribed, the clock the coach runs on.

A time-driven alert (a long silence, a question left unanswered) may only fire for audio whose
words are already known: an alert raised while the customer's answer is still in the VAD's queue
or in the recognizer is false. ``Progress.through_s`` is the audio time before which that holds:

- every channel's audio up to it has been seen by the VAD (a channel whose VAD has caught up
  with what it received counts up to the call's audio end: a quiet line holds nothing back);
- no utterance that started before it is still waiting for its final (or for the word that it
  held no speech).

Sync core, no I/O and no clock; one narrow hook per stage feeds it: ``received`` (ingest),
``heard`` and ``started`` (the segmenter), ``settled`` (the coach, when it has seen the final
or the silence, so the clock never runs ahead of what the coach knows).
"""

from __future__ import annotations

from collections.abc import Iterable

from audio.chunk import Speaker, samples_to_s


class Progress:
    def __init__(self, speakers: Iterable[Speaker]) -> None:
        self._received: dict[Speaker, int] = dict.fromkeys(speakers, 0)
        self._heard: dict[Speaker, int] = dict.fromkeys(self._received, 0)
        self._unsettled: dict[str, int] = {}  # utterance id -> its start sample
        self._audio_end = 0

    def received(self, speaker: Speaker, end_sample: int) -> None:
        """Ingest: audio of ``speaker`` up to ``end_sample`` has arrived."""
        if speaker not in self._received:
            raise ValueError(f"speaker {speaker!r} was not declared for this call")
        self._received[speaker] = max(self._received[speaker], end_sample)
        self._audio_end = max(self._audio_end, end_sample)

    def heard(self, speaker: Speaker, end_sample: int) -> None:
        """Segmenter: the VAD has judged ``speaker``'s audio up to ``end_sample``."""
        self._heard[speaker] = max(self._heard[speaker], end_sample)

    def started(self, utterance_id: str, start_sample: int) -> None:
        """Segmenter: an utterance began at ``start_sample`` (pre-roll included)."""
        self._unsettled[utterance_id] = start_sample

    def settled(self, utterance_id: str) -> None:
        """Coach: the utterance's final (or its silence) has been seen. Idempotent."""
        self._unsettled.pop(utterance_id, None)

    @property
    def audio_s(self) -> float:
        """The end of the audio received so far, on any channel."""
        return samples_to_s(self._audio_end)

    @property
    def unsettled(self) -> int:
        """Utterances begun and not yet settled."""
        return len(self._unsettled)

    @property
    def through_s(self) -> float:
        heard = min(
            (
                self._audio_end if self._heard[s] >= self._received[s] else self._heard[s]
                for s in self._received
            ),
            default=self._audio_end,
        )
        return samples_to_s(min([heard, *self._unsettled.values()]))
