"""A long utterance is committed piece by piece: its final decodes only the audio after the
committed prefix, and holds every word of the utterance once, in order, with call times."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.segmenter import Segmenter, SegmenterOptions, SpeechEvent
from nlp.asr import AsrOptions, transcribe
from nlp.commit import Commitment, CommitOptions, Piece, decode_start, merge, quietest, tail_text
from nlp.scheduler import AsrScheduler
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Transcript, Word

ON = CommitOptions(enabled=True)  # off by default (the server: CUECARD_LONG_TURN_COMMIT_S)
WORD_S, GAP_S = 0.3, 0.08


def spoken(n_words: int, pause_after: int | None = None, pause_s: float = 0.2) -> Samples:
    """Word k is 0.3 s of constant level k/100, words 80 ms apart (too short for a pause)."""
    parts = [np.zeros(int(0.3 * SAMPLE_RATE_HZ), np.float32)]
    for k in range(1, n_words + 1):
        parts.append(np.full(int(WORD_S * SAMPLE_RATE_HZ), k / 100, np.float32))
        gap = pause_s if k == pause_after else GAP_S
        parts.append(np.zeros(int(gap * SAMPLE_RATE_HZ), np.float32))
    parts.append(np.zeros(SAMPLE_RATE_HZ, np.float32))
    return np.concatenate(parts)


class LevelWords:
    """A scripted ``Transcriber``: each run of constant non-zero level k/100 is the word
    ``wk``; words carry their run's times. Records every clip length and context it got."""

    name = "level-words"

    def __init__(self) -> None:
        self.clips: list[tuple[int, bool, str]] = []

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        self.clips.append((len(audio), with_words, context.prompt))
        level = np.round(np.asarray(audio) * 100).astype(int)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], level, [0]])))
        words = []
        for lo, hi in itertools.pairwise(edges):
            if level[lo] > 0:
                words.append(Word(f"w{level[lo]}", lo / SAMPLE_RATE_HZ, hi / SAMPLE_RATE_HZ, 0.9))
        text = " ".join(w.text for w in words)
        return Recognition(text, tuple(words) if with_words else (), 0.0, -0.1, 1.0)

    def warmup(self) -> None:
        pass


async def segmented(audio: Samples, options: SegmenterOptions) -> AsyncIterator[SpeechEvent]:
    """The real segmenter over ``audio`` with an energy detector, one frame per loop turn."""
    seg = Segmenter("customer", options, first_sample=16_000)
    n = 512
    for i in range(0, len(audio) - n + 1, n):
        frame = audio[i : i + n]
        for event in seg.feed(frame, 1.0 if float(np.abs(frame).max()) > 0.001 else 0.0):
            yield event
        await asyncio.sleep(0.002)  # let decodes finish between frames, as in a live call
    for event in seg.finish():
        yield event


async def run(audio: Samples, options: AsrOptions) -> tuple[list[Transcript], LevelWords]:
    t = LevelWords()
    scheduler = AsrScheduler(t)
    try:
        out = [
            e
            async for e in transcribe(segmented(audio, SegmenterOptions()), scheduler, options)
            if isinstance(e, Transcript)
        ]
    finally:
        await scheduler.stop()
    return out, t


async def test_a_long_utterance_final_decodes_only_its_tail_and_keeps_every_word() -> None:
    audio = spoken(24)  # ~9.5 s of speech, no pause the segmenter would see
    out, t = await run(audio, AsrOptions(commit=ON))
    finals = [x for x in out if x.is_final]
    assert len(finals) == 1
    assert finals[0].text == " ".join(f"w{k}" for k in range(1, 25))
    last_clip = t.clips[-1][0]
    assert last_clip < 0.5 * len(audio)  # the final's decode: the uncommitted tail only
    assert "w1 w2" in t.clips[-1][2]  # with the committed text as its prompt
    starts = [w.start_s for w in finals[0].words]
    assert starts == sorted(starts)
    assert abs(starts[0] - (1.0 + 0.3)) < 0.05  # call time: first sample 16000 + 0.3 s lead
    partials = [x.text for x in out if not x.is_final]
    assert partials and all(p.startswith("w1 ") or p == "w1" for p in partials)


async def test_without_commits_the_final_decodes_the_whole_utterance() -> None:
    audio = spoken(24)
    out, t = await run(audio, AsrOptions(commit=CommitOptions(enabled=False)))
    finals = [x for x in out if x.is_final]
    assert finals[0].text == " ".join(f"w{k}" for k in range(1, 25))
    assert t.clips[-1][0] > 0.8 * len(audio)


async def test_a_piece_decoded_at_a_pause_is_committed_once_speech_resumes() -> None:
    audio = spoken(14, pause_after=8)  # a 200 ms pause after ~3 s of words
    out, t = await run(audio, AsrOptions(partials=False, commit=ON))
    finals = [x for x in out if x.is_final]
    assert [f.text for f in finals] == [" ".join(f"w{k}" for k in range(1, 15))]
    final_clip, words, prompt = t.clips[-1]
    assert words and final_clip < 0.6 * len(audio)
    assert prompt.endswith("w8")


def test_two_agreeing_hypotheses_commit_the_words_that_end_before_the_hold() -> None:
    audio = spoken(10)
    c = Commitment(CommitOptions(enabled=True, after_s=2.0, hold_s=1.0))
    words = tuple(
        Word(f"w{k}", 0.3 + (k - 1) * 0.38, 0.3 + (k - 1) * 0.38 + 0.3, 0.9) for k in range(1, 9)
    )
    clip = audio[: int(3.3 * SAMPLE_RATE_HZ)]
    first = Recognition(" ".join(w.text for w in words[:7]), words[:7], 0.0, 0.0, 1.0)
    assert not c.observe(0, clip, first)  # one hypothesis: nothing agreed yet
    other = tuple(Word("x" if w.text == "w4" else w.text, w.start_s, w.end_s, 0.9) for w in words)
    second = Recognition("", other, 0.0, 0.0, 1.0)
    assert c.observe(0, audio[: int(3.6 * SAMPLE_RATE_HZ)], second)
    assert c.text == "w1 w2 w3"  # agreement stops at the word they disagree on
    gap_lo, gap_hi = 0.3 + 2 * 0.38 + 0.3, 0.3 + 3 * 0.38
    assert gap_lo * SAMPLE_RATE_HZ <= c.cut <= gap_hi * SAMPLE_RATE_HZ  # cut in the silence


def test_merge_puts_tail_words_after_the_pieces_in_utterance_time() -> None:
    c = Commitment(ON)
    head = Recognition(
        "Hello there.", (Word("Hello", 0.1, 0.4, 0.9), Word("there.", 0.5, 0.9, 0.9)), 0.0, 0.0, 1.0
    )
    assert c.commit_piece(0, 2 * SAMPLE_RATE_HZ, head)
    tail = Recognition("Bye.", (Word("Bye.", 0.2, 0.5, 0.8),), 0.1, -0.2, 1.0)
    rec = merge(c.pieces, tail, c.cut)
    assert rec is not None and rec.text == "Hello there. Bye."
    assert [(w.text, w.start_s) for w in rec.words][-1] == ("Bye.", 2.2)
    assert not c.commit_piece(0, 4 * SAMPLE_RATE_HZ, head)  # not from the cut: refused


def test_quietest_finds_the_silence_between_two_words() -> None:
    audio = spoken(3)
    gap = int((0.3 + 0.3) * SAMPLE_RATE_HZ)
    at = quietest(audio, gap - 1600, gap + 2880)
    assert gap <= at <= gap + int(GAP_S * SAMPLE_RATE_HZ)


def test_words_heard_again_across_an_overlap_are_dropped_once() -> None:
    """After a word cut, a decode from before the cut keeps only the words past it: the
    committed words it hears again (the first maybe as a fragment) are not repeated."""
    said = (Word("to", 0.0, 0.2, 0.9), Word("counteract", 0.2, 0.8, 0.9))
    pieces = [Piece(0, int(0.85 * SAMPLE_RATE_HZ), "to counteract", said, clean=False)]
    start = decode_start(pieces, 0.5)
    assert start == int(0.35 * SAMPLE_RATE_HZ)
    heard = (Word("act", 0.0, 0.45, 0.9), Word("a", 0.5, 0.6, 0.9), Word("watch.", 0.6, 1.0, 0.9))
    rec = Recognition("act a watch.", heard, 0.0, 0.0, 1.0)
    assert tail_text(pieces, rec, start)[0] == "a watch."
    fresh = (Word("a", 0.55, 0.65, 0.9), Word("watch", 0.65, 1.0, 0.9), Word(".", 1.0, 1.0, 0.9))
    text, words = tail_text(pieces, Recognition("a watch.", fresh, 0.0, 0.0, 1.0), start)
    assert text == "a watch." and [w.text for w in words] == ["a", "watch", "."]
    assert words[0].start_s == 0.55 + start / SAMPLE_RATE_HZ  # utterance time
