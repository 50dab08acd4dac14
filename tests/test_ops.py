"""Operations: /livez, /readyz and /metrics through the real app, JSON log lines, and the
sans-I/O pieces behind them (latencies, the degraded status under overload, what a close
counts as)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
import websockets
from prometheus_client.parser import text_string_to_metric_families

from audio.chunk import AudioChunk
from audio.segmenter import SegmenterOptions
from guidance.cards import Card, Evidence
from guidance.playbook import load_playbook
from guidance.score import load_score_model
from guidance.summary import BuiltinSummarizer
from models import registry
from nlp.analyze import load_analyzer
from nlp.asr import AsrOptions
from nlp.redaction import Redactor
from nlp.scheduler import PARTIAL, AsrScheduler
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Transcript, Word
from server.access import Authenticator
from server.app import Runtime, build_app
from server.bus import Bus
from server.clock import SystemClock
from server.latency import ArrivalTimes, LatencyProbe
from server.logs import JsonFormatter, TextFormatter, bind_call
from server.metrics import Metrics
from server.overload import OverloadOptions, OverloadWatch
from server.session import Engines
from server.settings import Settings, SettingsError
from server.sockets import WebSocketProtocol
from server.sqlite_store import SqliteCallStore
from server.store import StoreError
from tests.test_intent import KeywordEmbedder

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- sans-I/O pieces -------------------------------------------------------------------------


def test_overload_goes_degraded_on_a_run_of_drops_and_live_after_calm() -> None:
    """Degraded once enough partials drop within the window, live again only after a calm
    stretch; single drops and drops before the first look never flip it."""
    watch = OverloadWatch(OverloadOptions(enter_drops=3, window_s=5.0, calm_s=10.0))
    assert watch.observe(100, 0.0) is None  # drops before the call: the baseline
    assert watch.observe(101, 1.0) is None  # one preempted partial is routine
    assert watch.observe(101, 7.0) is None
    assert watch.observe(102, 8.0) is None  # the drop at 1.0 left the window
    assert watch.observe(104, 9.0) == "degraded"
    assert watch.degraded
    assert watch.observe(105, 12.0) is None  # still dropping: no flapping
    assert watch.observe(105, 21.9) is None  # calm for 9.9 s only
    assert watch.observe(105, 22.0) == "live"
    assert not watch.degraded
    assert watch.observe(106, 23.0) is None  # the window starts afresh after recovery
    assert watch.observe(106, 30.0) is None


def test_a_call_that_keeps_most_of_its_partials_is_not_overloaded() -> None:
    """With the decoded partials passed too, losing one partial in four (the live line a little
    slower, at half the recognizer's capacity) is no stall; losing most of them is."""
    watch = OverloadWatch(OverloadOptions(enter_drops=4, window_s=10.0, calm_s=10.0))
    lost = kept = 0
    assert watch.observe(lost, 0.0, kept) is None
    for t in range(1, 21):  # 1 lost, 3 kept a second: 10 lost in any 10 s, a quarter
        lost, kept = lost + 1, kept + 3
        assert watch.observe(lost, float(t), kept) is None
    shifts = []
    for t in range(21, 29):  # now 3 lost, 1 kept a second
        lost, kept = lost + 3, kept + 1
        shifts.append(watch.observe(lost, float(t), kept))
    assert watch.degraded and shifts.count("degraded") == 1
    for t in range(29, 60):  # a quarter lost again: live once 10 s pass without shedding
        lost, kept = lost + 1, kept + 3
        if watch.observe(lost, float(t), kept) == "live":
            break
    assert not watch.degraded and 38 <= t <= 50


def test_overload_options_are_checked() -> None:
    with pytest.raises(ValueError):
        OverloadOptions(enter_drops=0)
    with pytest.raises(ValueError):
        OverloadOptions(min_lost_share=0)


def test_arrival_times_answer_when_audio_had_arrived() -> None:
    """The first arrival that reached the audio time; beyond the window, nothing."""
    arrivals = ArrivalTimes(keep_s=10.0)
    assert arrivals.at(0.0) is None
    for k in range(1, 301):  # 30 s of audio in 0.1 s steps, 1 s of wall time apart
        arrivals.arrived(k / 10, 1000.0 + k)
    assert arrivals.at(29.95) == 1300.0
    assert arrivals.at(29.0) == 1290.0
    assert arrivals.at(31.0) == 1300.0  # ahead of the audio: the latest arrival
    assert arrivals.at(2.0) is None  # forgotten (kept: the last 10-20 s)
    arrivals.arrived(29.0, 2000.0)  # audio that does not move the end changes nothing
    assert arrivals.at(29.0) == 1290.0


def test_latency_probe_measures_the_products_three_latencies() -> None:
    """Final from its last word's end, the first partial from its start, a customer card from
    its utterance's end; later partials, rep cards and other events measure nothing."""
    probe = LatencyProbe()
    for k in range(0, 101):  # audio t arrives at wall 50 + t
        probe.arrived(k / 10, 50.0 + k / 10)
    partial = Transcript("customer-0", "customer", False, "too", 2.0, 3.0)
    assert probe.observe(partial, 53.5) == ("partial", pytest.approx(1.5))
    assert probe.observe(partial, 54.0) is None  # not the first partial
    words = (Word("too", 2.0, 2.4, 0.9), Word("expensive", 2.5, 3.2, 0.9))
    final = Transcript("customer-0", "customer", True, "too expensive", 2.0, 4.0, words)
    assert probe.observe(final, 53.7) == ("final", pytest.approx(0.5))
    card = Card("c1", "issued", "objection_price", 50, "Price", "d", (), Evidence("too expensive",
                "customer", 2.0, 3.2), 3.2)  # fmt: skip
    assert probe.observe(card, 54.0) == ("card", pytest.approx(0.8))
    rep_card = Card("c2", "issued", "next_step", 50, "t", "d", (), Evidence("x", "rep", 1, 2), 2.0)
    assert probe.observe(rep_card, 54.0) is None


def test_what_a_close_counts_as() -> None:
    """Closes by code; a limit named at the end of a reason counts as that limit, even a
    setting named inside client input never does; 1008 about a token is a failed
    authentication, 1008 about a call id is not; HTTP 401 and 413 count too."""
    m = Metrics()
    m.sent("websocket", {"type": "websocket.close", "code": 1013,
                         "reason": "server at capacity: 3 live calls (CUECARD_MAX_CALLS)"})  # fmt: skip
    m.sent("websocket", {"type": "websocket.close", "code": 1007,
                         "reason": "unknown event '(CUECARD_MAX_CALLS)'"})  # fmt: skip
    m.sent("websocket", {"type": "websocket.close", "code": 1007, "reason": "x (CUECARD_HOST)"})
    m.sent(
        "websocket", {"type": "websocket.close", "code": 1008, "reason": "missing or wrong token"}
    )
    m.sent("websocket", {"type": "websocket.close", "code": 1008, "reason": "call id must be ..."})
    m.sent("http", {"type": "http.response.start", "status": 401})
    m.sent("http", {"type": "http.response.start", "status": 413})
    m.sent("http", {"type": "http.response.start", "status": 200})
    got = scrape(m)
    assert got[("cuecard_websocket_closes_total", (("code", "1013"),))] == 1
    assert got[("cuecard_websocket_closes_total", (("code", "1008"),))] == 2
    assert got[("cuecard_websocket_closes_total", (("code", "1007"),))] == 2
    limits = {k[1]: v for k, v in got.items() if k[0] == "cuecard_limit_hits_total"}
    assert limits == {(("limit", "max_calls"),): 1, (("limit", "max_body_bytes"),): 1}
    assert got[("cuecard_auth_failures_total", (("transport", "websocket"),))] == 1
    assert got[("cuecard_auth_failures_total", (("transport", "http"),))] == 1


def scrape(m: Metrics | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a registry (or of exposition text): (name, sorted labels) -> value."""
    from prometheus_client import generate_latest

    text = generate_latest(m.registry).decode() if isinstance(m, Metrics) else m
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_json_log_lines_carry_the_call_and_never_the_transcript_unless_asked() -> None:
    """One JSON object per line with time, level, logger, message and the bound call's ids;
    a transcript extra only with transcripts=True; text lines end with the same fields."""
    log = logging.getLogger("cuecard.test_ops")

    def record(**extra: Any) -> logging.LogRecord:
        return log.makeRecord(log.name, logging.INFO, __file__, 1, "final %s", ("u1",), None,
                              extra=extra)  # fmt: skip

    async def in_call() -> tuple[logging.LogRecord, str, str, str]:
        bind_call("c-42", "ana")
        r = record(transcript="my card is 4111")
        return (r, JsonFormatter().format(r), JsonFormatter(transcripts=True).format(r),
                TextFormatter().format(r))  # fmt: skip

    _, line, with_text, text = asyncio.run(in_call())
    obj = json.loads(line)
    assert obj["message"] == "final u1" and obj["level"] == "INFO"
    assert obj["logger"] == "cuecard.test_ops" and obj["time"].endswith("+00:00")
    assert (obj["call_id"], obj["rep_id"]) == ("c-42", "ana")
    assert "4111" not in line and "transcript" not in obj
    assert json.loads(with_text)["transcript"] == "my card is 4111"
    assert text.endswith("final u1  call_id=c-42 rep_id=ana") and "4111" not in text
    outside = json.loads(JsonFormatter().format(record()))  # not in a call's task
    assert "call_id" not in outside


class Broken:
    name = "broken"

    def recognize(
        self, audio: Any, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        raise RuntimeError("model fell over")

    def warmup(self) -> None:
        pass


async def test_the_shared_recognizer_logs_as_no_call() -> None:
    """The recognizer's worker, started by one call's first job, does not stamp that call's
    id on its own lines (it serves every call)."""
    scheduler = AsrScheduler(Broken())

    async def first_call() -> None:
        bind_call("c-first", "ana")
        job = scheduler.submit(PARTIAL, "customer-0", np.zeros(1600, np.float32), False)
        with pytest.raises(RuntimeError):
            await job.future

    out = io.StringIO()
    handler = logging.StreamHandler(out)  # formats as it emits: in the worker's context
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nlp.scheduler")
    logger.addHandler(handler)
    try:
        await asyncio.create_task(first_call())
    finally:
        logger.removeHandler(handler)
        await scheduler.stop()
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["message"].startswith("recognition failed") and "call_id" not in line


def test_operations_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="CUECARD_LOG_FORMAT"):
        Settings.from_env({"CUECARD_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="CUECARD_LOG_TRANSCRIPTS"):
        Settings.from_env({"CUECARD_LOG_TRANSCRIPTS": "2"})
    with pytest.raises(SettingsError, match="CUECARD_READY_ASR_BACKLOG"):
        Settings.from_env({"CUECARD_READY_ASR_BACKLOG": "0"})
    s = Settings.from_env({"CUECARD_LOG_FORMAT": "json", "CUECARD_LOG_TRANSCRIPTS": "1"})
    assert (s.log_format, s.log_transcripts, s.ready_asr_backlog) == ("json", 1, 16)


# -- the app with light engines (no models): /livez, /readyz, /metrics -------------------------


class Slow:
    """A transcriber that takes 0.3 s a clip: partials pile up behind each other."""

    name = "slow"

    def recognize(
        self, audio: Any, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        time.sleep(0.3)
        return Recognition("hello there", (), 0.0, -0.1, 1.0)

    def warmup(self) -> None:
        pass


async def test_a_call_is_told_when_partials_are_shed_and_when_they_resume(tmp_path: Path) -> None:
    """A recognizer too slow for the partials: the viewer gets status degraded "server busy:
    live partials paused", then live once 10 s of audio pass with no drop; neither is stored."""
    from clients.callgen import Turn, render
    from server.session import CAUGHT_UP, OVERLOADED, CallSession
    from server.store import CallMeta

    store = await SqliteCallStore.open(tmp_path / "calls.sqlite3")
    engines = light_engines(Slow())
    bus = Bus()
    sub = bus.subscribe("busy")
    session = CallSession(CallMeta("busy", "native"), ("customer",), engines, store, bus)
    speech = render((Turn("customer", "We have been comparing three vendors for a while and "
                          "the budget is set for the next quarter already.", gap_s=0.2),)).customer  # fmt: skip
    try:
        await session.start()
        audio = np.concatenate([speech, np.zeros(16000, np.float32)])
        for i in range(0, len(audio), 1600):  # 0.1 s a message, as fast as it is taken
            await session.feed(frames(audio[i : i + 1600], i))
        for _ in range(3000):  # the bound only stops a hung test
            if session.finals:
                break
            await asyncio.sleep(0.01)
        assert engines.scheduler.dropped_partials >= 4
        at = len(speech) + 16000
        for k in range(12):  # calm: a second of silence at a time, fed as it would arrive
            await session.feed(frames(np.zeros(16000, np.float32), at + k * 16000))
            await asyncio.sleep(0.05)
        await session.finish()
    finally:
        await engines.aclose()
    seen = []
    while (event := await sub.get()) is not None:
        seen.append(event)
    stored = await store.events("busy")
    await store.close()
    shifts = [(e["state"], e["detail"]) for e in seen if e["type"] == "status"
              and e["detail"] in (OVERLOADED, CAUGHT_UP)]  # fmt: skip
    assert shifts == [("degraded", OVERLOADED), ("live", CAUGHT_UP)], shifts
    assert not [
        e for e in stored if e["type"] == "status" and e["detail"] in (OVERLOADED, CAUGHT_UP)
    ]


async def test_a_calls_lost_partials_are_its_own_not_the_servers() -> None:
    """Two streams on one slow recognizer: the one whose partials pile up counts its lost
    partials; the one without partials counts none, though the shared scheduler dropped many
    (its count is what the session's overload watch reads)."""
    from audio.segmenter import SpeechEvent, SpeechStarted, UtteranceEnded, UtteranceGrew
    from nlp.asr import StreamStats, transcribe

    async def talk(partials: bool) -> AsyncIterator[SpeechEvent]:
        clip = np.zeros(16000, np.float32)
        yield SpeechStarted("u1", "customer", 0)
        for k in range(8 if partials else 0):
            yield UtteranceGrew("u1", "customer", 0, np.zeros(1600 * (k + 1), np.float32))
            await asyncio.sleep(0.02)
        yield UtteranceEnded("u1", "customer", 0, clip)

    scheduler = AsrScheduler(Slow())
    busy, quiet = StreamStats(), StreamStats()
    try:

        async def run(partials: bool, stats: StreamStats) -> list[Any]:
            options = AsrOptions(partials=partials, prompt_finals=0)
            return [t async for t in transcribe(talk(partials), scheduler, options, stats)]

        outs = await asyncio.wait_for(asyncio.gather(run(True, busy), run(False, quiet)), 30)
    finally:
        await scheduler.stop()
    assert all(any(isinstance(t, Transcript) and t.is_final for t in out) for out in outs)
    assert scheduler.dropped_partials >= 4
    assert busy.dropped_partials == scheduler.dropped_partials
    assert quiet.dropped_partials == 0


def frames(samples: np.ndarray, start: int) -> list[AudioChunk]:
    return [
        AudioChunk("customer", start + i, samples[i : i + 320]) for i in range(0, len(samples), 320)
    ]


class Silent:
    """A transcriber that hears nothing (no model): the routes under test never decode."""

    name = "silent"

    def recognize(
        self, audio: Any, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        return Recognition("", (), 1.0, -2.0, 1.0)

    def warmup(self) -> None:
        pass


def light_engines(transcriber: Any = None) -> Engines:
    return Engines(
        scheduler=AsrScheduler(transcriber or Silent()),
        detectors=registry.load_detectors("webrtc"),
        segmenter=SegmenterOptions(),
        asr=AsrOptions(),
        redactor=Redactor(),
        # the packaged intent head reads 384-dim embeddings
        analyzer=load_analyzer(KeywordEmbedder([f"k{i}" for i in range(383)])),
        playbook=load_playbook(None),
        score_model=load_score_model(),
        summarizer=BuiltinSummarizer(),
    )


class UnreachableStore(SqliteCallStore):
    async def ping(self) -> None:
        raise StoreError("cannot reach redis://:secret@db:6379")


class HangingStore(SqliteCallStore):
    async def ping(self) -> None:
        await asyncio.sleep(3600)


@pytest.fixture
async def light(tmp_path: Path) -> AsyncIterator[Any]:
    """A runtime over light engines and a real store; yields a factory of (runtime, client)."""
    opened: list[tuple[Runtime, httpx.AsyncClient]] = []

    async def make(store_cls: type[SqliteCallStore] = SqliteCallStore, **settings: Any) -> Any:
        store = await store_cls.open(tmp_path / f"calls{len(opened)}.sqlite3")
        config = Settings(data_dir=tmp_path, token=TOKEN, **settings)
        auth = Authenticator.from_settings(config, SystemClock())
        rt = Runtime(config, light_engines(), store, Bus(), auth)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(rt)),
                                   base_url="http://ops")  # fmt: skip
        opened.append((rt, client))
        return rt, client

    yield make
    for rt, client in opened:
        await client.aclose()
        await rt.engines.aclose()
        await rt.store.close()


async def test_livez_answers_without_a_token_and_tells_nothing_else(light: Any) -> None:
    _, c = await light()
    r = await c.get("/livez")
    assert r.status_code == 200 and r.json() == {"live": True}
    assert (await c.get("/healthz")).status_code == 200  # the older alias stays


async def test_readyz_is_200_with_every_check_when_ready(light: Any) -> None:
    _, c = await light()
    r = await c.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["failed"] == []
    assert set(body["checks"]) == {"models", "store", "draining", "capacity", "asr_backlog"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_readyz_fails_while_draining(light: Any) -> None:
    rt, c = await light()
    rt.draining = True
    r = await c.get("/readyz")
    assert r.status_code == 503 and r.json()["failed"] == ["draining"]


async def test_readyz_fails_when_the_store_does_not_answer(light: Any) -> None:
    """A ping that raises or hangs fails the store check (within its bound), and the reply
    never repeats the store's error text (it may hold a password)."""
    for store_cls in (UnreachableStore, HangingStore):
        _, c = await light(store_cls)
        r = await asyncio.wait_for(c.get("/readyz"), 30)  # the bound only stops a hung test
        assert r.status_code == 503, store_cls
        assert r.json()["failed"] == ["store"]
        assert "secret" not in r.text


async def test_readyz_fails_at_capacity(light: Any) -> None:
    """At CUECARD_MAX_CALLS live calls a new call would be refused: not ready."""
    rt, c = await light(max_calls=1)
    rt.sessions["c-1"] = object()  # type: ignore[assignment]  # one live call's slot
    try:
        r = await c.get("/readyz")
    finally:
        rt.sessions.clear()
    assert r.status_code == 503 and r.json()["failed"] == ["capacity"]
    assert "1 of 1 live calls" in r.json()["checks"]["capacity"]["detail"]


async def test_metrics_need_the_token_and_each_runtime_has_its_own(light: Any) -> None:
    """/metrics answers 401 without the token (and counts it); two apps in one process keep
    separate registries."""
    rt_a, a = await light()
    _, b = await light()
    assert (await a.get("/metrics")).status_code == 401
    assert (await a.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
    r = await a.get("/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = scrape(r.text)
    assert got[("cuecard_auth_failures_total", (("transport", "http"),))] == 2
    assert got[("cuecard_live_calls", ())] == 0
    assert ("cuecard_final_latency_seconds_count", ()) in got
    other = scrape((await b.get("/metrics", headers=AUTH)).text)
    assert ("cuecard_auth_failures_total", (("transport", "http"),)) not in other
    assert rt_a.engines.metrics.registry is not None


# -- one real call through the real app, real models ----------------------------------------


@pytest.fixture
def captured_logs() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """The root logger's records at INFO, formatted as JSON without and with transcripts."""
    plain, with_text = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(plain), logging.StreamHandler(with_text)]
    handlers[0].setFormatter(JsonFormatter())
    handlers[1].setFormatter(JsonFormatter(transcripts=True))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for h in handlers:
        root.addHandler(h)
    yield plain, with_text
    for h in handlers:
        root.removeHandler(h)
    root.setLevel(level)


@pytest.mark.model
@pytest.mark.slow
async def test_one_real_call_fills_the_metrics_and_the_logs(
    tmp_path: Path, captured_logs: tuple[io.StringIO, io.StringIO]
) -> None:
    """A short call at 1.0x through uvicorn: the final latency histogram counts its finals,
    stage seconds and model load times are real, a second call at CUECARD_MAX_CALLS is
    refused (1013, counted, /readyz 503 meanwhile), and the call's JSON log lines carry its
    id, never its words."""
    from clients.callgen import Turn, render
    from clients.simulator import SimOptions, simulate
    from server.main import build_runtime, close_runtime

    settings = Settings(data_dir=tmp_path / "data", token=TOKEN, port=0, max_calls=1)
    rt = await build_runtime(settings)
    try:
        async with serving(rt) as base:
            path = tmp_path / "call.wav"
            render((Turn("rep", "Thanks for taking the call today."),
                    Turn("customer", "Honestly the price is too expensive for us."))).write(path)  # fmt: skip
            options = SimOptions(server=base.replace("http", "ws"), token=TOKEN, call_id="ops-1",
                                 rep_id="ana", speed=1.0)  # fmt: skip
            call = asyncio.create_task(simulate(path, options))
            async with httpx.AsyncClient(base_url=base) as c:
                for _ in range(600):  # the bound only stops a hung test
                    if rt.sessions:
                        break
                    await asyncio.sleep(0.05)
                ready = await c.get("/readyz")
                refused = await refused_close(base, "ops-2")
                result = await call
                text = (await c.get("/metrics", headers=AUTH)).text
    finally:
        await close_runtime(rt)
    assert ready.status_code == 503 and "capacity" in ready.json()["failed"]
    assert refused[0] == 1013 and "CUECARD_MAX_CALLS" in refused[1]
    got = scrape(text)
    finals = [e for e in result.events if e["type"] == "transcript" and e["is_final"]]
    assert finals, result.events
    assert got[("cuecard_final_latency_seconds_count", ())] == len(finals)
    assert got[("cuecard_final_latency_seconds_sum", ())] > 0
    assert got[("cuecard_calls_refused_total", (("reason", "capacity"),))] == 1
    assert got[("cuecard_limit_hits_total", (("limit", "max_calls"),))] == 1
    assert got[("cuecard_websocket_closes_total", (("code", "1013"),))] == 1
    for stage in ("asr", "insight", "store_append"):
        assert got[("cuecard_stage_seconds_total", (("stage", stage),))] > 0, stage
    busy = [v for k, v in got.items() if k[0] == "cuecard_asr_busy_seconds_total"]
    assert len(busy) == 3  # final, speculative, partial: together the asr stage
    assert sum(busy) == pytest.approx(got[("cuecard_stage_seconds_total", (("stage", "asr"),))])
    assert got[("cuecard_model_load_seconds", (("model", "whisper"),))] > 0
    assert got[("cuecard_live_calls", ())] == 0
    plain, with_text = (s.getvalue() for s in captured_logs)
    lines = [json.loads(line) for line in plain.splitlines()]
    about = [line for line in lines if line.get("call_id") == "ops-1"]
    messages = [line["message"] for line in about]
    assert "call started (native)" in messages and any("call over" in m for m in messages)
    assert all(line["rep_id"] == "ana" for line in about)
    words = {w for f in finals for w in f["text"].lower().split() if len(w) > 4}
    assert words and not any(w in plain.lower() for w in words)
    assert any(w in with_text.lower() for w in words)  # the check can fail: the text was there


class serving:
    """The app on uvicorn on a free loopback port, in this event loop."""

    def __init__(self, rt: Runtime) -> None:
        config = uvicorn.Config(build_app(rt), host="127.0.0.1", port=0, ws=WebSocketProtocol,
                                log_level="warning", lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        for _ in range(600):
            if self.server.started:
                break
            await asyncio.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task


async def refused_close(base: str, call_id: str) -> tuple[int | None, str]:
    """A second call's start; the code and reason the server closes it with."""
    url = f"{base.replace('http', 'ws')}/v1/calls/{call_id}/audio"
    start = {"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,
             "speakers": ["rep"]}  # fmt: skip
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps(start))
        await ws.send(np.zeros(320, "<i2").tobytes())
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        return ws.close_code, ws.close_reason or ""
