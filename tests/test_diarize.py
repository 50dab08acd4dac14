"""One channel, two voices: the diarizer core (table tests on synthetic embeddings), the GE2E
encoder (real weights from the resemblyzer package), voiceprints, and a mixed mono espeak-ng
call through the real server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Any

import numpy as np
import pytest
import websockets

from audio.chunk import SAMPLE_RATE_HZ
from audio.diarize import Diarizer, DiarizerOptions, SpeakerDecision
from clients.callgen import DEMO_CALL, RenderedCall, Turn, render
from server.voiceprints import VoiceprintStore
from tests.conftest import REPO, ServerProcess, start_server, stop_server

DIM = 32


def voice(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def windows(centre: np.ndarray, n: int, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """``n`` unit embeddings scattered around ``centre`` (cosine to it about 1 - noise^2 d/2)."""
    rng = np.random.default_rng(seed)
    rows = centre + rng.standard_normal((n, DIM)).astype(np.float32) * noise / np.sqrt(DIM) * 2
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


A, B = voice(1), voice(2)  # two voices, nearly orthogonal


def run(diarizer: Diarizer, script: list[tuple[np.ndarray, int, float]]) -> list[SpeakerDecision]:
    return [
        diarizer.decide(windows(c, n, seed=i), speech_s)
        for i, (c, n, speech_s) in enumerate(script)
    ]


def speakers(decisions: list[SpeakerDecision]) -> list[str]:
    return [d.speaker for d in decisions]


TURNS_AB = [(A, 3, 3.0), (B, 3, 3.0), (A, 2, 2.0), (B, 4, 4.0), (A, 3, 3.0), (B, 2, 2.0)]


@pytest.mark.parametrize(
    ("script", "options", "expected"),
    [
        # the first voice is the declared first speaker; the other is unknown until its own
        # windows form a group, then named
        (TURNS_AB, DiarizerOptions(), ["rep", "customer", "rep", "customer", "rep", "customer"]),
        (
            TURNS_AB,
            DiarizerOptions(first_speaker="customer"),
            ["customer", "rep", "customer", "rep", "customer", "rep"],
        ),
        # one voice all call: never a second speaker
        ([(A, 3, 3.0)] * 6, DiarizerOptions(), ["rep"] * 6),
        # too short to carry a voice, then too short to found one
        ([(A, 1, 0.3), (A, 1, 0.8), (A, 2, 2.0)], DiarizerOptions(), ["unknown", "unknown", "rep"]),
        # a lone window of the other voice is not enough to name it
        ([(A, 3, 3.0), (B, 1, 1.2)], DiarizerOptions(), ["rep", "unknown"]),
    ],
)
def test_decisions_follow_the_voices(
    script: list[tuple[np.ndarray, int, float]], options: DiarizerOptions, expected: list[str]
) -> None:
    """Utterances are labelled by voice, the roles by the first voice, and doubt is unknown."""
    got = run(Diarizer(options), script)
    assert speakers(got) == expected
    for d in got:
        assert 0.0 <= d.confidence <= 1.0
        assert (d.speaker == "unknown") == (d.confidence < options.min_confidence)


def test_an_utterance_of_both_voices_is_unknown() -> None:
    """Half its windows one voice, half the other: no guess."""
    d = Diarizer(DiarizerOptions())
    run(d, TURNS_AB)
    mixed = np.concatenate([windows(A, 2, seed=50), windows(B, 2, seed=51)])
    decision = d.decide(mixed, 4.0)
    assert decision.speaker == "unknown"
    assert decision.confidence <= 0.5


def test_a_voice_between_the_two_is_unknown() -> None:
    """Equally close to both voices' centres: the margin gives a confidence of one half."""
    d = Diarizer(DiarizerOptions())
    run(d, TURNS_AB)
    rows = {id(c): [] for c in (A, B)}  # the windows run() fed, per voice
    for i, (c, n, _) in enumerate(TURNS_AB):
        rows[id(c)].append(windows(c, n, seed=i))
    a, b = (np.concatenate(r).sum(axis=0) for r in rows.values())
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    between = ((a + b) / np.linalg.norm(a + b)).astype(np.float32)
    decision = d.decide(between[None], 1.0)  # shorter than a window: judged, not clustered
    assert decision.speaker == "unknown"
    assert abs(decision.confidence - 0.5) < 0.05


def test_enrolled_voiceprint_names_the_rep_even_when_the_customer_speaks_first() -> None:
    """With the rep's voiceprint the first voice is not assumed: B first is the customer."""
    d = Diarizer(DiarizerOptions(), voiceprint=A)
    got = speakers(run(d, [(B, 3, 3.0), (A, 2, 2.0), (B, 3, 3.0), (A, 3, 3.0)]))
    assert got == ["customer", "rep", "customer", "rep"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split_similarity": 0.4, "min_similarity": 0.5},
        {"min_confidence": 0.4},
        {"margin_scale": 0.0},
        {"min_speech_s": 2.0, "min_voice_s": 1.0},
        {"history": 1},
    ],
)
def test_options_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DiarizerOptions(**kwargs)


def test_voiceprints_round_trip_and_refuse_another_encoder(tmp_path: Path) -> None:
    """Stored per rep; another encoder's print, a missing one or no rep id reads as None;
    an unsafe rep id never becomes a path outside the store."""
    store = VoiceprintStore(tmp_path / "vp")
    path = store.save("../ana", A, "ge2e", 12.0)
    assert path.parent == tmp_path / "vp"
    assert np.allclose(store.load("../ana", "ge2e"), A)  # type: ignore[arg-type]
    assert store.load("../ana", "other") is None
    assert store.load("bob", "ge2e") is None and store.load(None, "ge2e") is None
    assert store.delete("../ana") and store.load("../ana", "ge2e") is None


# --- the real encoder -------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> Any:
    from models.registry import load_voice_encoder

    return load_voice_encoder()


@pytest.mark.model
def test_onnx_graph_matches_the_numpy_reference(encoder: Any) -> None:
    """The ONNX LSTM (gates reordered) computes the same network as plain numpy."""
    rng = np.random.default_rng(0)
    mels = np.abs(rng.standard_normal((2, 160, 40))).astype(np.float32)
    (onnx_out,) = encoder._session.run(None, {"mels": mels.transpose(1, 0, 2).copy()})
    onnx_unit = onnx_out / np.linalg.norm(onnx_out, axis=1, keepdims=True)
    assert np.abs(onnx_unit - encoder.forward_reference(mels)).max() < 1e-4


@pytest.mark.model
def test_two_espeak_voices_are_told_apart(encoder: Any) -> None:
    """Windows of one espeak-ng voice are closer to each other than to another voice's."""
    from clients.callgen import espeak

    lines = ["We looked at three vendors this quarter.", "Send me the proposal by Friday."]
    a = np.concatenate([encoder.embed(espeak(t, "en-us", 165, 50, 100)) for t in lines])
    b = np.concatenate([encoder.embed(espeak(t, "en-us+f3", 165, 50, 100)) for t in lines])
    within = min(float((a @ a.T).mean()), float((b @ b.T).mean()))
    assert within > float((a @ b.T).mean()) + 0.1


# --- through the real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_call() -> RenderedCall:
    return render(DEMO_CALL)  # rep en-us, customer en-us+f3 (callgen's voices)


async def stream_mono(
    server: ServerProcess, call_id: str, audio: np.ndarray, rep_id: str = "sam"
) -> list[dict[str, Any]]:
    """The native protocol with one ``unknown`` channel, as fast as the socket takes it;
    every event of the call's events socket until it closes."""
    base, auth = server.ws, server.auth
    events: list[dict[str, Any]] = []
    async with websockets.connect(
        f"{base}/v1/calls/{call_id}/events", additional_headers=auth
    ) as viewer:

        async def watch() -> None:
            async for raw in viewer:
                events.append(json.loads(raw))

        watcher = asyncio.create_task(watch())
        async with websockets.connect(
            f"{base}/v1/calls/{call_id}/audio", additional_headers=auth
        ) as ws:
            start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000}
            await ws.send(
                json.dumps({**start, "channels": 1, "speakers": ["unknown"], "rep_id": rep_id})
            )
            assert json.loads(await ws.recv())["type"] == "started"
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
            step = SAMPLE_RATE_HZ // 50
            for i in range(0, len(pcm), step):
                await ws.send(pcm[i : i + step].tobytes())
            await ws.send(json.dumps({"type": "stop"}))
            await ws.wait_closed()
        await asyncio.wait_for(watcher, 120)
    return events


def truth(call: RenderedCall, start_s: float, end_s: float) -> str | None:
    """The speaker whose turn overlaps [start_s, end_s] most."""
    best = max(call.utterances, key=lambda u: min(end_s, u.end_s) - max(start_s, u.start_s))
    return best.speaker if min(end_s, best.end_s) > max(start_s, best.start_s) else None


def scored(events: list[dict[str, Any]], call: RenderedCall) -> tuple[int, int, int]:
    finals = [e for e in events if e["type"] == "transcript" and e["is_final"]]
    right = sum(truth(call, f["start_s"], f["end_s"]) == f["speaker"] for f in finals)
    wrong = sum(
        f["speaker"] not in ("unknown", truth(call, f["start_s"], f["end_s"])) for f in finals
    )
    return len(finals), right, wrong


@pytest.mark.model
@pytest.mark.slow
async def test_mixed_mono_call_labels_most_turns(
    server: ServerProcess, mixed_call: RenderedCall
) -> None:
    """A mono mix of two espeak-ng voices: most finals carry the right speaker, few a wrong
    one, each with its confidence; partials stay unknown (cards wait for the decision)."""
    mono = mixed_call.rep + mixed_call.customer
    events = await stream_mono(server, "mixed-mono-1", mono)
    finals, right, wrong = scored(events, mixed_call)
    assert finals >= 8
    assert right / finals >= 0.7, (right, finals)
    assert wrong / finals <= 0.15, (wrong, finals)
    labelled = [
        e
        for e in events
        if e["type"] == "transcript" and e["is_final"] and e["speaker"] != "unknown"
    ]
    assert {e["speaker"] for e in labelled} == {"rep", "customer"}
    assert all(0.75 <= e["speaker_confidence"] <= 1.0 for e in labelled)
    partials = [e for e in events if e["type"] == "transcript" and not e["is_final"]]
    assert all(p["speaker"] == "unknown" for p in partials)
    cards = [e for e in events if e["type"] == "card"]
    assert cards, "the customer's objections and questions raise cards on a mixed call too"


@pytest.mark.model
@pytest.mark.slow
async def test_enrolled_rep_is_named_when_the_customer_speaks_first(tmp_path: Path) -> None:
    """``cuecard enroll`` stores the rep's voice; on a call the customer opens, the first
    voice is still labelled customer and the rep's lines rep."""
    lines = (  # not the call's lines: a sample the rep recorded once
        "This is my voice sample for the coaching tool.",
        "I usually start with a short introduction and a question about the team.",
        "Then I listen, take notes, and agree on a next step before we hang up.",
    )
    render([Turn("rep", t) for t in lines]).write(tmp_path / "ana.wav")
    data = tmp_path / "data"
    args = ["enroll", "--rep", "ana", str(tmp_path / "ana.wav"), "--data-dir", str(data)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, cwd=REPO, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    call = render(DEMO_CALL[1:])  # the customer opens
    srv = start_server(data)
    try:
        events = await stream_mono(srv, "mixed-enrolled", call.rep + call.customer, rep_id="ana")
    finally:
        stop_server(srv)
    finals = [e for e in events if e["type"] == "transcript" and e["is_final"]]
    first = min(finals, key=lambda f: f["start_s"])
    assert first["speaker"] in ("customer", "unknown")
    count, right, wrong = scored(events, call)
    assert right / count >= 0.7 and wrong / count <= 0.15, (right, wrong, count)
