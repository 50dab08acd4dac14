"""``python -m bench``: the benchmark as the product's instrument (``bench.instrument``).

    python -m bench --quick                      # about a minute: 2 short calls at once
    python -m bench --calls 1 2 4 [--telephone] [--model base] [--real FILE.wav ...]
    python -m bench --capacity [--quick] [--max-calls 16] [--telephone] [--model base]
                                                 # each call: 2 (quick) or 3 of the set chained

Writes report.json, report.md, the PNG plots and events.jsonl to bench/results/<stamp>/ and
prints the Markdown report's path; a progress bar runs on stderr. ``--readme README.md``
pastes the report into the README's bench block (``bench.report.update_readme``).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from pathlib import Path

from bench.instrument import RESULTS, BenchOptions, run_bench
from bench.report import update_readme


def parse(argv: list[str]) -> BenchOptions:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two ~25 s calls (about a minute)")
    p.add_argument("--calls", type=int, nargs="+", metavar="N", help="concurrency levels")
    p.add_argument("--capacity", action="store_true", help="search the largest N in targets")
    p.add_argument("--max-calls", type=int, default=16, help="capacity search ceiling")
    p.add_argument("--model", default="tiny.en", help="tiny.en or base (CUECARD_MODEL)")
    p.add_argument("--telephone", action="store_true", help="Twilio 8 kHz mu-law, not 16 kHz")
    p.add_argument("--stagger", type=float, default=1.3, help="seconds between call starts")
    p.add_argument("--real", type=Path, nargs="+", default=[], metavar="WAV",
                   help="recordings to add (FILE.txt / FILE.rep.txt, FILE.customer.txt: references)")  # fmt: skip
    p.add_argument("--no-scripted", action="store_true", help="only the --real recordings")
    p.add_argument("--chain", type=int, help="calls of the set per replayed call, back to back"
                   " (default 1; --capacity: 2 with --quick, else 3)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument("--readme", type=Path, help="paste the report into this README's bench block")
    a = p.parse_args(argv)
    return BenchOptions(
        quick=a.quick,
        levels=tuple(a.calls or [2]),
        capacity=a.capacity,
        max_calls=a.max_calls,
        model=a.model,
        telephone=a.telephone,
        stagger_s=a.stagger,
        real=tuple(a.real),
        scripted=not a.no_scripted,
        chain=a.chain or ((2 if a.quick else 3) if a.capacity else 1),
        out_dir=a.out,
        command=shlex.join(["python", "-m", "bench", *argv]),
        readme=a.readme,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    report = asyncio.run(run_bench(opts))
    print(report["files"]["markdown"])
    if opts.readme is not None:
        update_readme(opts.readme, report)
        print(f"{opts.readme}: its bench block is this run's")
    return 1 if report["unmeasured"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
