"""What the benchmarks measure on the events a replay received, per REFERENCE.md's definitions.

Shared by ``bench_stream``, ``bench_capacity``, ``bench_cards`` and ``python -m bench``:

- ``latency_samples``: one ``LatencySample`` per final, first partial, customer card and final
  insight of a call, stamped with the wall time it arrived, so a latency can be plotted over
  the replay (transcript lag) as well as summarised;
- ``measure``: the same samples grouped by kind (the older benchmarks' shape);
- ``summary``: n, p50, p95, mean and max of one kind; ``lag_growth``: whether a replay's final
  latency trends upwards over the replay (a backlog the server does not clear);
- ``server_stats``: ``GET /v1/stats``; ``wer``: jiwer over ``normalize``d words.

Ground truth is the rendered call's ``Spoken`` turns: a final's speech end is its last word's
end, capped at the end of the scripted turn it falls in; audio before ``WARMUP_S`` is left out.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from clients.callgen import RenderedCall, Spoken

WARMUP_S = 5.0
LatencyKind = Literal["final", "partial", "card", "insight_stage"]
KINDS: tuple[LatencyKind, ...] = ("final", "partial", "card", "insight_stage")


@dataclass(frozen=True, slots=True)
class LatencySample:
    kind: LatencyKind
    received_s: float  # since the call's first audio frame, on the replaying process's clock
    latency_s: float


def pct(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(ref: str, hyp: str) -> float:
    import jiwer

    return float(jiwer.wer(" ".join(normalize(ref)), " ".join(normalize(hyp))))


def turn_of(spoken: Sequence[Spoken], speaker: str, t_s: float) -> Spoken | None:
    """The ground-truth turn of ``speaker`` whose speech contains audio time ``t_s``."""
    for u in spoken:
        if u.speaker == speaker and u.start_s - 0.3 <= t_s <= u.end_s + 0.3:
            return u
    return None


def latency_samples(
    events: Sequence[dict[str, Any]],
    spoken: Sequence[Spoken],
    speed: float = 1.0,
    warmup_s: float = WARMUP_S,
) -> list[LatencySample]:
    """Every latency one call's events show, in arrival order (see the module docstring)."""
    out: list[LatencySample] = []
    seen_partial: set[str] = set()
    final_at: dict[str, float] = {}
    for e in events:
        at = float(e["received_s"])
        if e["type"] == "insight" and e["is_final"] and e["utterance_id"] in final_at:
            out.append(LatencySample("insight_stage", at, at - final_at[e["utterance_id"]]))
        if e["type"] == "transcript":
            turn = turn_of(spoken, e["speaker"], e["end_s"] if e["is_final"] else e["start_s"])
            if turn is None or turn.start_s < warmup_s:
                continue
            if e["is_final"]:
                final_at[e["utterance_id"]] = at
                words = e.get("words") or []
                speech_end = min(words[-1]["end_s"] if words else e["end_s"], turn.end_s)
                out.append(LatencySample("final", at, at - speech_end / speed))
            elif e["utterance_id"] not in seen_partial:
                seen_partial.add(e["utterance_id"])
                speech_start = max(e["start_s"], turn.start_s)
                out.append(LatencySample("partial", at, at - speech_start / speed))
        elif _customer_card(e, warmup_s) and not waited(e):
            out.append(LatencySample("card", at, at - float(e["audio_end_s"]) / speed))
    return out


def rate_limited_cards(events: Sequence[dict[str, Any]], warmup_s: float = WARMUP_S) -> int:
    """The customer cards ``latency_samples`` leaves out: they waited for a slot of the deck's
    rate limit (``waited_s``), late by design, not by the pipeline."""
    return sum(1 for e in events if _customer_card(e, warmup_s) and waited(e))


def _customer_card(e: dict[str, Any], warmup_s: float) -> bool:
    """An issued card on what the customer said, after the warm-up."""
    if e["type"] != "card" or e.get("state") != "issued" or not e.get("evidence"):
        return False
    end = float(e.get("audio_end_s") or 0.0)
    return bool(e["evidence"].get("speaker") == "customer" and end > warmup_s)


def waited(e: dict[str, Any]) -> bool:
    """The card waited for a slot of the deck's rate limit (its ``waited_s``)."""
    return float(e.get("waited_s") or 0.0) > 0


def measure(
    events: list[dict[str, Any]], call: RenderedCall, speed: float
) -> dict[str, list[float]]:
    """Latencies of one call by kind: final, partial, card, insight_stage."""
    by_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    for s in latency_samples(events, call.utterances, speed):
        by_kind[s.kind].append(s.latency_s)
    return by_kind


def summary(xs: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, mean, max (seconds, 3 decimals); None where there is no sample."""
    if not xs:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
    return {
        "n": len(xs),
        "p50": round(pct(xs, 50), 3),
        "p95": round(pct(xs, 95), 3),
        "mean": round(statistics.fmean(xs), 3),
        "max": round(max(xs), 3),
    }


def lag_growth(points: Sequence[tuple[float, float]], limit_s: float = 0.2) -> dict[str, Any]:
    """Transcript lag over a replay: ``points`` are (wall time, final latency). The trend is a
    Theil-Sen line (the median of the pairwise slopes: one slow final does not tilt it);
    ``growth_s`` is its rise from the first final to the last, ``growing`` when that exceeds
    ``limit_s`` (a backlog the server does not clear). Needs 3 finals."""
    if len(points) < 3:
        return {"start_s": None, "end_s": None, "growth_s": None,
                "slope_s_per_min": None, "growing": None}  # fmt: skip
    t = np.array([p[0] for p in points], dtype=float)
    v = np.array([p[1] for p in points], dtype=float)
    i, j = np.triu_indices(len(t), k=1)
    apart = t[j] != t[i]
    slope = float(np.median((v[j] - v[i])[apart] / (t[j] - t[i])[apart])) if apart.any() else 0.0
    base = float(np.median(v - slope * t))
    start, end = base + slope * float(t.min()), base + slope * float(t.max())
    return {
        "start_s": round(start, 3),
        "end_s": round(end, 3),
        "growth_s": round(end - start, 3),
        "slope_s_per_min": round(60 * slope, 3),
        "growing": bool(end - start > limit_s),
    }


def server_stats(server: Any) -> dict[str, float]:
    """The numeric fields of ``GET /v1/stats`` (load counters since start-up)."""
    import httpx

    r = httpx.get(f"{server.http}/v1/stats", headers={"Authorization": f"Bearer {server.token}"})
    body = r.raise_for_status().json()
    return {k: float(v) for k, v in body.items() if isinstance(v, int | float)}


def asr_busy_s(server: Any) -> float:
    """Worker-seconds the recognizer has spent since start-up."""
    return server_stats(server)["asr_busy_s"]


def asr_workers(server: Any) -> int:
    return int(server_stats(server).get("asr_workers", 1))
