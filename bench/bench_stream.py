"""Latency benchmark of the streaming core and coaching, per REFERENCE.md's definitions.

Starts the real server (``cuecard serve`` on a free loopback port), replays an espeak-ng
two-speaker call at 1.0x in 20 ms frames with the simulator, and reports:

- final latency: wall time a final reached the client minus the audio time its speech ended
  (ground truth from the rendered call: the end of the turn containing the final's last word);
- partial latency: first partial of an utterance minus the audio time its speech began;
- card latency: card received minus the end of the customer utterance that triggered it;
- ASR load: the Whisper workers' busy seconds (``GET /v1/stats``) per second of call audio,
  both channels, partials and speculative decodes included: the share of one ASR thread a
  call uses at 1.0x;
- insight stage: the final insight of an utterance received minus its final transcript
  received (intent, entities, sentiment, prosody; what the insight stage adds to the path);
- WER of streamed finals against offline decoding of each channel with faster-whisper's
  standard 30 s path, same model.

The first turn pair is a warm-up excluded from the figures. Usage:
``python -m bench.bench_stream [--speed 1.0] [--runs 1] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

# The measurement lives in bench.metrics; these names stay importable from here.
from bench.metrics import WARMUP_S as WARMUP_S
from bench.metrics import asr_busy_s as asr_busy_s
from bench.metrics import measure as measure
from bench.metrics import pct as pct
from bench.metrics import turn_of as turn_of
from bench.metrics import wer as wer
from clients.callgen import DEMO_CALL, RenderedCall, Turn, render
from clients.simulator import SimOptions, simulate

BENCH_CALL: tuple[Turn, ...] = (
    *DEMO_CALL,
    Turn("rep", "Let me share a quick overview of how the product works for a team like yours."),
    Turn("customer", "That would help. Is there an integration with our phone system?"),
    Turn("rep", "Yes, we integrate with most softphones and with Twilio out of the box."),
    Turn("customer", "We are also talking to another vendor, so timing matters for us."),
    Turn("rep", "Understood. We can start with a pilot for ten reps in December."),
    Turn("customer", "A pilot sounds good. Please send the contract to our legal team."),
)


def offline_wer(path: Path, streamed: list[dict[str, Any]], call: RenderedCall) -> dict[str, float]:
    """WER against the script for streamed finals and for the standard 30 s offline path."""
    import soundfile as sf
    from faster_whisper import WhisperModel

    from models.registry import whisper_path

    model = WhisperModel(
        str(whisper_path("tiny.en")), device="cpu", compute_type="int8", cpu_threads=2
    )
    audio, _ = sf.read(str(path), dtype="float32")
    out: dict[str, float] = {}
    refs, streams, offs = [], [], []
    for ch, speaker in enumerate(("rep", "customer")):
        ref = " ".join(u.text for u in call.utterances if u.speaker == speaker)
        segs, _ = model.transcribe(
            audio[:, ch],
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        off = " ".join(s.text for s in segs)
        stream = " ".join(
            e["text"]
            for e in streamed
            if e["type"] == "transcript" and e["is_final"] and e["speaker"] == speaker
        )
        refs.append(ref)
        streams.append(stream)
        offs.append(off)
    out["wer_streamed"] = wer(" ".join(refs), " ".join(streams))
    out["wer_offline_30s"] = wer(" ".join(refs), " ".join(offs))
    out["delta_wer_points"] = 100 * (out["wer_streamed"] - out["wer_offline_30s"])
    return out


async def run(speed: float, runs: int) -> dict[str, Any]:
    from clients.localserver import start_server, stop_server

    call = render(BENCH_CALL)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-call.wav"
        call.write(path)
        server = start_server(Path(tmp) / "data")
        try:
            all_lat: dict[str, list[float]] = {}
            events: list[dict[str, Any]] = []
            busy_s = 0.0
            for _ in range(runs):
                before = asr_busy_s(server)
                result = await simulate(
                    path, SimOptions(server=server.ws, token=server.token, speed=speed)
                )
                busy_s += asr_busy_s(server) - before
                events = result.events
                for k, v in measure(events, call, speed).items():
                    all_lat.setdefault(k, []).extend(v)
        finally:
            stop_server(server)
        quality = offline_wer(path, events, call)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}, no GPU",
        "call_audio_s": round(call.duration_s, 1),
        "speed": speed,
        "runs": runs,
        "asr_busy_per_audio_s": round(busy_s / (runs * call.duration_s), 3),
    }
    for k, xs in all_lat.items():
        report[f"{k}_latency_s"] = {
            "n": len(xs),
            "p50": round(pct(xs, 50), 3),
            "p95": round(pct(xs, 95), 3),
            "mean": round(statistics.fmean(xs), 3) if xs else None,
        }
    report.update({k: round(v, 4) for k, v in quality.items()})
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    report = asyncio.run(run(args.speed, args.runs))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
