"""``cuecard enroll --rep REP_ID FILE.wav``: store a rep's voiceprint for mixed mono calls.

The sample (any rate, mono or stereo mixed down; 20 s or more of the rep alone speaking is
best) is cut into utterances by the same VAD and segmenter as a call, embedded by the call's
speaker encoder, and averaged into one voiceprint under ``DATA_DIR/voiceprints``. On a mixed
call whose start names this ``rep_id``, the voice close to it is the rep's. ``--delete``
removes it. Exit 0 when stored, 2 when the sample holds too little speech.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.diarize import voiceprint
from audio.segmenter import Segmenter, SegmenterOptions, UtteranceEnded
from audio.vad import DetectorFactory
from server.settings import Settings
from server.voiceprints import VoiceprintStore

MIN_SPEECH_S = 3.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("enroll", help="store a rep's voiceprint for mixed mono calls")
    parser.add_argument("file", nargs="?", help="a WAV of the rep speaking alone")
    parser.add_argument("--rep", required=True, help="the rep_id that calls' start messages use")
    parser.add_argument("--delete", action="store_true", help="remove the rep's voiceprint")
    parser.add_argument("--data-dir")
    parser.set_defaults(func=run_enroll)


def run_enroll(args: argparse.Namespace) -> int:
    from models.registry import load_detectors, load_voice_encoder

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else None
    settings = Settings.from_env(data_dir=data_dir)
    store = VoiceprintStore(settings.data_dir / "voiceprints")
    if args.delete:
        print("deleted" if store.delete(args.rep) else "no voiceprint", args.rep)
        return 0
    if not args.file:
        print("cuecard enroll: FILE.wav is required (or --delete)")
        return 2
    encoder = load_voice_encoder()
    clips = speech_clips(read_mono(Path(args.file)), load_detectors(settings.vad))
    speech_s = sum(len(c) for c in clips) / SAMPLE_RATE_HZ
    if speech_s < MIN_SPEECH_S:
        print(
            f"cuecard enroll: {speech_s:.1f} s of speech in {args.file}; need {MIN_SPEECH_S:.0f} s"
        )
        return 2
    path = store.save(args.rep, voiceprint(encoder, clips), encoder.name, speech_s)
    print(f"enrolled {args.rep}: {speech_s:.1f} s of speech -> {path}")
    return 0


def read_mono(path: Path) -> Samples:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, rate, SAMPLE_RATE_HZ)
    return np.asarray(mono, np.float32)


def speech_clips(audio: Samples, detectors: DetectorFactory) -> list[Samples]:
    """The utterances the call's VAD and segmenter find in ``audio``."""
    detector = detectors()
    segmenter = Segmenter("rep", SegmenterOptions())
    n = detector.frame_samples
    clips: list[Samples] = []
    for i in range(0, len(audio) - n + 1, n):
        frame = np.ascontiguousarray(audio[i : i + n])
        events = segmenter.feed(frame, detector.probability(frame))
        clips += [e.samples for e in events if isinstance(e, UtteranceEnded)]
    clips += [e.samples for e in segmenter.finish() if isinstance(e, UtteranceEnded)]
    return clips
