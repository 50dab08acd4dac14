"""Intent classifier: data loading, head training, metrics, the real model, and the CLI."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from nlp.intent import (
    DATA_DIR,
    DataFileError,
    EmbeddingIntentClassifier,
    HeadParams,
    IntentOptions,
    LinearHead,
    expected_calibration_error,
    fit_temperature,
    load_examples,
    score_predictions,
    stratified_folds,
    train_head,
)
from server.intent_cli import TRAIN_FILES, analyze_command, register
from server.intent_train import asr_variant, default_dev_path, load_dev, near_duplicates


class KeywordEmbedder:
    """A fake embedder: one axis per keyword, so labels are linearly separable."""

    name = "keywords"

    def __init__(self, keywords: Sequence[str]) -> None:
        self.keywords = list(keywords)
        self.dim = len(self.keywords) + 1
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for j, k in enumerate(self.keywords):
                out[i, j] = float(k in t.lower())
            out[i, -1] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def warmup(self) -> None:
        self.embed(["warm up"])


def _toy_classifier(
    min_confidence: float = 0.0,
) -> tuple[EmbeddingIntentClassifier, KeywordEmbedder]:
    emb = KeywordEmbedder(["price", "legal", "great"])
    texts = ["the price", "price again", "legal team", "ask legal", "great", "so great", "hm", "ok"]
    labels = (
        ["objection_price"] * 2 + ["objection_authority"] * 2 + ["positive"] * 2 + ["other"] * 2
    )
    head = train_head(emb.embed(texts), texts, labels, HeadParams(l2=1e-4, word_scale=0.0))
    return EmbeddingIntentClassifier(emb, head, IntentOptions(min_confidence=min_confidence)), emb


def test_toy_head_separates_keywords() -> None:
    """A head trained on separable embeddings classifies each keyword to its label."""
    clf, _ = _toy_classifier()
    got = [r.label for r in clf.classify(["that price", "our legal folks", "really great"])]
    assert got == ["objection_price", "objection_authority", "positive"]


def test_scores_cover_every_label_and_sum_to_one() -> None:
    """Scores hold every label of the head and form a distribution."""
    clf, _ = _toy_classifier()
    (r,) = clf.classify(["price"])
    assert set(r.scores) == set(clf.labels)
    assert sum(r.scores.values()) == pytest.approx(1.0)
    assert r.confidence == pytest.approx(max(r.scores.values()))


def test_blank_text_is_other_with_zero_confidence_without_a_model_call() -> None:
    """Empty and whitespace text get label other, confidence 0, and never reach the embedder."""
    clf, emb = _toy_classifier()
    results = clf.classify(["", "   \n"])
    assert [(r.label, r.confidence) for r in results] == [("other", 0.0), ("other", 0.0)]
    assert emb.calls == 1  # the training call only


def test_low_confidence_becomes_other() -> None:
    """With min_confidence above any reachable probability, every label becomes other."""
    clf, _ = _toy_classifier(min_confidence=0.999)
    (r,) = clf.classify(["price and legal and great"])
    assert r.label == "other"
    assert r.confidence < 0.999


def test_head_round_trips_through_npz(tmp_path: Path) -> None:
    """A saved head loads back with identical labels, vocabulary, temperature, probabilities."""
    emb = KeywordEmbedder(["a", "b"])
    texts = ["a a", "a x", "b b", "b y"]
    head = train_head(emb.embed(texts), texts, ["x", "x", "y", "y"], HeadParams(min_count=1))
    head = head.with_temperature(1.7)
    head.save(tmp_path / "h.npz")
    back = LinearHead.load(tmp_path / "h.npz")
    assert back.labels == head.labels and back.words.vocab == head.words.vocab
    assert back.temperature == pytest.approx(1.7)
    x = emb.embed(["a b"])
    np.testing.assert_allclose(
        back.probabilities(x, ["a b"]), head.probabilities(x, ["a b"]), atol=1e-6
    )


def test_load_examples_rejects_malformed_lines(tmp_path: Path) -> None:
    """A line without a label is reported with its line number."""
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "hi", "label": "small_talk"}\n{"text": "no label"}\n')
    with pytest.raises(DataFileError, match=":2:"):
        load_examples(p)


def test_score_predictions_table() -> None:
    """Precision, recall, F1 and the confusion matrix match a hand-computed case."""
    m = score_predictions(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m.confusion == ((1, 1), (0, 2))
    assert m.per_label["a"].precision == 1.0 and m.per_label["a"].recall == 0.5
    assert m.per_label["b"].precision == pytest.approx(2 / 3) and m.per_label["b"].recall == 1.0
    assert m.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_stratified_folds_partition_rows_and_spread_labels() -> None:
    """Folds are disjoint, cover every row, and each holds every label."""
    labels = ["a"] * 10 + ["b"] * 15
    folds = stratified_folds(labels, 5, seed=1)
    rows = sorted(i for f in folds for i in f.tolist())
    assert rows == list(range(25))
    assert all({labels[i] for i in f} == {"a", "b"} for f in folds)


def test_temperature_cools_overconfident_logits() -> None:
    """Logits that are right 60 % of the time at ~100 % confidence get a temperature > 1,
    and the calibrated confidence has a lower ECE than the raw one."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    right = rng.random(500) < 0.6
    top = np.where(right, y, (y + 1) % 3)
    logits = np.zeros((500, 3))
    logits[np.arange(500), top] = 8.0
    t = fit_temperature(logits, y)
    assert t > 1.5

    def ece(temp: float) -> float:
        z = np.exp(logits / temp)
        p = z / z.sum(axis=1, keepdims=True)
        return expected_calibration_error(p.max(axis=1), (p.argmax(axis=1) == y).astype(float))

    assert ece(t) < ece(1.0) - 0.2


def test_expected_calibration_error_hand_case() -> None:
    """Half the rows at confidence 0.9 all right, half at 0.3 all wrong: ECE = (0.1 + 0.3) / 2."""
    conf = np.array([0.9, 0.9, 0.3, 0.3])
    assert expected_calibration_error(conf, np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.2)


def test_asr_variant_is_lowercase_unpunctuated_and_seeded() -> None:
    """The ASR-style copy drops case and punctuation, keeps most words, and repeats per seed."""
    text = "Honestly, I'd have to run this by my boss before we go any further."
    a = asr_variant(text, np.random.default_rng(3))
    assert a == asr_variant(text, np.random.default_rng(3))
    assert a == a.lower() and not set(",.?!") & set(a)
    assert len(set(a.split()) & set(text.lower().replace(",", "").replace(".", "").split())) >= 10


def test_near_duplicates_catch_reworded_copies() -> None:
    """Case, punctuation and a changed word still count as the same utterance; others do not."""
    hits = near_duplicates(
        ["We'd have to run it by legal.", "how's the weather there", "Send me the contract"],
        ["we'd have to run it by legal", "Is the weather nice where you are today?"],
    )
    assert [a for a, _ in hits] == ["We'd have to run it by legal."]


def test_shipped_train_files_do_not_near_duplicate_the_held_out_split() -> None:
    """No train line is a near duplicate (Jaccard >= 0.8 or difflib >= 0.88) of a test line."""
    train = [e.text for p in TRAIN_FILES for e in load_examples(p)]
    test = [e.text for e in load_examples(DATA_DIR / "intents_test.jsonl")]
    assert near_duplicates(train, test) == []


def test_shipped_held_out_split_is_disjoint_from_train() -> None:
    """No held-out utterance appears in the training data, and both cover the same labels."""
    train = [e for p in TRAIN_FILES for e in load_examples(p)]
    test = load_examples(DATA_DIR / "intents_test.jsonl")
    norm = lambda s: "".join(ch for ch in s.lower() if ch.isalnum())  # noqa: E731
    assert not {norm(e.text) for e in train} & {norm(e.text) for e in test}
    assert {e.label for e in train} == {e.label for e in test}
    assert min(sum(e.label == lab for e in test) for lab in {e.label for e in test}) >= 25


def test_report_records_the_shipped_heads_accuracy_on_own_and_outside_lines() -> None:
    """The committed report states, for the shipped head, a held-out macro-F1 of at least 0.895
    on the project's test split and at least 0.78 on intent-dev's clear lines, which it never
    trained on. (Issue 10 traded 0.007 on the own split, 0.906 -> 0.899, against +0.16 on
    outside lines, 0.639 -> 0.802: the head that only knew our own phrasing fails this.)"""
    report = (DATA_DIR / "intent_report.md").read_text()
    held_out = next(x for x in report.splitlines() if x.startswith("Macro-F1 **"))
    outside = next(x for x in report.splitlines() if x.startswith("Clear subset: macro-F1 **"))
    assert float(held_out.split("**")[1]) >= 0.895
    assert float(outside.split("**")[1]) >= 0.78
    assert "intents_test.jsonl" in report


# ---- real weights ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from models.minilm import MiniLMEmbedder, MiniLMOptions

    return MiniLMEmbedder(MiniLMOptions(cache_dir=tmp_path_factory.mktemp("cache")))


_TEXTS = ["the price is too high for us", "", "um we'd have to check with legal", "x " * 300]


@pytest.mark.model
def test_onnx_graph_matches_numpy_forward(tmp_path: Path) -> None:
    """The float ONNX graph built from safetensors and the numpy forward pass agree to 1e-4."""
    from models.minilm import MiniLMEmbedder, MiniLMOptions

    fp32 = MiniLMEmbedder(MiniLMOptions(precision="fp32", cache_dir=tmp_path))
    ref = MiniLMEmbedder(MiniLMOptions(backend="numpy"))
    a, b = fp32.embed(_TEXTS), ref.embed(_TEXTS)
    assert a.shape == (4, 384)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_int8_graph_stays_close_to_the_float_model(embedder) -> None:  # type: ignore[no-untyped-def]
    """The default (int8) embeddings point where the float model's do: cosine >= 0.95 each,
    while differing from them (so the quantized graph is the one actually running)."""
    from models.minilm import MiniLMEmbedder, MiniLMOptions

    ref = MiniLMEmbedder(MiniLMOptions(backend="numpy"))
    a, b = embedder.embed(_TEXTS), ref.embed(_TEXTS)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.95, cosine
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_real_classifier_on_clear_utterances(embedder) -> None:  # type: ignore[no-untyped-def]
    """The shipped head labels unambiguous utterances (not in its data) correctly."""
    clf = EmbeddingIntentClassifier.load(embedder, IntentOptions())
    cases = {
        "that is way too expensive for a company our size": "objection_price",
        "I need to get sign off from our CFO first": "objection_authority",
        "we already pay for Gong and it does the job": "objection_competitor",
        "send me the contract and we'll get it signed this week": "buying_signal",
        "does it integrate with our zendesk setup": "question",
        "how was your weekend, do anything fun": "small_talk",
    }
    got = [r.label for r in clf.classify(list(cases))]
    assert got == list(cases.values())


_DEV = default_dev_path()
DEV_CLEAR_FLOOR = (
    0.76  # measured 0.802 on AVX-512 VNNI (see the report); int8 kernels differ by CPU
)


@pytest.mark.model
@pytest.mark.skipif(_DEV is None, reason="../shared/intent-dev is not next to this checkout")
def test_shipped_head_on_outside_clear_lines(embedder) -> None:  # type: ignore[no-untyped-def]
    """On intent-dev's clear lines (never trained on) the shipped head keeps a macro-F1 floor."""
    assert _DEV is not None
    rows = [r for r in load_dev(_DEV) if r.clear]
    clf = EmbeddingIntentClassifier.load(embedder, IntentOptions())
    got = [r.label for r in clf.classify([r.text for r in rows])]
    labels = sorted({r.label for r in rows})
    m = score_predictions([r.label for r in rows], got, labels)
    assert m.macro_f1 >= DEV_CLEAR_FLOOR, m.macro_f1


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["analyze", *argv])


@pytest.mark.model
def test_cli_json_has_text_label_confidence_and_all_scores(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`analyze TEXT --json` prints one object with label, confidence and every label's score."""
    out = io.StringIO()
    assert analyze_command(_args("the price is too high for us", "--json"), stdout=out) == 0
    row = json.loads(out.getvalue())
    assert row["label"] == "objection_price" and row["text"] == "the price is too high for us"
    assert len(row["scores"]) == 12 and 0.0 < row["confidence"] <= 1.0
    assert row["sentiment"] < 0


@pytest.mark.model
def test_cli_survives_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    """Binary junk, 10,000 characters, non-English and blank lines give one result per line."""
    junk = b"\xff\xfe\x00\x9c binary \x00\x01\n" + b"x" * 10_000 + b"\n\n\xe4\xbd\xa0\xe5\xa5\xbd\n"
    stdin = io.TextIOWrapper(io.BytesIO(junk + "¿Cuánto cuesta la licencia?\n".encode()))
    out = io.StringIO()
    assert analyze_command(_args("--json"), stdin=stdin, stdout=out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 4
    assert rows[1]["truncated"] is True and len(rows[1]["text"]) == 2000
    assert all(r["label"] in r["scores"] for r in rows)


def test_cli_empty_stdin_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """No TEXT and nothing on stdin exits 2 with a message, before loading any model."""
    stdin = io.TextIOWrapper(io.BytesIO(b"\n  \n"))
    assert analyze_command(_args(), stdin=stdin, stdout=io.StringIO()) == 2
    assert "no text given" in capsys.readouterr().err
