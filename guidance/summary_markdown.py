"""The summary as Markdown, for people: CRM notes, e-mail, ``cuecard summary``."""

from __future__ import annotations

from guidance.summary import Summary


def _clock(s: float) -> str:
    m, sec = divmod(round(s), 60)
    return f"{m}:{sec:02d}"


def render_markdown(s: Summary) -> str:
    """The summary as a Markdown document for people (CRM notes, e-mail)."""
    lines = [
        f"# Call summary: {s.call_id}",
        "",
        f"*{s.call_date} · {_clock(s.duration_s)} · outcome: {s.outcome.replace('_', ' ')}"
        + (f" · lead score {s.lead_score}" if s.lead_score is not None else "")
        + f" · engine: {s.engine}*",
        "",
        s.overview,
        "",
    ]

    def section(title: str, rows: list[str]) -> None:
        lines.extend([f"## {title}", ""] + (rows or ["_None._"]) + [""])

    section("Customer needs", [f"- {m.text} ({_clock(m.start_s)})" for m in s.needs])
    section(
        "Objections",
        [
            f'- **{o.kind}** ({_clock(o.start_s)}): "{o.text}" — {o.handling}'
            + (f'; rep: "{o.response}"' if o.response else "")
            for o in s.objections
        ],
    )
    section("Buying signals", [f"- {m.text} ({_clock(m.start_s)})" for m in s.buying_signals])
    section("Next steps", [f"- {m.text} ({m.speaker}, {_clock(m.start_s)})" for m in s.next_steps])
    section(
        "Action items",
        [
            f"- [ ] **{a.owner}**: {a.item}" + (f" — due {a.due} ({a.due_text})" if a.due else "")
            for a in s.action_items
        ],
    )
    lines.extend(
        [
            "## Talk statistics",
            "",
            "| speaker | talk | share | words/min | questions | longest monologue |",
            "|---|---|---|---|---|---|",
        ]
    )
    for t in s.talk:
        wpm = "-" if t.words_per_min is None else f"{t.words_per_min:.0f}"
        lines.append(
            f"| {t.speaker} | {_clock(t.talk_s)} | {t.talk_share:.0%} | {wpm} | "
            f"{t.questions} | {_clock(t.longest_monologue_s)} |"
        )
    lines.extend(
        [
            "",
            "## Sentiment and engagement",
            "",
            "| window | customer sentiment | rep sentiment | engagement |",
            "|---|---|---|---|",
        ]
    )
    for p in s.timeline:
        lines.append(
            f"| {_clock(p.start_s)}-{_clock(p.end_s)} | {_fmt(p.customer_sentiment)} | "
            f"{_fmt(p.rep_sentiment)} | {_fmt(p.engagement)} |"
        )
    lines.append("")
    if s.lead_score is not None:
        section(f"Lead score: {s.lead_score}", [f"- {r}" for r in s.score_reasons])
    return "\n".join(lines).rstrip() + "\n"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"
