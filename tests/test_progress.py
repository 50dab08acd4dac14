"""The coach's clock core (``audio.progress.Progress``), table-tested: it stops at the audio the
VAD has not judged and at every utterance not yet settled, and never runs past what arrived."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from audio.chunk import SAMPLE_RATE_HZ
from audio.progress import Progress

S = SAMPLE_RATE_HZ
Step = Callable[[Progress], None]


def received(speaker: str, s: float) -> Step:
    return lambda p: p.received(speaker, int(s * S))  # type: ignore[arg-type]


def heard(speaker: str, s: float) -> Step:
    return lambda p: p.heard(speaker, int(s * S))  # type: ignore[arg-type]


def started(uid: str, s: float) -> Step:
    return lambda p: p.started(uid, int(s * S))


def settled(uid: str) -> Step:
    return lambda p: p.settled(uid)


CASES: list[tuple[str, list[Step], float, float]] = [
    # (case, steps, through_s, audio_s)
    ("nothing yet", [], 0.0, 0.0),
    ("received, not judged", [received("rep", 2), received("customer", 2)], 0.0, 2.0),
    (
        "one channel judged, the other not",
        [received("rep", 2), received("customer", 2), heard("rep", 2)],
        0.0,
        2.0,
    ),
    (
        "both judged: through the end",
        [received("rep", 2), received("customer", 2), heard("rep", 2), heard("customer", 2)],
        2.0,
        2.0,
    ),
    (
        "a lagging VAD holds the clock at what it judged",
        [received("rep", 3), received("customer", 3), heard("rep", 3), heard("customer", 1.5)],
        1.5,
        3.0,
    ),
    (
        "a quiet channel that caught up counts to the call's end",
        [received("rep", 1), received("customer", 3), heard("rep", 1), heard("customer", 3)],
        3.0,
        3.0,
    ),
    (
        "an unsettled utterance holds the clock at its start",
        [
            received("rep", 4),
            received("customer", 4),
            started("customer-1", 1.2),
            heard("rep", 4),
            heard("customer", 4),
        ],
        1.2,
        4.0,
    ),
    (
        "the oldest unsettled utterance wins",
        [
            received("rep", 4),
            received("customer", 4),
            started("customer-1", 2.5),
            started("rep-1", 0.8),
            heard("rep", 4),
            heard("customer", 4),
        ],
        0.8,
        4.0,
    ),
    (
        "settling releases the clock",
        [
            received("rep", 4),
            received("customer", 4),
            started("customer-1", 1.2),
            heard("rep", 4),
            heard("customer", 4),
            settled("customer-1"),
        ],
        4.0,
        4.0,
    ),
    (
        "settling twice, or an unknown id, changes nothing",
        [
            received("rep", 2),
            heard("rep", 2),
            started("rep-1", 0.5),
            settled("rep-1"),
            settled("rep-1"),
            settled("never"),
        ],
        2.0,
        2.0,
    ),
    (
        "new audio that is not judged yet stops the clock again",
        [received("rep", 2), heard("rep", 2), received("rep", 2.5)],
        2.0,
        2.5,
    ),
    (
        "times never go backwards",
        [received("rep", 2), received("rep", 1), heard("rep", 2), heard("rep", 1)],
        2.0,
        2.0,
    ),
]


@pytest.mark.parametrize(
    ("case", "steps", "through_s", "audio_s"), CASES, ids=[c[0] for c in CASES]
)
def test_the_clock(case: str, steps: list[Step], through_s: float, audio_s: float) -> None:
    progress = Progress(("rep", "customer"))
    for step in steps:
        step(progress)
    assert (progress.through_s, progress.audio_s) == (through_s, audio_s)


def test_audio_of_an_undeclared_speaker_is_refused() -> None:
    """A chunk for a speaker the start message did not declare is a protocol error."""
    progress = Progress(("customer",))
    with pytest.raises(ValueError, match="not declared"):
        progress.received("rep", 320)


def test_unsettled_counts_the_utterances_in_flight() -> None:
    progress = Progress(("rep",))
    progress.started("rep-1", 0)
    progress.started("rep-2", 100)
    progress.settled("rep-1")
    assert progress.unsettled == 1
