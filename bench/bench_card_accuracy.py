"""Card accuracy on labelled scripted calls through the real server, at 1.0x.

The calls of ``bench.card_scripts`` (every turn labelled with the card kinds that are right for
it, hard negatives included) are rendered by espeak-ng in several voices and paces, one of
them at 8 kHz mu-law (``sox``) and streamed as Twilio Media Streams, and replayed at 1.0x into
``cuecard serve`` on a free loopback port (the calls of one rendering at the same time). Each
cue card (alerts are not counted) is matched through its evidence to the scripted turn it
quotes. Reported, over all renderings:

- ``precision``: issued cards (not withdrawn later) whose kind is right for their turn;
- ``false_cards_per_min``: issued cards that are not, per minute of call audio;
- ``recall``: labelled customer turns that got a right card (issued, updated or confirmed),
  or found one on screen: a card of a right kind sent less than ``update_min_interval_s``
  (8 s) before the turn, whose update the deck holds back by design (``on_screen``);
- ``latency_s``: per recalled customer turn, its first right card received minus the
  scripted end of the turn (REFERENCE.md's card latency; negative: a card from a partial,
  on screen before the customer finished);
- ``withdrawn``: provisional cards the final took back (on screen for a moment);
- ``held_by_rate_limit``: issued cards that waited for a slot of the deck's new cards a
  minute (their ``waited_s``); ``latency_not_held_s`` leaves those turns out:
  the pipeline's latency rather than the flood control's;
- ``rep_next_steps``: rep proposals the customer agreed to that got a next-step card quoting
  the proposal or the reply (a card raised by the rep's proposal quotes the rep and is stamped
  with the end of the customer's reply: it answers both turns, and its latency counts from
  the reply).

    python -m bench.bench_card_accuracy [--variants NAME ...] [--model base] [--json OUT] [--events FILE]
    python -m bench.bench_card_accuracy --rescore FILE [--replay-coach | --reanalyze]

``card_accuracy()`` returns the same dict, for a combined benchmark run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio.chunk import Speaker
from bench.card_scripts import SCRIPTS, LabelledTurn
from bench.metrics import waited
from clients.callgen import RenderedCall, Spoken, Turn, render
from clients.simulator import SimOptions, simulate
from guidance.playbook import INTENT_CARD_KINDS

SHOWN = ("issued", "updated", "confirmed")
UPDATE_MIN_INTERVAL_S = 8.0  # the default playbook's deck.update_min_interval_s


@dataclass(frozen=True, slots=True)
class Variant:
    """One rendering of every script: espeak-ng voices, pace, and the telephone path."""

    name: str
    rep_voice: str
    customer_voice: str
    rate_wpm: int
    telephone: bool = False  # 8 kHz mu-law through sox, streamed as Twilio Media Streams


VARIANTS = (
    Variant("us-165wpm", "en-us", "en-us+f3", 165),
    Variant("gb-scotland-140wpm", "en-gb-x-rp", "en-gb-scotland+m3", 140),
    Variant("us-nyc-185wpm-8k-mulaw", "en-us+m3", "en-us-nyc+f2", 185, telephone=True),
)


def render_script(script: Sequence[LabelledTurn], v: Variant) -> RenderedCall:
    turns = [Turn(t.speaker, t.text, rate_wpm=v.rate_wpm) for t in script]
    voices: dict[Speaker, str] = {"rep": v.rep_voice, "customer": v.customer_voice}
    return render(turns, voices={**voices, "unknown": v.rep_voice})


def to_telephone(path: Path) -> None:
    """Rewrite ``path`` as 8 kHz mu-law (what a phone line carries), in place, with sox."""
    tmp = path.with_suffix(".8k.wav")
    subprocess.run(
        ["sox", str(path), "-r", "8000", "-e", "mu-law", str(tmp)], check=True, capture_output=True
    )
    tmp.replace(path)


def turn_index(spoken: Sequence[Spoken], ev: dict[str, Any]) -> int | None:
    """The scripted turn the evidence quotes: same speaker, largest overlap in time."""
    best, best_overlap = None, 0.0
    for k, u in enumerate(spoken):
        if u.speaker != ev.get("speaker"):
            continue
        overlap = min(u.end_s, ev["end_s"] + 0.3) - max(u.start_s, ev["start_s"] - 0.3)
        if overlap > best_overlap:
            best, best_overlap = k, overlap
    return best


def replay_coach(events: list[dict[str, Any]], analyzer: Any = None) -> list[dict[str, Any]]:
    """The call's recorded transcripts and insights through a fresh coach on the packaged
    playbook: the cards the current coaching code gives for what was heard then, each stamped
    with the arrival of the event that raised it. Evaluates a coaching change without the
    recognizer's run-to-run variation. With an ``nlp.analyze.Analyzer``, each insight's text is
    analysed again (today's intent layer on the words heard then)."""
    import dataclasses
    import datetime as dt

    from guidance.cards import Card
    from guidance.coach import Coach
    from guidance.playbook import load_playbook
    from guidance.score import load_score_model
    from nlp.insight import Insight
    from nlp.transcript import Transcript
    from server.wire import from_wire, to_wire

    coach = Coach(load_playbook(), load_score_model())
    out: list[dict[str, Any]] = []
    now_s = 0.0
    for e in events:
        if e["type"] not in ("transcript", "insight"):
            continue
        event = from_wire({k: v for k, v in e.items() if k not in ("received_s", "latency_s")})
        assert isinstance(event, Transcript | Insight)
        if isinstance(event, Insight) and analyzer is not None:
            a = analyzer.analyze(event.text, call_date=dt.date(2025, 3, 12))
            i = a.intent
            event = dataclasses.replace(
                event, label=i.label, confidence=i.confidence, scores=i.scores,
                entities=a.entities, sentiment=a.sentiment,
            )  # fmt: skip
        now_s = max(now_s, event.end_s)
        got = coach.tick(now_s)
        if isinstance(event, Transcript):
            got += coach.observe_transcript(event)
        else:
            got += coach.observe_insight(event)
        out += [to_wire(c) | {"received_s": e["received_s"]} for c in got if isinstance(c, Card)]
    return out


def rescore(events_path: Path, replay: bool = False, reanalyze: bool = False) -> dict[str, Any]:
    """The figures again from a ``--events`` file (renders the scripts to get their timing);
    with ``replay``, of the cards the current coach gives for the recorded insights; with
    ``reanalyze`` too, for today's intent layer on the recorded transcripts."""
    analyzer = None
    if reanalyze:
        from models.registry import load_embedder
        from nlp.analyze import load_analyzer

        analyzer = load_analyzer(load_embedder())
    by_call: dict[str, list[dict[str, Any]]] = {}
    for line in events_path.read_text().splitlines():
        e = json.loads(line)
        by_call.setdefault(e.pop("call"), []).append(e)
    variants = {v.name: v for v in VARIANTS}
    scored = {}
    for name, events in by_call.items():
        v, script = name.split("/")
        call = render_script(SCRIPTS[script], variants[v])
        cards = replay_coach(events, analyzer) if replay or reanalyze else events
        scored[name] = score_call(SCRIPTS[script], call, cards)
    return aggregate(scored)


def reply_index(spoken: Sequence[Spoken], card: dict[str, Any]) -> int | None:
    """For a card quoting the rep, the customer turn whose end it is stamped with (the reply
    that agreed to the rep's proposal), if any."""
    if (card.get("evidence") or {}).get("speaker") != "rep":
        return None
    for k, u in enumerate(spoken):
        if u.speaker == "customer" and u.start_s <= card["audio_end_s"] <= u.end_s + 0.6:
            return k
    return None


def score_call(
    script: Sequence[LabelledTurn], call: RenderedCall, events: list[dict[str, Any]]
) -> dict[str, Any]:
    """Right and false cards, recalled turns and latencies of one replayed call."""
    cards = [e for e in events if e["type"] == "card" and e["kind"] in INTENT_CARD_KINDS]
    withdrawn = {e["card_id"] for e in cards if e["state"] == "withdrawn"}
    right, false = 0, []
    first_right: dict[int, float] = {}
    held_turns: set[int] = set()  # whose first right card waited for a rate-limit slot
    for e in cards:
        k = turn_index(call.utterances, e["evidence"]) if e.get("evidence") else None
        ok = k is not None and e["kind"] in script[k].expect
        if e["state"] == "issued" and e["card_id"] not in withdrawn:
            right += ok
            if not ok:
                quote = (e.get("evidence") or {}).get("quote", "")
                said = script[k].text if k is not None else "?"
                false.append(f"{e['kind']} on {quote!r} (said: {said!r})")
        if ok and e["state"] in SHOWN and k is not None:
            # a card a rep line raised on the customer's agreement answers the reply too
            for t in (k, reply_index(call.utterances, e)):
                if t is not None and e["kind"] in script[t].expect and t not in first_right:
                    first_right[t] = e["received_s"] - call.utterances[t].end_s
                    if waited(e):
                        held_turns.add(t)
    labelled = [k for k, t in enumerate(script) if t.speaker == "customer" and t.expect]
    agreed = [k for k, t in enumerate(script) if t.speaker == "rep" and t.expect]
    on_screen = [
        k
        for k in labelled
        if k not in first_right
        and any(
            e["kind"] in script[k].expect
            and e["state"] in SHOWN
            and e["card_id"] not in withdrawn
            and call.utterances[k].start_s - UPDATE_MIN_INTERVAL_S
            <= e["received_s"]
            <= call.utterances[k].end_s
            for e in cards
        )
    ]
    held = [e for e in cards if e["state"] == "issued" and waited(e)]
    return {
        "right": right,
        "false": false,
        "labelled_customer_turns": len(labelled),
        "recalled": [k for k in labelled if k in first_right or k in on_screen],
        "on_screen": len(on_screen),
        "held_by_rate_limit": len(held),
        "missed": [script[k].text for k in labelled if k not in first_right and k not in on_screen],
        "latency_s": [first_right[k] for k in labelled if k in first_right],
        "latency_not_held_s": [
            first_right[k] for k in labelled if k in first_right and k not in held_turns
        ],
        # an agreed proposal is covered by a next-step card quoting it or its reply
        "rep_next_steps": (
            sum(k in first_right or k + 1 in first_right for k in agreed),
            len(agreed),
        ),
        "withdrawn": len(withdrawn),
        "audio_min": call.duration_s / 60.0,
    }


async def replay_variant(
    v: Variant, server: Any, folder: Path, events_path: Path | None
) -> dict[str, dict[str, Any]]:
    """Every script in voice ``v``, replayed at the same time at 1.0x; scored per script."""
    calls = {name: render_script(script, v) for name, script in SCRIPTS.items()}
    paths = {}
    for name, call in calls.items():
        paths[name] = folder / f"{v.name}-{name}.wav"
        call.write(paths[name])
        if v.telephone:
            to_telephone(paths[name])
    results = await asyncio.gather(
        *(
            simulate(
                paths[name],
                SimOptions(server=server.ws, token=server.token, speed=1.0, twilio=v.telephone),
            )
            for name in calls
        )
    )
    out = {}
    for (name, call), result in zip(calls.items(), results, strict=True):
        if events_path is not None:
            with events_path.open("a") as f:
                f.writelines(
                    json.dumps({"call": f"{v.name}/{name}", **e}) + "\n" for e in result.events
                )
        out[name] = score_call(SCRIPTS[name], call, result.events)
    return out


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if xs else None


def aggregate(scored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures over every scored call (keys: ``variant/script``)."""
    right = sum(s["right"] for s in scored.values())
    false = [f"{name}: {f}" for name, s in scored.items() for f in s["false"]]
    labelled = sum(s["labelled_customer_turns"] for s in scored.values())
    recalled = sum(len(s["recalled"]) for s in scored.values())
    latency = [x for s in scored.values() for x in s["latency_s"]]
    pipeline = [x for s in scored.values() for x in s["latency_not_held_s"]]
    minutes = sum(s["audio_min"] for s in scored.values())
    agreed = [s["rep_next_steps"] for s in scored.values()]
    return {
        "calls": len(scored),
        "call_minutes": round(minutes, 2),
        "cards_issued": right + len(false),
        "precision": round(right / max(1, right + len(false)), 3),
        "false_cards_per_min": round(len(false) / minutes, 3) if minutes else None,
        "recall": round(recalled / max(1, labelled), 3),
        "recalled": f"{recalled}/{labelled}",
        "latency_s": {"n": len(latency), "p50": pct(latency, 50), "p95": pct(latency, 95)},
        "latency_not_held_s": {
            "n": len(pipeline),
            "p50": pct(pipeline, 50),
            "p95": pct(pipeline, 95),
        },
        "on_screen": sum(s["on_screen"] for s in scored.values()),
        "withdrawn": sum(s["withdrawn"] for s in scored.values()),
        "held_by_rate_limit": sum(s["held_by_rate_limit"] for s in scored.values()),
        "rep_next_steps": f"{sum(a for a, _ in agreed)}/{sum(n for _, n in agreed)}",
        "false_cards": false,
        "missed": [f"{name}: {m!r}" for name, s in scored.items() for m in s["missed"]],
    }


async def card_accuracy(
    variants: Sequence[Variant] = VARIANTS,
    server: Any | None = None,
    events_path: Path | None = None,
    model: str = "tiny.en",
) -> dict[str, Any]:
    """The card-accuracy figures as a dict; starts its own server unless given one (anything
    with ``ws`` and ``token``, e.g. ``tests.conftest.ServerProcess``)."""
    from clients.localserver import start_server, stop_server

    scored: dict[str, dict[str, Any]] = {}
    per_variant: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        own = None if server is not None else start_server(Path(tmp) / "data", CUECARD_MODEL=model)
        srv = server if own is None else own
        try:
            for v in variants:
                got = await replay_variant(v, srv, Path(tmp), events_path)
                per_variant[v.name] = {
                    k: x for k, x in aggregate(got).items() if k not in ("false_cards", "missed")
                }
                scored |= {f"{v.name}/{name}": s for name, s in got.items()}
        finally:
            if own is not None:
                stop_server(own)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_cpu()}, no GPU",
        "speed": 1.0,
        **aggregate(scored),
        "per_variant": per_variant,
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--variants", nargs="*", choices=[v.name for v in VARIANTS])
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--events", type=Path, help="append every event here (JSON lines)")
    parser.add_argument("--model", default="tiny.en", help="the server's CUECARD_MODEL")
    parser.add_argument("--rescore", type=Path, help="score a --events file instead of replaying")
    parser.add_argument(
        "--replay-coach", action="store_true", help="with --rescore: rerun today's coach"
    )
    parser.add_argument(
        "--reanalyze",
        action="store_true",
        help="with --rescore: rerun today's coach and intent layer on the recorded transcripts",
    )
    args = parser.parse_args()
    if args.rescore:
        print(json.dumps(rescore(args.rescore, args.replay_coach, args.reanalyze), indent=2))
        return
    chosen = [v for v in VARIANTS if not args.variants or v.name in args.variants]
    report = asyncio.run(card_accuracy(chosen, events_path=args.events, model=args.model))
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
