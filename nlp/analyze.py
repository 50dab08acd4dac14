"""The text half of an ``insight``: intent + entities + sentiment for one utterance.

``Analyzer.analyze`` is synchronous and blocking (one embedding per utterance); run it in the
model's executor. The command-line entry points (``cuecard analyze``, ``cuecard train-intent``)
live in ``server/intent_cli.py``; this module knows only the ``SentenceEmbedder`` and
``IntentClassifier`` seams, never a concrete model module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nlp.denial import denied_concerns, without_denied
from nlp.entities import DEFAULT_COMPETITORS, extract_entities
from nlp.insight import Entity, IntentResult
from nlp.intent import (
    DATA_DIR,
    EmbeddingIntentClassifier,
    IntentClassifier,
    IntentOptions,
    SentenceEmbedder,
    load_examples,
)
from nlp.sentiment import IntentValenceSentiment, valence_from_examples

MAX_TEXT_CHARS = 2000  # ~400 words; the embedder reads 128 tokens anyway


@dataclass(frozen=True, slots=True)
class TextAnalysis:
    intent: IntentResult
    entities: tuple[Entity, ...]
    sentiment: float


@dataclass(frozen=True, slots=True)
class AnalyzerOptions:
    competitors: Mapping[str, Sequence[str]] = field(default_factory=lambda: DEFAULT_COMPETITORS)


class Analyzer:
    """Classifier + entity rules + sentiment for one utterance; blocking.

    Sentiment is the expected valence of the intent scores (``IntentValenceSentiment``): no
    second model call. An objection the text explicitly denies ("the price is not an issue",
    ``nlp.denial``) is taken off the intent before anything else sees it.
    """

    def __init__(
        self,
        classifier: IntentClassifier,
        options: AnalyzerOptions,
        *,
        valence: IntentValenceSentiment | None = None,
    ) -> None:
        self._classifier = classifier
        self._options = options
        self._valence = valence or IntentValenceSentiment()

    def warmup(self) -> None:
        self._classifier.warmup()

    def analyze(self, text: str, *, call_date: dt.date) -> TextAnalysis:
        return self.analyze_many([text], call_date=call_date)[0]

    def analyze_many(self, texts: Sequence[str], *, call_date: dt.date) -> list[TextAnalysis]:
        cut = [t[:MAX_TEXT_CHARS] for t in texts]
        intents = [
            without_denied(intent, denied_concerns(t))
            for t, intent in zip(cut, self._classifier.classify(cut), strict=True)
        ]
        return [
            TextAnalysis(
                intent,
                extract_entities(t, call_date=call_date, competitors=self._options.competitors),
                self._valence.of(intent),
            )
            for t, intent in zip(cut, intents, strict=True)
        ]


def load_analyzer(
    embedder: SentenceEmbedder,
    *,
    intent: IntentOptions | None = None,
    options: AnalyzerOptions | None = None,
    data_path: Path = DATA_DIR / "intents.jsonl",
) -> Analyzer:
    """The default analyzer; label valences come from ``data_path`` (the user's labels too)."""
    classifier = EmbeddingIntentClassifier.load(embedder, intent or IntentOptions())
    valence = IntentValenceSentiment(valence_from_examples(load_examples(data_path)))
    return Analyzer(classifier, options or AnalyzerOptions(), valence=valence)
