"""The calls ``python -m bench`` replays: scripted two-speaker calls, and real recordings.

Scripted calls are ``bench.card_scripts``' labelled sales calls (objections and other card
moments in known turns) rendered by espeak-ng in ``bench_card_accuracy``'s voices and paces
(US 165 wpm, British/Scottish 140 wpm, US/NYC 185 wpm). The quick set is five turns of two of
them in two voices (about 25 s each). Ground truth is the rendering's timeline.

``chained`` plays several calls of the set back to back as one longer call (the capacity
search's replays: a backlog shows over minutes, not seconds).

A real recording (``--real FILE.wav``) is a stereo file (channel 0 rep, 1 customer) or a mono
one (the customer). Its speech spans, the latency's ground truth, come from its own energy
envelope; its reference text, when there is one, from ``FILE.txt`` (mono) or ``FILE.rep.txt``
and ``FILE.customer.txt`` (stereo). A side without a reference is left out of the WER.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audio.chunk import SAMPLE_RATE_HZ, Samples, Speaker
from bench.bench_card_accuracy import VARIANTS, Variant, render_script
from bench.card_scripts import SCRIPTS, LabelledTurn
from clients.callgen import RenderedCall, Spoken

# The quick set: turns of two scripts (about 25 s of call each), an objection in each.
QUICK: tuple[tuple[str, slice, int], ...] = (
    ("software", slice(5, 10), 0),
    ("staffing", slice(0, 5), 2),
)


@dataclass(frozen=True, slots=True)
class BenchCall:
    """One call of the set: its audio and timeline, and what is known about it."""

    name: str
    call: RenderedCall
    source: str  # "espeak-ng <voices> <wpm>" or the file's path
    references: dict[str, str]  # speaker -> reference text; a side without one is absent
    objection_turns: tuple[int, ...] = ()  # indices in call.utterances labelled objection_*
    labels: tuple[frozenset[str], ...] = ()  # card kinds right for each turn (scripted calls)

    @property
    def audio_s(self) -> float:
        return self.call.duration_s


def scripted(name: str, turns: Sequence[LabelledTurn], v: Variant) -> BenchCall:
    call = render_script(turns, v)
    refs = {s: " ".join(t.text for t in turns if t.speaker == s) for s in ("rep", "customer")}
    objections = tuple(
        k for k, t in enumerate(turns) if any(x.startswith("objection_") for x in t.expect)
    )
    return BenchCall(
        f"{name}/{v.customer_voice}-{v.rate_wpm}wpm",
        call,
        f"espeak-ng {v.rep_voice} / {v.customer_voice}, {v.rate_wpm} wpm",
        {s: r for s, r in refs.items() if r},
        objections,
        tuple(t.expect for t in turns),
    )


def scripted_set(quick: bool) -> list[BenchCall]:
    """Quick: parts of two scripts in two voices; else every script in every voice (9 calls)."""
    if quick:
        return [scripted(name, SCRIPTS[name][part], VARIANTS[v]) for name, part, v in QUICK]
    return [scripted(name, turns, v) for v in VARIANTS for name, turns in SCRIPTS.items()]


def speech_spans(
    audio: Samples, speaker: Speaker, threshold: float = 0.02, min_gap_s: float = 0.6
) -> list[Spoken]:
    """Loud stretches of one channel, joined across pauses shorter than ``min_gap_s``."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return []
    gaps = np.flatnonzero(np.diff(loud) > min_gap_s * SAMPLE_RATE_HZ)
    starts = np.concatenate([[loud[0]], loud[gaps + 1]])
    ends = np.concatenate([loud[gaps], [loud[-1]]])
    return [
        Spoken(
            speaker, "", round(float(a) / SAMPLE_RATE_HZ, 3), round(float(b) / SAMPLE_RATE_HZ, 3)
        )
        for a, b in zip(starts, ends, strict=True)
        if b - a > 0.2 * SAMPLE_RATE_HZ
    ]


def real_call(path: Path) -> BenchCall:
    """A recording as a call (see the module docstring)."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if audio.shape[1] > 2:
        raise ValueError(f"{path}: {audio.shape[1]} channels; expected mono or stereo")
    if rate != SAMPLE_RATE_HZ:
        audio = soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32)
    customer = np.ascontiguousarray(audio[:, -1])
    rep = np.ascontiguousarray(audio[:, 0]) if audio.shape[1] == 2 else np.zeros_like(customer)
    spans = speech_spans(rep, "rep") + speech_spans(customer, "customer")
    spans.sort(key=lambda s: s.start_s)
    refs: dict[str, str] = {}
    sidecars = (
        {"rep": ".rep.txt", "customer": ".customer.txt"}
        if audio.shape[1] == 2
        else {"customer": ".txt"}
    )
    for speaker, suffix in sidecars.items():
        ref = path.with_name(path.stem + suffix)
        if ref.exists():
            refs[speaker] = ref.read_text().strip()
    return BenchCall(path.stem, RenderedCall(rep, customer, tuple(spans)), str(path), refs)


def chained(calls: Sequence[BenchCall], first: int, count: int, gap_s: float = 1.0) -> BenchCall:
    """``count`` calls of the set from index ``first`` (wrapping round), back to back."""
    parts = [calls[(first + k) % len(calls)] for k in range(count)]
    gap = np.zeros(int(gap_s * SAMPLE_RATE_HZ), np.float32)
    rep: list[Samples] = []
    customer: list[Samples] = []
    spoken: list[Spoken] = []
    labels: list[frozenset[str]] = []
    objections: list[int] = []
    at_s = 0.0
    for c in parts:
        objections += [len(spoken) + k for k in c.objection_turns]
        labels += list(c.labels) or [frozenset()] * len(c.call.utterances)
        spoken += [
            Spoken(u.speaker, u.text, round(u.start_s + at_s, 3), round(u.end_s + at_s, 3))
            for u in c.call.utterances
        ]
        rep += [c.call.rep, gap]
        customer += [c.call.customer, gap]
        at_s += c.audio_s + gap_s
    refs = {
        s: " ".join(c.references[s] for c in parts if s in c.references)
        for s in ("rep", "customer")
        if any(s in c.references for c in parts)
    }
    return BenchCall(
        " + ".join(c.name for c in parts),
        RenderedCall(np.concatenate(rep), np.concatenate(customer), tuple(spoken)),
        "; ".join(c.source for c in parts),
        refs,
        tuple(objections),
        tuple(labels),
    )
