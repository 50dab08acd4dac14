"""``python -m bench.bench_load``, run tiny against a real server: its JSON carries every figure
the load test promises, each one measured, and the server came through it clean (no errors,
every half-open and never-reading connection let go, no task left behind, no event lost or
sent twice across reconnects)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients.localserver import REPO
from tests.test_bench_quick import unmeasured

pytestmark = [pytest.mark.model, pytest.mark.slow]

TINY = ["--connections", "21", "--connect-s", "3", "--half-open", "3", "--viewers", "5",
        "--steady", "2", "--quiet-s", "4", "--storm-s", "6", "--never-read", "2",
        "--short-call", "--handshake-timeout-s", "2", "--settle-s", "3"]  # fmt: skip


def test_the_tiny_load_test_measures_every_figure(tmp_path: Path) -> None:
    """Every figure is measured (no None, NaN or empty), and the server came through clean."""
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_load", *TINY, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| figure | value |" in done.stdout
    report = json.loads(out.read_text())
    assert unmeasured(report) == []
    c, s = report["connections"], report["storm"]
    assert set(report) >= {"rss_mb", "tasks", "connections", "storm", "load_average"}
    assert {"baseline", "peak_connections", "peak_storm", "after"} <= set(report["rss_mb"])
    assert c["errors"] == 0
    assert sum(n for kind in c["outcomes"].values() for n in kind.values()) == 21
    assert c["outcomes"]["viewer"] == {"closed 4404": 7}
    assert c["half_open_closed_by_server"] == 3
    assert s["storm_errors"] == 0 and s["storm_connections"] >= 5
    assert s["storm_duplicates"] == 0 and s["storm_missed"] == 0
    assert s["never_read_held_open"] == 0
    assert report["tasks"]["leaked"] == 0
