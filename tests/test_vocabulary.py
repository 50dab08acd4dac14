"""Vocabulary hints reach the recognizer: the playbook's names become hotwords, the decoder
gets them ahead of its prompt, and a made-up product name is spelled right only with them."""

from __future__ import annotations

import numpy as np
import pytest

from clients.callgen import espeak
from guidance.playbook import load_playbook, parse_playbook
from models.registry import whisper_path
from models.whisper import WhisperOptions, WhisperTranscriber
from nlp.transcript import RecognitionContext
from server.ingest import ProtocolError, parse_native_start, split_vocabulary

# A spelling no English speech model produces unprompted; espeak reads it "kwor-vix".
PRODUCT = "Qworvix"


def test_playbook_vocabulary_lists_products_then_competitors_once() -> None:
    default = load_playbook().vocabulary_hints()
    assert "Salesforce" in default and "Gong" in default
    text = (
        load_playbook()
        .model_copy(update={"vocabulary": ("Qworvix", "gong"), "competitors": {}})
        .model_dump_json()
    )
    copy = parse_playbook(text)
    assert copy.vocabulary_hints() == ("Qworvix", "gong")
    both = load_playbook().model_copy(update={"vocabulary": ("GONG", "Qworvix")})
    hints = both.vocabulary_hints()
    assert hints[:2] == ("GONG", "Qworvix")
    assert [h.casefold() for h in hints].count("gong") == 1


def test_empty_hotwords_are_rejected() -> None:
    with pytest.raises(ValueError):
        RecognitionContext(hotwords=("Gong", " "))


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    t = WhisperTranscriber(whisper_path("tiny.en"), WhisperOptions("tiny.en", max_prompt_tokens=8))
    t.warmup()
    return t


@pytest.mark.model
def test_decoder_prompt_carries_hotwords_and_the_newest_context(
    whisper: WhisperTranscriber,
) -> None:
    plain = whisper.decoder_prompt()
    assert whisper.decoder_prompt(RecognitionContext()) == plain
    ctx = RecognitionContext(
        prompt="one two three four five six seven eight nine ten eleven twelve",
        hotwords=(PRODUCT, "Gong"),
    )
    prompt = whisper.decoder_prompt(ctx)
    assert prompt[-len(plain) :] == plain  # the task tokens still end the prompt
    text = whisper._tokenizer.decode(prompt[1 : -len(plain)])
    assert text.startswith(f" {PRODUCT}, Gong.")  # a punctuated list keeps Whisper punctuating
    assert text.endswith("eleven twelve") and "one two" not in text  # oldest words cut first


@pytest.mark.model
def test_a_made_up_product_name_comes_out_right_only_with_the_hint(
    whisper: WhisperTranscriber,
) -> None:
    pad = np.zeros(3200, np.float32)
    speech = espeak(f"We switched the whole team to {PRODUCT} last month.", "en-us", 160, 50, 100)
    audio = np.concatenate([pad, speech, pad])
    without = whisper.recognize(audio, with_words=True).text
    hinted = whisper.recognize(
        audio, with_words=True, context=RecognitionContext(hotwords=(PRODUCT, "Gong"))
    )
    assert PRODUCT.lower() not in without.lower()
    assert PRODUCT.lower() in hinted.text.lower()
    assert any(PRODUCT.lower() in w.text.lower() for w in hinted.words)  # words align too


def test_start_messages_carry_the_calls_vocabulary() -> None:
    start = parse_native_start(
        '{"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,'
        ' "speakers": ["customer"], "vocabulary": ["Northwind Traders", "Qworvix"]}'
    )
    assert start.vocabulary == ["Northwind Traders", "Qworvix"]
    with pytest.raises(ProtocolError):
        parse_native_start(
            '{"type": "start", "encoding": "pcm16", "sample_rate_hz": 16000, "channels": 1,'
            ' "speakers": ["customer"], "vocabulary": [""]}'
        )
    assert split_vocabulary(" Northwind Traders, ,Qworvix ,") == ("Northwind Traders", "Qworvix")
