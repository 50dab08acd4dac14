"""The real-speech development set (``../shared/real-speech``) as scored items.

- ``items()``: every file or channel that has a reference, with the README's scoring groups;
- ``compose_calls()``: two-speaker calls built from the read files (one real speaker per turn,
  one channel per side, seeded 0.3-1.5 s gaps, a low noise floor on both lines);
- ``telephone()``: the Twilio path: 8 kHz mu-law, decoded and resampled by ``audio.codec``
  exactly as the server does;
- ``normalise()`` / ``edits()``: the README's WER normaliser (applied to reference and
  hypothesis alike) and word-level edit counts, summed over a group's words.

The set is for evaluation only: never train on it or ship it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.codec import ChannelDecoder, StreamFormat, mulaw_encode

ROOT = Path(os.environ.get("CUECARD_REAL_SPEECH", "/work/shared/real-speech"))

_FOLD = {
    "upstairs": "up stairs",
    "downstairs": "down stairs",
    "taboo": "tabu",
    "practiced": "practised",
    "mr": "mister",
    "abby": "abbie",
    "oh": "zero",
    "o": "zero",
}
_DIGITS = "zero one two three four five six seven eight nine".split()


def normalise(text: str) -> list[str]:
    """The README's normaliser: NFKC, lower case, punctuation out, spelling variants folded,
    digits spelled out one by one, ``oh``/``o`` as ``zero``."""
    s = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'").lower()
    s = re.sub(r"[-\u2010-\u2015]", " ", s)
    s = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", s)
    s = re.sub(r"[^a-z0-9' ]", " ", s)
    s = re.sub(r"\d", lambda m: " " + _DIGITS[int(m.group())] + " ", s)
    return " ".join(_FOLD.get(w, w) for w in s.split()).split()


def edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after ``normalise``."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


@dataclass(frozen=True, slots=True)
class Item:
    """One scored channel: its audio, its reference and the groups it counts in."""

    name: str
    audio: Samples
    reference: str
    groups: tuple[str, ...]
    turns: tuple[tuple[float, float], ...] = ()  # composed calls: speech spans, seconds


def _group(entry: dict[str, object]) -> str:
    file = str(entry["file"])
    for prefix, group in (
        ("read/librispeech", "librispeech"),
        ("read/librivox", "librivox"),
        ("read/noizeus", "noizeus"),
        ("read/misc", "misc"),
        ("conversation/fw_stereo", "two_channel"),
    ):
        if file.startswith(prefix):
            return group
    return "meeting"


def _read(path: Path) -> Samples:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE_HZ, path
    return np.ascontiguousarray(audio.T)


def items() -> list[Item]:
    """Every file (and channel) of the set that has a reference."""
    manifest = json.loads((ROOT / "manifest.json").read_text())
    out: list[Item] = []
    for entry in manifest["files"]:
        ref = entry["reference"]
        if ref is None:
            continue
        channels = _read(ROOT / entry["file"])
        groups = [_group(entry)]
        if entry["audio"]["band_limited_4khz"]:
            groups.append("band_limited")
        name = Path(str(entry["file"])).stem
        if "text_by_channel" in ref:
            for ch, text in sorted(ref["text_by_channel"].items()):
                out.append(Item(f"{name}:{ch}", channels[int(ch)], text, tuple(groups)))
        else:
            out.append(Item(name, channels[0], ref["text"], tuple(groups)))
    return out


# Turns of the composed calls, by item name: (rep, customer) alternate, rep first.
CALLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "call_audiobook": (
        tuple(f"sense_and_sensibility_01_austen_64kb-0{n}" for n in (870, 880, 890, 920, 930)),
        ("121-127105-0000", "1320-122612-0008", "260-123286-0006", "2300-131720-0008"),
    ),
    "call_mixed": (
        ("6829-68769-0004", "7021-79730-0001", "8555-284447-0000", "3570-5694-0005"),
        ("LDC93S1", "an4_10001-90210-01803", "jfk", "sp07_car_sn15", "sp11_street_sn15"),
    ),
}
NOISE_FLOOR = 3e-4  # about -70 dBFS RMS: a quiet line, not digital silence


def _speech_span(audio: Samples) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, len(audio))


def compose_calls(pool: list[Item], seed: int = 7) -> list[Item]:
    """Two channels per call (``NAME:rep``, ``NAME:customer``), turns taking turns."""
    by_name = {i.name: i for i in pool}
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    for call, (rep, customer) in CALLS.items():
        order = [("rep", n) for n in rep]
        for k, n in enumerate(customer):
            order.insert(2 * k + 1, ("customer", n))
        placed: list[tuple[str, Item, int]] = []
        cursor = int(0.5 * SAMPLE_RATE_HZ)
        for side, name in order:
            item = by_name[name]
            placed.append((side, item, cursor))
            cursor += len(item.audio) + int(rng.uniform(0.3, 1.5) * SAMPLE_RATE_HZ)
        total = cursor + SAMPLE_RATE_HZ
        for side in ("rep", "customer"):
            track = (rng.standard_normal(total) * NOISE_FLOOR).astype(np.float32)
            refs, spans = [], []
            for s, item, at in placed:
                if s != side:
                    continue
                track[at : at + len(item.audio)] += item.audio
                lo, hi = _speech_span(item.audio)
                spans.append(((at + lo) / SAMPLE_RATE_HZ, (at + hi) / SAMPLE_RATE_HZ))
                refs.append(item.reference)
            out.append(Item(f"{call}:{side}", track, " ".join(refs), ("call",), tuple(spans)))
    return out


def telephone(audio: Samples) -> Samples:
    """16 kHz audio as a Twilio leg delivers it to the server: 8 kHz mu-law in 20 ms frames,
    decoded and resampled to 16 kHz by ``audio.codec.ChannelDecoder``."""
    narrow = soxr.resample(audio, SAMPLE_RATE_HZ, 8000, quality="HQ").astype(np.float32)
    payload = mulaw_encode(narrow)
    decoder = ChannelDecoder(StreamFormat("mulaw", 8000, ("customer",)), 1 << 20)
    chunks = [
        c.samples for i in range(0, len(payload), 160) for c in decoder.feed(payload[i : i + 160])
    ]
    chunks += [c.samples for c in decoder.flush()]
    out = np.concatenate(chunks).astype(np.float32)
    return out[: len(audio)] if len(out) >= len(audio) else np.pad(out, (0, len(audio) - len(out)))
