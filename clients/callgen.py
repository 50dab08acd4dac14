"""Scripted calls rendered with espeak-ng: speech with known text and known timing.

A script is a list of turns ``(speaker, text)``; each turn is rendered by espeak-ng in the
speaker's voice, trimmed of its leading and trailing silence, and placed on a stereo timeline
(channel 0 = rep, channel 1 = customer) after ``gap_s`` of silence. The result carries the
ground truth every test and benchmark needs: each utterance's text and the audio time its
speech starts and ends.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from audio.chunk import SAMPLE_RATE_HZ, Samples, Speaker

VOICES: dict[Speaker, str] = {"rep": "en-us", "customer": "en-us+f3", "unknown": "en-gb"}


@dataclass(frozen=True, slots=True)
class Turn:
    speaker: Speaker
    text: str
    gap_s: float = 0.8  # silence before this turn
    overlap_s: float = 0.0  # start this much before the previous turn ends (interruptions)
    rate_wpm: int = 165
    pitch: int = 50
    amplitude: int = 100


@dataclass(frozen=True, slots=True)
class Spoken:
    speaker: Speaker
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class RenderedCall:
    rep: Samples
    customer: Samples
    utterances: tuple[Spoken, ...]

    @property
    def duration_s(self) -> float:
        return len(self.rep) / SAMPLE_RATE_HZ

    def stereo(self) -> Samples:
        return np.stack([self.rep, self.customer], axis=1)

    def write(self, path: Path) -> None:
        sf.write(str(path), self.stereo(), SAMPLE_RATE_HZ, subtype="PCM_16")


def espeak(text: str, voice: str, rate_wpm: int, pitch: int, amplitude: int) -> Samples:
    """16 kHz float32 speech of ``text``, leading and trailing silence trimmed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install -y espeak-ng")
    wav = subprocess.run(
        [
            exe,
            "-v",
            voice,
            "-s",
            str(rate_wpm),
            "-p",
            str(pitch),
            "-a",
            str(amplitude),
            "--stdout",
            text,
        ],
        check=True,
        capture_output=True,
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32)
    return trim(audio)


def trim(audio: Samples, threshold: float = 0.01) -> Samples:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if len(loud) == 0:
        return audio[:0]
    return audio[loud[0] : loud[-1] + 1]


def render(
    turns: Sequence[Turn],
    lead_s: float = 0.5,
    tail_s: float = 1.5,
    voices: Mapping[Speaker, str] = VOICES,
) -> RenderedCall:
    """The turns on one stereo timeline; ``voices`` names the espeak-ng voice of each speaker
    (``en-gb-scotland``, ``en-us+f2``: ``espeak-ng --voices=en`` lists them)."""
    clips = [
        (t, espeak(t.text, voices[t.speaker], t.rate_wpm, t.pitch, t.amplitude)) for t in turns
    ]
    cursor = lead_s
    spans: list[Spoken] = []
    for turn, clip in clips:
        start = cursor + turn.gap_s - turn.overlap_s if spans else cursor
        end = start + len(clip) / SAMPLE_RATE_HZ
        spans.append(Spoken(turn.speaker, turn.text, round(start, 3), round(end, 3)))
        cursor = max(cursor, end)
    total = int((cursor + tail_s) * SAMPLE_RATE_HZ)
    tracks = {"rep": np.zeros(total, np.float32), "customer": np.zeros(total, np.float32)}
    for (turn, clip), span in zip(clips, spans, strict=True):
        i = int(span.start_s * SAMPLE_RATE_HZ)
        track = tracks["customer" if turn.speaker == "customer" else "rep"]
        track[i : i + len(clip)] += clip
    return RenderedCall(tracks["rep"], tracks["customer"], tuple(spans))


DEMO_CALL: tuple[Turn, ...] = (
    Turn("rep", "Hi, this is Sam from Acme. Thanks for taking the time to talk today."),
    Turn("customer", "Sure, happy to chat. We are looking at tools for our sales team."),
    Turn("rep", "Great. How many reps are on the team, and what are you using now?"),
    Turn(
        "customer",
        "About thirty reps. We use Salesforce, but honestly the price is too high for us.",
    ),
    Turn("rep", "Understood. Most teams your size see the cost come back within one quarter."),
    Turn("customer", "I would need to run this by our VP of sales before we commit to anything."),
    Turn("rep", "Of course. Would it help if I sent a proposal she can review?"),
    Turn("customer", "Yes, please send the proposal by Friday, and how long does onboarding take?"),
    Turn("rep", "Onboarding takes about two weeks. I will send the proposal by Friday."),
    Turn("customer", "Great, let's schedule a follow up call next Tuesday with our VP."),
)
