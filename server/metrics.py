"""What ``GET /metrics`` exposes: one Prometheus registry per runtime, never the global one
(tests build several apps in one process).

``Metrics`` (held by ``Engines``, so every call and the app reach the same one) owns the
registry and the collectors the server layer updates as things happen: the latency histograms
(``server.latency`` decides what a latency is), WebSocket closes by code, limits hit, calls
refused, failed authentications, seconds spent appending to the store, model load times. What
the cores already count (the recognizer's busy seconds and dropped partials, the bus's and the
webhook sender's drops, live calls, viewers) is read when Prometheus scrapes, by the collector
``server.ops`` binds with ``bind``: ``nlp/``, ``audio/`` and ``guidance/`` never import
prometheus_client.

``TimedExecutor`` is a thread pool that adds up the seconds its jobs ran (``busy_s``) and how
many ran: the per-stage seconds of the nlp (insight) and voice (diarize) threads. It reads
``time.perf_counter`` in its worker thread: compute time, not a latency stamp.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

_P = ParamSpec("_P")
_T = TypeVar("_T")

# seconds: from a partial within a frame to a backlog that has lost the call
LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
LATENCY_KINDS = ("final", "partial", "card")

# A close reason that ends naming a limit's setting, e.g. "... (CUECARD_MAX_CALLS)" (the
# reasons built from client input quote it: they never end with a bare parenthesis).
_LIMIT = re.compile(r"\(CUECARD_([A-Z0-9_]+)\)$")
LIMITS = frozenset({
    "max_frame_bytes", "max_text_bytes", "max_viewer_message_bytes", "max_messages_per_s",
    "max_audio_speed", "max_calls", "max_viewers_per_call", "twilio_max_gap_s", "max_body_bytes",
})  # fmt: skip
# A 1008 close about credentials (the token, a signature, a scope), not about the call id.
_AUTH = re.compile(r"token|signature|scope|unauthori[sz]ed|credential|api.?key", re.IGNORECASE)


def _registered(registry: CollectorRegistry) -> dict[str, Any]:
    """The collectors ``Metrics`` updates directly, all on ``registry``."""
    latency = {
        kind: Histogram(
            f"cuecard_{kind}_latency_seconds",
            f"{kind} latency, measured at publication (docs/api.md, Operations)",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        for kind in LATENCY_KINDS
    }
    return {
        "latency": latency,
        "closes": Counter(
            "cuecard_websocket_closes",
            "WebSocket closes sent by the server, by close code",
            ["code"],
            registry=registry,
        ),
        "limits": Counter(
            "cuecard_limit_hits",
            "limits a peer hit, by the setting that bounds it (lower case, no CUECARD_)",
            ["limit"],
            registry=registry,
        ),
        "refused": Counter(
            "cuecard_calls_refused",
            "new calls refused, by reason (capacity: CUECARD_MAX_CALLS live calls)",
            ["reason"],
            registry=registry,
        ),
        "auth": Counter(
            "cuecard_auth_failures",
            "requests and sockets refused for a missing or wrong credential",
            ["transport"],
            registry=registry,
        ),
        "load": Gauge(
            "cuecard_model_load_seconds",
            "seconds each model took to load and warm up at start-up",
            ["model"],
            registry=registry,
        ),
    }


@dataclass
class Metrics:
    """The runtime's registry and what the server layer records into it."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    store_append_s: float = 0.0  # read by the bound collector as stage store_append
    store_appends: int = 0
    _c: dict[str, Any] = field(init=False, repr=False)
    _bound: Collector | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._c = _registered(self.registry)

    def bind(self, collector: Collector) -> None:
        """Read ``collector`` at every scrape; it replaces the one bound before, if any."""
        if self._bound is not None:
            self.registry.unregister(self._bound)
        self.registry.register(collector)
        self._bound = collector

    def latency(self, kind: str, seconds: float) -> None:
        self._c["latency"][kind].observe(max(0.0, seconds))

    def store_append(self, seconds: float) -> None:
        self.store_append_s += seconds
        self.store_appends += 1

    def refused(self, reason: str) -> None:
        self._c["refused"].labels(reason=reason).inc()

    def auth_failed(self, transport: str) -> None:
        self._c["auth"].labels(transport=transport).inc()

    def limit_hit(self, setting: str) -> None:
        """``setting``: a limit's name, ``max_calls`` or ``CUECARD_MAX_CALLS``."""
        name = setting.lower().removeprefix("cuecard_")
        if name in LIMITS:
            self._c["limits"].labels(limit=name).inc()

    def model_loaded(self, model: str, seconds: float) -> None:
        self._c["load"].labels(model=model).set(seconds)

    def sent(self, kind: str, message: Mapping[str, Any]) -> None:
        """An ASGI message the app sends (``server.ops``'s middleware): WebSocket closes by
        code (a limit's setting named in the reason counts as that limit hit, a 1008 about a
        credential as a failed authentication); HTTP 401 as a failed authentication, 413 as
        ``max_body_bytes``."""
        if message["type"] == "websocket.close":
            code = int(message.get("code", 1000))
            reason = str(message.get("reason") or "")
            self._c["closes"].labels(code=str(code) if 1000 <= code <= 4999 else "other").inc()
            if (limit := _LIMIT.search(reason)) is not None:
                self.limit_hit(limit.group(1))
            if code == 1008 and _AUTH.search(reason):
                self.auth_failed("websocket")
        elif message["type"] in ("http.response.start", "websocket.http.response.start"):
            status = int(message.get("status", 200))
            if status == 401:
                self.auth_failed("http" if kind == "http" else "websocket")
            elif status == 413:
                self.limit_hit("max_body_bytes")


class TimedExecutor(ThreadPoolExecutor):
    """A thread pool that counts the seconds its jobs ran (``busy_s``) and how many (``jobs``)."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self.busy_s = 0.0
        self.jobs = 0

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        def timed() -> _T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.busy_s += time.perf_counter() - t0
                self.jobs += 1

        return super().submit(timed)


def executor_stats(executor: object) -> tuple[float, int]:
    """(busy seconds, jobs) of a ``TimedExecutor``; (0, 0) for any other executor."""
    if isinstance(executor, TimedExecutor):
        return executor.busy_s, executor.jobs
    return 0.0, 0
