"""The lead score: a transparent logistic scorecard over CRM prior fields and call signals.

``score = 100 * sigmoid(intercept + sum(weight[f] * x[f]))`` over the named features below; the
weights live in ``guidance/score_coefficients.json`` (written by ``cuecard train-score``), each
with a description in words. Features (counts are capped at ``COUNT_CAP`` so one long call
cannot saturate the score):

- ``buying_signals``, ``objections``, ``questions``, ``next_steps``, ``competitor_mentions``:
  counts of the customer's final utterances with that intent at ``min_confidence`` or more (the
  coach passes the playbook's ``deck.min_confidence``, so every card's intent also moves the
  score); next steps from either speaker;
- ``objections_addressed``: objections the rep answered (a reply of ``ADDRESS_MIN_WORDS`` or
  more within ``ADDRESS_WINDOW_S`` of the objection);
- ``customer_sentiment``, ``customer_engagement``: smoothed (EMA, alpha 0.4) customer text
  sentiment and prosodic engagement, in [-1, 1];
- ``rep_talk_share_over_half``: the rep's share of the talk so far minus 0.5, with
  ``TALK_SHARE_PRIOR_S`` seconds of evenly shared talk counted in, so the rep's opening lines
  do not read as a monologue (without it an 8 s opening and a 2 s reply cost 15 points);
- ``prior.log10_company_size`` (log10 of employees minus 2), ``prior.industry=X``,
  ``prior.lead_source=X``, ``prior.prior_stage=X`` (one-hot; an unseen level adds nothing).

A ``score`` event follows each final customer utterance; its reasons split the change among the
features that moved, in score points (linearised at the midpoint, so they add up to the delta
within rounding), e.g. ``"+8 buying signal: “how long is onboarding for 30 people?”"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guidance.datafile import read_data_file
from guidance.errors import PriorError, ScoreModelError, describe_validation
from nlp.insight import Insight

COUNT_CAP = 6.0
ADDRESS_WINDOW_S = 20.0
ADDRESS_MIN_WORDS = 8
MIN_CONFIDENCE = 0.4  # the default of the playbook's deck.min_confidence
_EMA_ALPHA = 0.4

COUNT_FEATURES = (
    "buying_signals",
    "objections",
    "objections_addressed",
    "questions",
    "next_steps",
    "competitor_mentions",
)
CONVERSATION_FEATURES = (
    *COUNT_FEATURES,
    "customer_sentiment",
    "customer_engagement",
    "rep_talk_share_over_half",
)
PRIOR_CATEGORIES = ("industry", "lead_source", "prior_stage")
TALK_SHARE_PRIOR_S = 120.0


class Prior(BaseModel):
    """CRM fields known when the call starts. Unknown fields are rejected so a typo in a field
    name is an error, not a silently ignored value; text values are normalised to snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    company_size: int | None = Field(default=None, ge=1, le=10_000_000)
    industry: str | None = Field(default=None, min_length=1, max_length=60)
    lead_source: str | None = Field(default=None, min_length=1, max_length=60)
    prior_stage: str | None = Field(default=None, min_length=1, max_length=60)

    @field_validator("industry", "lead_source", "prior_stage")
    @classmethod
    def _normalise(cls, v: str | None) -> str | None:
        return None if v is None else "_".join(v.strip().lower().replace("-", " ").split())


def parse_prior(data: Mapping[str, Any] | None) -> Prior | None:
    """A validated prior, None for no/empty data; ``PriorError`` naming each bad field."""
    if not data:
        return None
    if not isinstance(data, Mapping):
        raise PriorError(f"prior must be an object of CRM fields, got {type(data).__name__}")
    try:
        return Prior.model_validate(dict(data))
    except ValidationError as e:
        problems = describe_validation(e, limit=len(e.errors()), inputs=True)
        raise PriorError("invalid prior: " + problems) from e


def prior_features(prior: Prior | None) -> dict[str, float]:
    if prior is None:
        return {}
    out: dict[str, float] = {}
    if prior.company_size is not None:
        out["prior.log10_company_size"] = math.log10(prior.company_size) - 2.0
    for name in PRIOR_CATEGORIES:
        value = getattr(prior, name)
        if value is not None:
            out[f"prior.{name}={value}"] = 1.0
    return out


def feature_vector(conversation: Mapping[str, float], prior: Prior | None) -> dict[str, float]:
    """Model inputs from raw call features (counts uncapped) and the prior; used for scoring
    and for training, so both see the same transformation."""
    out = {
        f: min(float(conversation.get(f, 0.0)), COUNT_CAP)
        if f in COUNT_FEATURES
        else float(conversation.get(f, 0.0))
        for f in CONVERSATION_FEATURES
    }
    out.update(prior_features(prior))
    return out


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    weight: float
    description: str  # what the feature is, for people reading the file
    up: str  # reason text when the feature rises
    down: str  # reason text when it falls


@dataclass(frozen=True, slots=True)
class ScoreModel:
    intercept: float
    features: dict[str, FeatureSpec]
    training: dict[str, Any] = field(default_factory=dict)

    def logit(self, x: Mapping[str, float]) -> float:
        return self.intercept + sum(
            spec.weight * x.get(name, 0.0) for name, spec in self.features.items()
        )

    def weight(self, name: str) -> float:
        spec = self.features.get(name)
        return spec.weight if spec is not None else 0.0


class _SpecFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(allow_inf_nan=False)
    description: str
    up: str = ""
    down: str = ""


class _ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["cuecard logistic scorecard v1"]
    intercept: float = Field(allow_inf_nan=False)
    features: dict[str, _SpecFile]
    training: dict[str, Any] = {}


def load_score_model(path: str | Path | None = None) -> ScoreModel:
    """Coefficients from ``path`` or the packaged default; ``ScoreModelError`` if unusable."""
    text, name = read_data_file(path, "score_coefficients.json", "score model", ScoreModelError)
    try:
        parsed = _ModelFile.model_validate_json(text)
    except ValidationError as e:
        raise ScoreModelError(f"score model {name}: {describe_validation(e)}") from e
    features = {
        k: FeatureSpec(v.weight, v.description, v.up or k, v.down or k)
        for k, v in parsed.features.items()
    }
    return ScoreModel(parsed.intercept, features, parsed.training)


def write_score_model(model: ScoreModel, path: str | Path) -> None:
    doc = {
        "model": "cuecard logistic scorecard v1",
        "intercept": round(model.intercept, 6),
        "features": {
            k: {
                "weight": round(s.weight, 6),
                "description": s.description,
                "up": s.up,
                "down": s.down,
            }
            for k, s in model.features.items()
        },
        "training": model.training,
    }
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Score:
    """The lead score after an utterance: 0-100, its change, and the reasons for the change."""

    type: ClassVar[str] = "score"

    score: float
    delta: float
    reasons: tuple[str, ...]
    audio_end_s: float


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def _quote(text: str, max_chars: int = 60) -> str:
    text = " ".join(text.split())
    return f"“{text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + '…'}”"


class LeadScore:
    """Per-call lead score core. Feed it every final insight (both speakers) in audio order."""

    def __init__(
        self,
        model: ScoreModel,
        prior: Prior | None = None,
        *,
        min_confidence: float = MIN_CONFIDENCE,
    ) -> None:
        self._model = model
        self._prior = prior
        self._min_confidence = min_confidence
        self._raw: dict[str, float] = dict.fromkeys(CONVERSATION_FEATURES, 0.0)
        self._open_objections: list[tuple[str, float]] = []  # (kind, end_s)
        self._sentiment_seen = False
        self._engagement_seen = False
        self._details: dict[str, str] = {}
        self._x = feature_vector(self._raw, prior)
        self._score = 100.0 * _sigmoid(model.logit(self._x))

    @property
    def score(self) -> float:
        return round(self._score, 1)

    def conversation_features(self) -> dict[str, float]:
        """Raw call features, the ``features`` object of a ``train-score`` history line."""
        return {k: round(v, 4) for k, v in self._raw.items()}

    def start(self, audio_s: float = 0.0) -> Score:
        """The score before anyone spoke, with the prior's contributions as reasons."""
        base = 100.0 * _sigmoid(self._model.intercept)
        reasons = self._reasons(dict.fromkeys(self._x, 0.0), self._x, self._model.intercept)
        return Score(self.score, round(self._score - base, 1), reasons, audio_s)

    def observe(self, i: Insight, rep_talk_share: float | None = None) -> Score | None:
        """Update from a final insight; a ``Score`` after each customer final, else None."""
        if not i.is_final or i.speaker not in ("rep", "customer"):
            return None
        if rep_talk_share is not None:
            self._raw["rep_talk_share_over_half"] = rep_talk_share - 0.5
        if i.speaker == "rep":
            self._rep_said(i)
            return None
        self._customer_said(i)
        x = feature_vector(self._raw, self._prior)
        z_old = self._model.logit(self._x)
        reasons = self._reasons(self._x, x, z_old)
        new = 100.0 * _sigmoid(self._model.logit(x))
        delta = new - self._score
        self._x, self._score = x, new
        self._details.clear()
        return Score(self.score, round(delta, 1), reasons, i.end_s)

    def _rep_said(self, i: Insight) -> None:
        if i.label == "next_step" and i.confidence >= self._min_confidence:
            self._count("next_steps", f"next step: {_quote(i.text)}")
        if len(i.text.split()) < ADDRESS_MIN_WORDS:
            return
        for kind, end_s in list(self._open_objections):
            if i.start_s - end_s <= ADDRESS_WINDOW_S:
                self._open_objections.remove((kind, end_s))
                self._count("objections_addressed", f"you answered the {kind} objection")
                break

    def _customer_said(self, i: Insight) -> None:
        self._open_objections = [
            (k, e) for k, e in self._open_objections if i.start_s - e <= ADDRESS_WINDOW_S
        ]
        if i.confidence >= self._min_confidence:
            if i.label.startswith("objection_"):
                kind = i.label.removeprefix("objection_")
                self._open_objections.append((kind, i.end_s))
                self._count("objections", f"{kind} objection: {_quote(i.text)}")
            elif i.label == "buying_signal":
                self._count("buying_signals", f"buying signal: {_quote(i.text)}")
            elif i.label == "question":
                self._count("questions", f"asked: {_quote(i.text)}")
            elif i.label == "next_step":
                self._count("next_steps", f"next step: {_quote(i.text)}")
        for name in dict.fromkeys(e.value for e in i.entities if e.kind == "competitor"):
            self._count("competitor_mentions", f"mentioned {name}")
        self._raw["customer_sentiment"] = self._ema(
            "customer_sentiment", i.sentiment, self._sentiment_seen
        )
        self._sentiment_seen = True
        engagement = i.prosody.indicators.get("engagement") if i.prosody is not None else None
        if engagement is not None:
            self._raw["customer_engagement"] = self._ema(
                "customer_engagement", engagement.value, self._engagement_seen
            )
            self._engagement_seen = True

    def _ema(self, name: str, x: float, seen: bool) -> float:
        x = max(-1.0, min(1.0, x))
        return x if not seen else _EMA_ALPHA * x + (1 - _EMA_ALPHA) * self._raw[name]

    def _count(self, name: str, detail: str) -> None:
        self._raw[name] += 1.0
        previous = self._details.get(name)
        self._details[name] = detail if previous is None else f"{previous}; {detail}"

    def _reasons(
        self, old: Mapping[str, float], new: Mapping[str, float], z_old: float
    ) -> tuple[str, ...]:
        z_new = self._model.logit(new)
        p_mid = _sigmoid((z_old + z_new) / 2.0)
        slope = 100.0 * p_mid * (1.0 - p_mid)
        moved: list[tuple[float, str]] = []
        for name in set(old) | set(new):
            dz = self._model.weight(name) * (new.get(name, 0.0) - old.get(name, 0.0))
            points = slope * dz
            if round(points) == 0:
                continue
            moved.append((points, self._text(name, dz, new.get(name, 0.0))))
        moved.sort(key=lambda m: -abs(m[0]))
        return tuple(f"{round(p):+d} {text}" for p, text in moved)

    def _text(self, name: str, dz: float, value: float) -> str:
        if name in self._details:
            return self._details[name]
        spec = self._model.features.get(name)
        if name == "prior.log10_company_size":
            return f"company size: {10 ** (value + 2):,.0f} employees"
        if name.startswith("prior."):
            field_name, _, level = name.removeprefix("prior.").partition("=")
            return f"{field_name.replace('_', ' ')}: {level.replace('_', ' ')}"
        if spec is None:
            return name
        rising = (dz > 0) == (spec.weight > 0)
        return spec.up if rising else spec.down
