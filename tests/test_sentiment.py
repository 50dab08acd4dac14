"""Sales sentiment: valence of intent scores, polarity metric, and the real model's signs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlp.insight import IntentResult
from nlp.intent import Example
from nlp.sentiment import (
    LABEL_VALENCE,
    IntentValenceSentiment,
    polarity,
    polarity_accuracy,
    valence_from_examples,
)


def test_valence_is_probability_weighted() -> None:
    """Sentiment is the expected valence of the intent distribution."""
    s = IntentValenceSentiment({"objection_price": -1.0, "positive": 1.0, "other": 0.0})
    r = IntentResult(
        "objection_price", 0.7, {"objection_price": 0.7, "positive": 0.2, "other": 0.1}
    )
    assert s.of(r) == pytest.approx(-0.5)


def test_blank_result_scores_zero() -> None:
    """All-zero scores (blank text) give sentiment 0."""
    assert (
        IntentValenceSentiment().of(IntentResult("other", 0.0, dict.fromkeys(LABEL_VALENCE, 0.0)))
        == 0.0
    )


def test_valence_from_data_uses_line_sentiment_over_label_default() -> None:
    """A label's valence is the mean of its lines' sentiment, defaulting per label."""
    v = valence_from_examples(
        [Example("a", "upsell", 0.5), Example("b", "upsell", 1.0), Example("c", "objection_price")]
    )
    assert v == {"objection_price": -1.0, "upsell": 0.75}


def test_polarity_band() -> None:
    """Values inside the neutral band count as neutral for accuracy."""
    assert [polarity(v) for v in (-0.9, -0.1, 0.1, 0.6)] == [-1, 0, 0, 1]
    assert polarity_accuracy([-0.9, 0.1, 0.6], [-1.0, 0.0, -1.0]) == pytest.approx(2 / 3)


@pytest.mark.model
def test_sales_sentiment_signs(tmp_path: Path) -> None:
    """Price objections are negative and praise or buying intent positive on the real model."""
    import datetime as dt

    from models.minilm import MiniLMEmbedder, MiniLMOptions
    from nlp.analyze import load_analyzer

    analyzer = load_analyzer(MiniLMEmbedder(MiniLMOptions(cache_dir=tmp_path)))
    day = dt.date(2025, 3, 12)
    texts = [
        "the price is too high for us",
        "honestly we can't get this past our security team",
        "this is exactly what we've been looking for",
        "great, send over the contract and we'll sign it",
    ]
    got = [a.sentiment for a in analyzer.analyze_many(texts, call_date=day)]
    assert got[0] < -0.25 and got[1] < -0.25
    assert got[2] > 0.25 and got[3] > 0.25
    assert all(-1.0 <= v <= 1.0 for v in got)
