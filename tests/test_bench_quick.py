"""``cuecard bench --quick`` (``python -m bench``) through the real server: the report carries every figure it
promises, each one measured, and draws its plots."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.callset import scripted_set
from bench.realspeech import normalise
from clients.localserver import REPO

pytestmark = [pytest.mark.model, pytest.mark.slow]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def unmeasured(x: Any, path: str = "report") -> list[str]:
    """Every None, NaN or empty container in the report, by path."""
    if isinstance(x, dict):
        return [p for k, v in x.items() for p in unmeasured(v, f"{path}.{k}")] or (
            [] if x else [path]
        )
    if isinstance(x, list):
        return [p for i, v in enumerate(x) for p in unmeasured(v, f"{path}[{i}]")]
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return [path]
    return []


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    markdown = Path(done.stdout.strip().splitlines()[-1])
    return json.loads((markdown.parent / "report.json").read_text()), markdown


def test_every_figure_of_the_quick_benchmark_is_measured(
    quick: tuple[dict[str, Any], Path],
) -> None:
    """No None, NaN or empty figure anywhere in report.json; the run says nothing is unmeasured."""
    report, _ = quick
    assert report["unmeasured"] == []
    assert unmeasured(report) == []


def test_the_report_names_the_machine_and_the_model(quick: tuple[dict[str, Any], Path]) -> None:
    """The machine block: CPU model, the int8 kernel flags, cores, threads, model, compute type."""
    m = quick[0]["machine"]
    assert isinstance(m["cpu_model"], str) and m["cpu_model"]
    assert set(m["flags"]) == {"avx2", "avx512f", "avx512_vnni"}
    assert all(isinstance(v, bool) for v in m["flags"].values())
    assert m["physical_cores"] >= 1 and m["threads"] >= m["physical_cores"]
    assert (m["model"], m["device"]) == ("tiny.en", "cpu")
    assert m["compute_type"] and m["asr_threads"] >= 1 and m["asr_workers"] >= 1


def test_a_level_carries_latency_lag_load_drops_and_wer(quick: tuple[dict[str, Any], Path]) -> None:
    """Two concurrent calls: every latency kind sampled, sane percentiles, load and WER counted
    over exactly the scripted reference words of both calls."""
    report, _ = quick
    (level,) = report["levels"]
    assert level["calls"] == 2
    for kind in ("final", "partial", "card", "insight_stage"):
        s = level["latency_s"][kind]
        assert s["n"] >= 1 and len(level["samples"][kind]) == s["n"], kind
        assert s["p50"] <= s["p95"] <= s["max"], kind
    assert isinstance(level["lag"]["growing"], bool)
    assert level["rtf"]["asr"] > 0 and level["rtf"]["vad_offline"] > 0
    assert level["server"]["cpu_cores"] > 0 and level["server"]["rss_peak_mb"] > 100
    assert all(isinstance(v, int) and v >= 0 for v in level["dropped"].values())
    assert level["dropped"]["calls_closed_abnormally"] == 0
    words = sum(len(normalise(r)) for c in scripted_set(quick=True) for r in c.references.values())
    assert level["wer"]["words"] == words
    assert 0 <= level["wer"]["offline"] <= 1 and 0 <= level["wer"]["streamed"] <= 1
    assert level["objection_cards"]["turns"] == sum(
        len(c.objection_turns) for c in scripted_set(quick=True)
    )
    assert isinstance(level["within_targets"], bool)


def test_the_markdown_and_the_plots_are_written(quick: tuple[dict[str, Any], Path]) -> None:
    """report.md holds the machine and the level's row; each plot is a valid, non-trivial PNG."""
    from PIL import Image

    report, markdown = quick
    text = markdown.read_text()
    assert report["machine"]["cpu_model"] in text and "\n| 2 | " in text
    assert "not measured" not in text
    assert set(report["files"]["plots"]) == {"latency_cdf", "lag", "concurrency"}
    for path in map(Path, report["files"]["plots"].values()):
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.width >= 400 and image.height >= 300
            assert len(image.convert("L").getcolors(256) or []) > 10  # drawn, not blank


def test_the_readme_block_is_the_report(quick: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """``update_readme`` pastes the report between the markers and nowhere else, the same way
    twice; the project README has its one block; a README without one is refused."""
    from bench.report import BEGIN, END, update_readme

    report, _ = quick
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    update_readme(readme, report)
    once = readme.read_text()
    update_readme(readme, report)
    assert readme.read_text() == once
    head, block = once.split(BEGIN)
    block, tail = block.split(END)
    assert head == "# Title\n\nbefore\n\n" and tail == "\n\nafter\n"
    assert "old figures" not in block and "![" not in block
    assert report["machine"]["cpu_model"] in block and "\n| 2 | " in block
    project = (REPO / "README.md").read_text()
    assert project.count(BEGIN) == 1 and project.count(END) == 1
    (tmp_path / "bare.md").write_text("no block\n")
    with pytest.raises(ValueError, match="bench:begin"):
        update_readme(tmp_path / "bare.md", report)


def test_a_card_that_waited_for_the_rate_limit_is_counted_apart_from_card_latency() -> None:
    """Customer cards after the warm-up give card latency unless they waited for a slot of
    the deck's rate limit (``waited_s``); those are counted apart. Rep cards are neither."""
    from bench.metrics import latency_samples, rate_limited_cards

    def card(speaker: str, end_s: float, received_s: float, waited_s: float) -> dict[str, Any]:
        evidence = {"speaker": speaker, "quote": "q", "start_s": end_s - 1, "end_s": end_s}
        return {"type": "card", "state": "issued", "evidence": evidence,
                "audio_end_s": end_s, "received_s": received_s, "waited_s": waited_s}  # fmt: skip

    events = [
        card("customer", 20.0, 20.3, 0.0),
        card("customer", 30.0, 34.0, 3.5),
        card("rep", 40.0, 44.0, 3.5),
        card("customer", 2.0, 2.2, 0.0),  # in the warm-up
    ]
    cards = [s for s in latency_samples(events, []) if s.kind == "card"]
    assert [round(s.latency_s, 3) for s in cards] == [0.3]
    assert rate_limited_cards(events) == 1


def test_card_accuracy_holds_out_the_turns_whose_card_waited_for_the_rate_limit() -> None:
    """``score_call``: a turn whose right card waited for a rate-limit slot (``waited_s``) is
    recalled but left out of ``latency_not_held_s``; a card that is late without waiting (a
    slow pipeline) stays in it, however late."""
    from bench.bench_card_accuracy import score_call
    from bench.card_scripts import LabelledTurn
    from clients.callgen import RenderedCall, Spoken

    script = [
        LabelledTurn("customer", "The price is too high.", frozenset({"objection_price"})),
        LabelledTurn("customer", "We use Salesforce.", frozenset({"competitor"})),
    ]
    spoken = (
        Spoken("customer", script[0].text, 10.0, 12.0),
        Spoken("customer", script[1].text, 20.0, 22.0),
    )
    call = RenderedCall(np.zeros(16_000, np.float32), np.zeros(16_000, np.float32), spoken)

    def card(kind: str, turn: Spoken, received_s: float, waited_s: float) -> dict[str, Any]:
        evidence = {"speaker": "customer", "quote": turn.text, "start_s": turn.start_s,
                    "end_s": turn.end_s}  # fmt: skip
        return {"type": "card", "kind": kind, "card_id": kind, "state": "issued",
                "evidence": evidence, "audio_end_s": turn.end_s, "received_s": received_s,
                "waited_s": waited_s}  # fmt: skip

    events = [
        card("objection_price", spoken[0], 15.0, 0.0),
        card("competitor", spoken[1], 26.0, 3.5),
    ]
    scored = score_call(script, call, events)
    assert scored["right"] == 2 and scored["recalled"] == [0, 1]
    assert scored["held_by_rate_limit"] == 1
    assert scored["latency_s"] == [3.0, 4.0]
    assert scored["latency_not_held_s"] == [3.0]


def test_an_objection_counts_as_carded_when_a_card_on_screen_is_updated_to_quote_it() -> None:
    """The deck updates a card of the same kind on screen rather than issue a second: that
    update covers the objection it quotes; a card of the wrong kind, or one the final took
    back, covers nothing."""
    from bench.callset import BenchCall
    from bench.instrument import carded_objections
    from clients.callgen import RenderedCall, Spoken

    spoken = (
        Spoken("customer", "That is too expensive.", 10.0, 12.0),
        Spoken("customer", "Our budget is small.", 20.0, 22.0),
        Spoken("customer", "We are not ready yet.", 30.0, 32.0),
        Spoken("customer", "We do not need it.", 40.0, 42.0),
    )
    silence = np.zeros(16_000, np.float32)
    price, timing = frozenset({"objection_price"}), frozenset({"objection_timing"})
    labels = (price, price, timing, frozenset({"objection_need"}))
    call = BenchCall("c", RenderedCall(silence, silence, spoken), "", {}, (0, 1, 2, 3), labels)

    def card(card_id: str, kind: str, state: str, turn: Spoken) -> dict[str, Any]:
        evidence = {"speaker": "customer", "quote": turn.text, "start_s": turn.start_s,
                    "end_s": turn.end_s}  # fmt: skip
        return {"type": "card", "card_id": card_id, "kind": kind, "state": state,
                "evidence": evidence}  # fmt: skip

    events = [
        card("a", "objection_price", "issued", spoken[0]),
        card("a", "objection_price", "updated", spoken[1]),
        card("b", "objection_price", "issued", spoken[2]),  # the wrong kind for the turn
        card("c", "objection_need", "issued", spoken[3]),
        card("c", "objection_need", "withdrawn", spoken[3]),
    ]
    assert carded_objections(events, call) == {0, 1}
