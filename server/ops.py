"""Operations routes, on the app (``register(app, rt, auth=...)``), and the scrape-time collector:

- ``GET /livez``   200 ``{"live": true}`` while the process answers; no token, tells nothing else
  (``/healthz`` is its older alias).
- ``GET /readyz``  no token; 200 when this instance should get new calls, else 503; the body
  lists every check and which failed: ``models`` (loaded), ``store`` (``CallStore.ping``
  answered within ``STORE_PING_S``), ``draining`` (no SIGTERM drain under way), ``capacity``
  (live calls under ``CUECARD_MAX_CALLS``), ``asr_backlog`` (finals waiting for the recognizer
  under ``CUECARD_READY_ASR_BACKLOG``).
  Neither route is in the OpenAPI schema, whose every route needs the token.
- ``GET /metrics`` the Prometheus text format of the runtime's own registry (``server.metrics``);
  needs the bearer token, through the same dependency as ``/v1/stats``.

A pure ASGI middleware hands every message the app sends to ``Metrics.sent`` (closes by code,
limits named in close reasons, failed authentications). ``RuntimeCollector`` reads at each
scrape what the runtime and its cores already count, so none of them imports prometheus_client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nlp.scheduler import FINAL, PARTIAL, SPECULATIVE
from server.metrics import Metrics, executor_stats

if TYPE_CHECKING:  # server.app registers these routes
    from server.app import Runtime

STORE_PING_S = 1.0  # /readyz: a store slower than this to answer a ping is not ready


def register(app: FastAPI, rt: Runtime, *, auth: Callable[..., Any]) -> None:
    metrics = rt.engines.metrics
    metrics.bind(RuntimeCollector(rt))
    app.add_middleware(_Counting, metrics=metrics)

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, bool]:
        return {"live": True}

    @app.get("/readyz", include_in_schema=False)  # no token: the API schema lists none such
    async def readyz() -> JSONResponse:
        """Whether this instance should get new calls: 200, or 503 naming the checks that
        failed (``failed``) with every check's ``ok`` and ``detail``."""
        checks = await readiness(rt)
        failed = [name for name, check in checks.items() if not check["ok"]]
        body = {"ready": not failed, "failed": failed, "checks": checks}
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.get("/metrics", dependencies=[Depends(auth)], tags=["operations"])
    async def prometheus() -> Response:
        """Prometheus metrics of this instance (docs/api.md, Operations)."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def readiness(rt: Runtime) -> dict[str, dict[str, Any]]:
    """Every ``/readyz`` check: ``{name: {"ok": bool, "detail": str}}``."""
    s = rt.settings
    live, backlog = len(rt.sessions), rt.engines.scheduler.pending_finals()
    return {
        "models": _check(rt.engines.scheduler.transcriber is not None, "loaded", "not loaded"),
        "store": await _store_check(rt),
        "draining": _check(not rt.draining, "serving", "draining: no new calls"),
        "capacity": _check(
            live < s.max_calls, f"{live} of {s.max_calls} live calls (CUECARD_MAX_CALLS)"
        ),
        "asr_backlog": _check(
            backlog < s.ready_asr_backlog,
            f"{backlog} finals waiting, fails at {s.ready_asr_backlog} (CUECARD_READY_ASR_BACKLOG)",
        ),
    }


def _check(ok: bool, detail: str, failed: str | None = None) -> dict[str, Any]:
    return {"ok": ok, "detail": detail if ok or failed is None else failed}


async def _store_check(rt: Runtime) -> dict[str, Any]:
    """The store answered a ping in time. The detail never carries the store's error text:
    the route needs no token, and a Redis URL may hold a password."""
    try:
        async with asyncio.timeout(STORE_PING_S):
            await rt.store.ping()
    except TimeoutError:
        return _check(False, f"no answer within {STORE_PING_S:g} s")
    except Exception as err:  # any failure is "not ready", never a 500
        return _check(False, f"unreachable ({type(err).__name__})")
    return _check(True, "answers")


class _Counting:
    """Pure ASGI middleware: each message the app sends goes to ``Metrics.sent`` first."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            self.metrics.sent(kind, message)
            await send(message)

        await self.app(scope, receive, counted)


class RuntimeCollector:
    """What the runtime and its cores count, read at each scrape."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        rt, e = self.rt, self.rt.engines
        sched = e.scheduler
        yield _gauge("cuecard_live_calls", "calls streaming to this instance", len(rt.sessions))
        yield _gauge("cuecard_viewers", "events sockets open", sum(rt.viewers.values()))
        yield _gauge(
            "cuecard_degraded_calls",
            "live calls whose rep is told live partials are paused (server busy)",
            sum(1 for session in list(rt.sessions.values()) if session.overloaded),
        )
        yield _gauge("cuecard_draining", "1 while draining for shutdown", int(rt.draining))
        yield _gauge("cuecard_asr_pending_jobs", "recognitions waiting", sched.pending())
        busy = CounterMetricFamily(
            "cuecard_asr_busy_seconds",
            "seconds the recognizer thread spent decoding, by job priority; its rate is the "
            "ASR busy share",
            labels=["priority"],
        )
        for name, index in (("final", FINAL), ("speculative", SPECULATIVE), ("partial", PARTIAL)):
            busy.add_metric([name], sched.busy_s_by_priority[index])
        yield busy
        yield self._stages()
        dropped = CounterMetricFamily(
            "cuecard_dropped", "work shed or lost, by kind", labels=["kind"]
        )
        dropped.add_metric(["partial_replaced"], sched.dropped_partials - sched.preempted_partials)
        dropped.add_metric(["partial_preempted"], sched.preempted_partials)
        dropped.add_metric(["bus_event"], rt.bus.dropped)
        dropped.add_metric(["webhook"], e.webhooks.dropped if e.webhooks is not None else 0)
        yield dropped
        deliveries = CounterMetricFamily(
            "cuecard_webhook_deliveries",
            "webhook delivery attempts, by outcome",
            labels=["outcome"],
        )
        outcomes = e.webhooks.outcomes if e.webhooks is not None else {}
        for outcome in ("delivered", "retrying", "failed"):
            deliveries.add_metric([outcome], outcomes.get(outcome, 0))
        yield deliveries

    def _stages(self) -> Metric:
        e = self.rt.engines
        stage = CounterMetricFamily(
            "cuecard_stage_seconds",
            "seconds spent in each stage of the calls' pipeline (asr: the recognizer thread; "
            "insight: text analysis and prosody; diarize: the voice encoder; store_append: "
            "durable events written)",
            labels=["stage"],
        )
        stage.add_metric(["asr"], e.scheduler.busy_s)
        stage.add_metric(["insight"], executor_stats(e.nlp_executor)[0])
        stage.add_metric(["diarize"], executor_stats(e.voice_executor)[0])
        stage.add_metric(["store_append"], e.metrics.store_append_s)
        return stage

    def describe(self) -> Iterator[Metric]:
        return self.collect()


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)
