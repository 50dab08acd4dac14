"""The outputs of ``python -m bench``: report.json, report.md and three PNG plots.

- ``latency_cdf.png``: the CDFs of final, first-partial and card latency, one line per level,
  the targets marked;
- ``lag.png``: final latency against wall time through each level's replay (transcript lag);
- ``latency_vs_calls.png``: p50 and p95 of final, first-partial and card latency against the
  number of concurrent calls.

The Markdown names the machine and the command with every table, so a figure quoted from it
says where it was measured. The README's instrument figures are that Markdown, pasted by
``update_readme`` between its ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers
(``python -m bench ... --readme README.md``, or ``python -m bench.report REPORT.json --readme
README.md`` from a saved run), never typed by hand. Plots need matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTS = {"latency_cdf": "latency_cdf.png", "lag": "lag.png", "concurrency": "latency_vs_calls.png"}
SHOWN = ("final", "partial", "card")
TITLES = {"final": "final", "partial": "first partial", "card": "card (customer)"}


def require_matplotlib() -> None:
    """Fail before a long run, with the command that fixes it."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("the benchmark's plots need matplotlib: pip install -e '.[bench]'")


def write_outputs(report: dict[str, Any], folder: Path) -> None:
    """Plots, Markdown and JSON (in that order: the JSON lists the files) into ``folder``."""
    plots = plot_all(report, folder)
    report["files"] = {
        "json": str(folder / "report.json"),
        "markdown": str(folder / "report.md"),
        "events": str(folder / "events.jsonl"),
        "plots": {k: str(p) for k, p in plots.items()},
    }
    (folder / "report.md").write_text(markdown(report))
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_readme(path: Path, report: dict[str, Any]) -> None:
    """Replace what lies between ``BEGIN`` and ``END`` in ``path`` with the report's Markdown
    (its title and plots left out: the README links the results folder instead)."""
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path} needs one {BEGIN} ... {END} block")
    body = [line for line in markdown(report).splitlines()[1:] if not line.startswith("![")]
    block = "\n".join(body).strip()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.report", description="README from a run")
    p.add_argument("report", type=Path, help="a run's report.json")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    a = p.parse_args(argv)
    update_readme(a.readme, json.loads(a.report.read_text()))
    print(f"{a.readme}: figures of {a.report}")
    return 0


def _pair(s: dict[str, Any], a: str = "p50", b: str = "p95") -> str:
    if s.get(a) is None:
        return "not measured"
    return f"{s[a]:.2f} / {s[b]:.2f} s (n={s['n']})"


def machine_line(m: dict[str, Any]) -> str:
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m["flags"].items())
    return (
        f"{m['cpu_model']} ({m['arch']}), {m['physical_cores']} cores / {m['threads']} threads"
        f" ({m['usable_cpus']} usable), {flags}, {m['memory_gb']} GB; load average before the run"
        f" {m['load_1m_before']:.2f}. Server: model {m['model']}, device {m['device']}, compute "
        f"{m['compute_type']}, {m.get('asr_workers', 1)} ASR workers of {m['asr_threads']} threads."
        + (
            f" CTranslate2 forced to its {isa} kernels (CT2_FORCE_CPU_ISA={isa}: an emulated"
            f" {isa}-only CPU)."
            if (isa := m.get("ct2_force_cpu_isa"))
            else ""
        )
    )


def markdown(report: dict[str, Any]) -> str:
    o = report["options"]
    lines = [
        f"# Cuecard benchmark, {report['created']}",
        "",
        f"Command: `{o['command']}`",
        "",
        f"Machine: {machine_line(report['machine'])}",
        "",
        f"Path: {o['path']}; 1.0x replays, call i starts {o['stagger_s']} s after call i-1, the"
        " first 5 s of each call excluded; the simulators run on the same machine. Calls in the"
        f" set: {', '.join(c['name'] + ' (' + str(c['audio_s']) + ' s)' for c in report['call_set'])}.",
        "",
        "| calls | final p50 / p95 | first partial p50 / p95 | card p50 / p95 | insight stage p95"
        " | lag trend, first -> last final (growing) | WER streamed / offline (Δ points) | objection"
        " cards | within targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lvl in report["levels"]:
        lines.append(_latency_row(lvl))
    lines += [
        "",
        "| calls | RTF per stage (compute s per call-audio s) | server CPU, cores | server CPU s"
        " per audio s | server RSS peak / mean | bench client CPU, cores | dropped work |",
        "|---|---|---|---|---|---|---|",
    ]
    for lvl in report["levels"]:
        lines.append(_load_row(lvl))
    lines += [
        "",
        "RTF: `asr` and any other `*_busy_s` counter of `/v1/stats` is the stage's busy wall time"
        " (on a loaded machine it includes waiting for a core); `server_cpu` is the server"
        " process's CPU time; `vad_offline` is the Silero VAD timed in the benchmark process on"
        " the first call.",
    ]
    if "capacity" in report:
        cap, t = report["capacity"], report["capacity"]["targets"]
        first = cap["first_failing"]
        lines += [
            "",
            f"Capacity: **{cap['calls']} concurrent calls** within final p95 <= "
            f"{t['final_p95_s']} s, card p95 <= {t['card_p95_s']} s and no growing lag (the final"
            f" latency's trend rises less than {t['lag_growth_s']} s over the replay)"
            + (f"; {first} calls were not." if first else f"; the search stopped at {o['max_calls']}."),
        ]  # fmt: skip
    if report["unmeasured"]:
        lines += ["", f"Not measured: {', '.join(report['unmeasured'])}."]
    lines += ["", *(f"![{k}]({Path(p).name})" for k, p in report["files"]["plots"].items())]
    return "\n".join(lines) + "\n"


def _latency_row(lvl: dict[str, Any]) -> str:
    lat, lag, wer = lvl["latency_s"], lvl["lag"], lvl.get("wer") or {}
    lag_text = (
        "not measured"
        if lag["growing"] is None
        else f"{lag['start_s']:.2f} -> {lag['end_s']:.2f} s ({'yes' if lag['growing'] else 'no'})"
    )
    wer_text = (
        f"{100 * wer['streamed']:.1f} % / {100 * wer['offline']:.1f} % ({wer['delta_points']:+.1f})"
        if wer
        else "not measured"
    )
    ins = lat["insight_stage"]["p95"]
    obj = lvl.get("objection_cards")
    cells = [
        str(lvl["calls"]),
        _pair(lat["final"]),
        _pair(lat["partial"]),
        _pair(lat["card"]) + f", {lvl.get('rate_limited_cards', 0)} more waited for the rate limit",
        "not measured" if ins is None else f"{1000 * ins:.0f} ms",
        lag_text,
        wer_text,
        f"{obj['carded']}/{obj['turns']}" if obj else "-",
        "yes" if lvl["within_targets"] else "no",
    ]
    return "| " + " | ".join(cells) + " |"


def _load_row(lvl: dict[str, Any]) -> str:
    s = lvl["server"]
    cells = [
        str(lvl["calls"]),
        ", ".join(f"{k} {v:.3f}" for k, v in lvl["rtf"].items()),
        f"{s['cpu_cores']:.2f}",
        f"{s['cpu_per_audio_s']:.3f}",
        f"{s['rss_peak_mb']:.0f} / {s['rss_mean_mb']:.0f} MB",
        f"{s['bench_client_cpu_cores']:.2f}",
        ", ".join(f"{k} {v}" for k, v in lvl["dropped"].items()),
    ]
    return "| " + " | ".join(cells) + " |"


def plot_all(report: dict[str, Any], folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels, o = report["levels"], report["options"]
    title = f"{report['machine']['cpu_model']}, {report['machine']['model']}, {o['path']}"
    out = {k: folder / name for k, name in PLOTS.items()}
    targets = {"final": o["targets"]["final_p95_s"], "card": o["targets"]["card_p95_s"]}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, kind in zip(axes, SHOWN, strict=True):
        for lvl in levels:
            xs = sorted(v for _, v in lvl["samples"][kind])
            if xs:
                ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post",
                        label=f"{lvl['calls']} calls")  # fmt: skip
        if kind in targets:
            ax.axvline(targets[kind], color="red", ls=":", label=f"p95 target {targets[kind]} s")
        ax.set(title=f"{TITLES[kind]} latency", xlabel="seconds", ylabel="share of events")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, title, out["latency_cdf"])
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for lvl in levels:
        pts = sorted(lvl["samples"]["final"])
        ax.plot([t for t, _ in pts], [v for _, v in pts], ".-", ms=3, lw=0.6,
                label=f"{lvl['calls']} calls")  # fmt: skip
    ax.axhline(targets["final"], color="red", ls=":", label="final p95 target")
    ax.set(title="transcript lag: final latency through the replay",
           xlabel="wall time since the level's first call started, s", ylabel="final latency, s")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, title, out["lag"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ns = [lvl["calls"] for lvl in levels]
    for kind, color in zip(SHOWN, ("C0", "C1", "C2"), strict=True):
        for q, ls, face in (("p50", "--", "white"), ("p95", "-", color)):
            ys = [lvl["latency_s"][kind][q] for lvl in levels]
            ax.plot(ns, [float("nan") if y is None else y for y in ys], ls, marker="o",
                    color=color, mfc=face, label=f"{TITLES[kind]} {q}")  # fmt: skip
    for kind, y in targets.items():
        ax.axhline(y, color="red", ls=":", lw=0.8)
        ax.annotate(f"{kind} p95 target", (ns[0], y), fontsize=7, color="red")
    ax.set(title="latency against concurrent calls", xlabel="concurrent calls", ylabel="seconds")
    ax.set_xticks(ns)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, title, out["concurrency"])
    return out


def _save(fig: Any, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
