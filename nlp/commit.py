"""``Commitment``: the stable prefix of one utterance, so a long utterance's final decodes only
its tail.

Whisper re-decoding a growing clip costs time in proportion to its length (encoder window,
one decoder step per token, alignment): a 15 s utterance took ~0.85 s to decode against
~0.25 s for a 2 s one, and that was the latency of its final. So the audio of an utterance is
committed piece by piece while it is spoken, and every later decode (partial, speculative,
final) covers only the audio from ``decode_start``, with the committed text as Whisper's
prompt:

- a word commit: once the uncommitted audio is ``after_s`` long, partials carry word times;
  the words two consecutive partial hypotheses of the same audio agree on (text, in order),
  and that end at least ``hold_s`` before the newer hypothesis's end, are committed, and the
  cut goes to the quietest 10 ms between the last committed word and the next one. Word
  times are the decoder's cross-attention estimates and a quiet 10 ms may be a stop inside a
  word, so later decodes start ``overlap_s`` before such a cut, and their words that end
  before it (or repeat the last committed word) are dropped: a word the cut split is heard
  whole once;
- a piece commit: a speculative decode that ran at a pause of at least ``pause_ms`` (the
  segmenter's ``UtterancePaused``) and covers ``min_piece_s`` or more is committed whole, cut
  at that pause (no overlap: the cut is silence), once speech resumes.

Times of committed words are utterance-relative seconds. Sync core, no clock, no model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from audio.chunk import SAMPLE_RATE_HZ, Samples
from nlp.transcript import Recognition, Word

_FRAME = SAMPLE_RATE_HZ // 100  # 10 ms


@dataclass(frozen=True, slots=True)
class CommitOptions:
    enabled: bool = False  # off by default: +1.0/+1.6 WER points on real calls (docs/pipeline.md)
    after_s: float = 8.0  # uncommitted audio from which partials carry words and commit
    hold_s: float = 1.5  # words ending this close to a hypothesis's end stay open
    min_piece_s: float = 2.0  # a speculative piece shorter than this is not committed
    overlap_s: float = 0.5  # decodes start this much before a word cut

    def __post_init__(self) -> None:
        if not 0 < self.hold_s < self.after_s:
            raise ValueError("need 0 < hold_s < after_s")
        if self.min_piece_s <= 0 or self.overlap_s < 0:
            raise ValueError("need min_piece_s > 0 and overlap_s >= 0")


@dataclass(frozen=True, slots=True)
class Piece:
    start: int  # samples from the utterance start: the previous cut
    end: int  # this piece's cut
    text: str
    words: tuple[Word, ...]  # utterance-relative seconds
    clean: bool  # cut at a pause: later decodes need no overlap


def join_text(parts: Iterable[str]) -> str:
    return " ".join(t.strip() for t in parts if t.strip())


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9']", "", text.lower())


def _shift(words: tuple[Word, ...], by_s: float) -> tuple[Word, ...]:
    return tuple(Word(w.text, w.start_s + by_s, w.end_s + by_s, w.probability) for w in words)


def quietest(audio: Samples, lo: int, hi: int) -> int:
    """The sample at the centre of the quietest 10 ms frame of ``audio[lo:hi]``."""
    lo, hi = max(0, lo), min(len(audio), hi)
    n = (hi - lo) // _FRAME
    if n < 1:
        return max(0, min(lo, len(audio)))
    frames = np.asarray(audio[lo : lo + n * _FRAME], np.float32).reshape(n, _FRAME)
    return lo + int(np.argmin((frames**2).mean(axis=1))) * _FRAME + _FRAME // 2


def decode_start(pieces: list[Piece], overlap_s: float) -> int:
    """Where a decode after ``pieces`` starts: their cut, less the overlap after a word cut."""
    if not pieces:
        return 0
    last = pieces[-1]
    return last.end if last.clean else max(last.start, last.end - int(overlap_s * SAMPLE_RATE_HZ))


def new_words(pieces: list[Piece], rec: Recognition, start: int) -> tuple[Word, ...] | None:
    """The words of ``rec`` (a decode of the audio from ``start``) past the pieces' cut, in
    utterance time; None when ``rec`` has no word times and so cannot be trimmed. Across an
    overlap, the leading words that repeat the last committed ones (the first may be the end
    of one: "act" of "counteract") are dropped; when none repeat, the words that end before
    the cut."""
    if not rec.words:
        return None if rec.text.strip() else ()
    words = _shift(rec.words, start / SAMPLE_RATE_HZ)
    if not pieces or pieces[-1].end <= start:
        return words
    start_s = start / SAMPLE_RATE_HZ
    covered = [w for p in pieces for w in p.words if w.end_s > start_s - 0.1]
    repeated = _repeated(covered, words)
    if repeated:
        return words[repeated:]
    cut_s = pieces[-1].end / SAMPLE_RATE_HZ
    return tuple(w for w in words if w.end_s > cut_s)


def _repeated(before: list[Word], tail: tuple[Word, ...]) -> int:
    """How many leading ``tail`` words repeat a suffix of ``before`` (the longest suffix)."""
    for j in range(len(before)):
        suffix = before[j:]
        if len(suffix) > len(tail):
            continue
        if all(
            _same(a.text, b.text, k == 0)
            for k, (a, b) in enumerate(zip(suffix, tail, strict=False))
        ):
            return len(suffix)
    return 0


def _same(committed: str, heard: str, first: bool) -> bool:
    a, b = _norm(committed), _norm(heard)
    return bool(b) and (a == b or (first and len(b) >= 2 and a.endswith(b)))


def join_words(words: Iterable[Word]) -> str:
    """Word texts as text: punctuation Whisper split off ("thereof", ".") rejoins its word."""
    out: list[str] = []
    for w in words:
        t = w.text.strip()
        if out and t and not any(c.isalnum() for c in t):
            out[-1] += t
        elif t:
            out.append(t)
    return " ".join(out)


def tail_text(pieces: list[Piece], rec: Recognition, start: int) -> tuple[str, tuple[Word, ...]]:
    """What a decode from ``start`` adds after ``pieces``: its text and utterance-time words."""
    words = new_words(pieces, rec, start)
    if words is None:  # no word times (a clean cut, or no pieces): the text is all new
        return rec.text.strip(), ()
    if not pieces or pieces[-1].end <= start:
        return rec.text.strip(), words
    return join_words(words), words


class Commitment:
    """One utterance's committed pieces and the cut after them."""

    def __init__(self, options: CommitOptions) -> None:
        self.options = options
        self.pieces: list[Piece] = []
        self._open: tuple[int, tuple[Word, ...]] | None = None  # (cut, uncommitted words)

    @property
    def cut(self) -> int:
        return self.pieces[-1].end if self.pieces else 0

    @property
    def start(self) -> int:
        """Where the next decode starts (``decode_start``)."""
        return decode_start(self.pieces, self.options.overlap_s)

    @property
    def text(self) -> str:
        return join_text(p.text for p in self.pieces)

    def upto(self, sample: int) -> list[Piece]:
        """The committed pieces that end at or before ``sample``."""
        return [p for p in self.pieces if p.end <= sample]

    def wants_words(self, n_samples: int) -> bool:
        """Whether a partial of an ``n_samples`` clip should carry word times: to commit, or
        to be trimmed after a word cut."""
        if not self.options.enabled:
            return False
        overlapped = bool(self.pieces) and not self.pieces[-1].clean
        return overlapped or n_samples - self.cut >= self.options.after_s * SAMPLE_RATE_HZ

    def observe(self, start: int, audio: Samples, rec: Recognition) -> bool:
        """A partial hypothesis, with words, of ``audio[start:]`` (``audio`` from the
        utterance start). Commits what it and the previous hypothesis agree on; True if the
        cut moved."""
        if start != self.start or not self.options.enabled:
            self._open = None
            return False
        words = new_words(self.pieces, rec, start)
        if not words:
            return False
        cut = self.cut
        previous = self._open[1] if self._open is not None and self._open[0] == cut else ()
        self._open = (cut, words)
        agreed = 0
        for a, b in zip(previous, words, strict=False):
            if _norm(a.text) != _norm(b.text) or not _norm(a.text):
                break
            agreed += 1
        limit_s = len(audio) / SAMPLE_RATE_HZ - self.options.hold_s
        while agreed and words[agreed - 1].end_s > limit_s:
            agreed -= 1
        if agreed == 0:
            return False
        last = words[agreed - 1]
        following = words[agreed].start_s if agreed < len(words) else last.end_s + 0.1
        lo = int((min(last.end_s, following) - 0.05) * SAMPLE_RATE_HZ)
        hi = int((max(last.end_s, following) + 0.05) * SAMPLE_RATE_HZ)
        new_cut = max(quietest(audio, lo, hi), cut + _FRAME)
        kept = words[:agreed]
        self.pieces.append(Piece(cut, new_cut, join_words(kept), kept, False))
        self._open = (new_cut, words[agreed:])
        return True

    def commit_piece(self, start: int, end: int, rec: Recognition) -> bool:
        """A speculative decode of ``[start, end)`` that ended at a pause, speech since: True
        if committed whole."""
        long_enough = end - self.cut >= self.options.min_piece_s * SAMPLE_RATE_HZ
        if start != self.start or not long_enough or not self.options.enabled:
            return False
        text, words = tail_text(self.pieces, rec, start)
        if not text:
            return False
        self.pieces.append(Piece(self.cut, end, text, words, True))
        self._open = None
        return True


def merge(pieces: list[Piece], tail: Recognition | None, tail_start: int) -> Recognition | None:
    """One recognition of the utterance: the committed pieces, then what the tail decoded
    from ``tail_start`` adds (None: nothing after the pieces, or no speech in the tail)."""
    if not pieces:
        return tail
    words = [w for p in pieces for w in p.words]
    texts = [p.text for p in pieces]
    if tail is not None:
        text, more = tail_text(pieces, tail, tail_start)
        words += more
        texts.append(text)
    return Recognition(
        text=join_text(texts),
        words=tuple(words),
        no_speech_prob=0.0,  # the pieces were speech when committed
        avg_logprob=tail.avg_logprob if tail is not None else 0.0,
        compression_ratio=tail.compression_ratio if tail is not None else 1.0,
    )
