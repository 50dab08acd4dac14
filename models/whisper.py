"""Whisper on CTranslate2 with a window sized to the clip.

faster-whisper pads every call to a 30 s window, so a 2 s utterance costs as much encoder time
as a 30 s one. Here the log-mel features are computed for the clip plus ``pad_s`` of silence
and rounded up to whole seconds (at least ``min_window_s``), and the CTranslate2 encoder runs
on that window only: encode cost grows with the utterance instead of being fixed. Decoding
uses the same prompt as faster-whisper (``<|startoftranscript|><|en|><|transcribe|>
<|notimestamps|>``), and word timestamps come from CTranslate2's cross-attention
alignment on the same encoder output. ``bench/bench_stream.py`` compares its WER with the
standard 30 s path.

A ``RecognitionContext`` goes ahead of that prompt the way Whisper was trained to read the
previous window: ``<|startofprev|>``, the hotwords, then the newest prompt tokens (older
ones are cut first), so names the call has used or the playbook lists are likely spellings.
``bench/bench_real.py`` measures what each option costs and gains on real speech.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio.chunk import SAMPLE_RATE_HZ, Samples
from models.errors import ModelUnavailable
from nlp.transcript import NO_CONTEXT, Recognition, RecognitionContext, Word

log = logging.getLogger(__name__)

HOP_SAMPLES = 160  # one log-mel frame = 10 ms
FRAMES_PER_S = SAMPLE_RATE_HZ // HOP_SAMPLES
MAX_WINDOW_S = 30
MAX_DECODE_TOKENS = 448  # Whisper's text context: prompt and output together


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    model: str = "tiny.en"  # a name from models.registry, a CTranslate2 folder, or a hub name
    cpu_threads: int = 2
    compute_type: str = "int8"
    pad_s: float = 1.0
    min_window_s: int = 10  # shorter windows loop on short clips ("Great! Great! ...")
    max_new_tokens: int = 128
    max_tokens_per_s: float = 8.0  # speech rarely exceeds ~5 tokens/s: a cap stops loops
    no_repeat_ngram_size: int = 0
    beam_size: int = 1
    max_prompt_tokens: int = 96  # newest tokens of RecognitionContext.prompt kept
    max_hotword_tokens: int = 48
    max_context_tokens_per_s: float = 6.0  # above this a prompted decode is redone plainly

    def __post_init__(self) -> None:
        if self.cpu_threads < 1:
            raise ValueError("cpu_threads must be >= 1")
        if not 1 <= self.beam_size <= 10:
            raise ValueError("beam_size must be within [1, 10]")
        if self.max_prompt_tokens < 0 or self.max_hotword_tokens < 0:
            raise ValueError("max_prompt_tokens and max_hotword_tokens must be >= 0")
        if self.max_prompt_tokens + self.max_hotword_tokens > MAX_DECODE_TOKENS // 2:
            raise ValueError(f"prompt and hotwords may use at most {MAX_DECODE_TOKENS // 2} tokens")
        if not 0 <= self.pad_s <= 5:
            raise ValueError("pad_s must be within [0, 5]")
        if not 1 <= self.min_window_s <= MAX_WINDOW_S:
            raise ValueError(f"min_window_s must be within [1, {MAX_WINDOW_S}]")


class WhisperTranscriber:
    """A ``nlp.transcript.Transcriber`` over one CTranslate2 Whisper model. Not thread-safe:
    give each instance one executor thread."""

    def __init__(self, model_dir: Path, options: WhisperOptions) -> None:
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as err:  # pragma: no cover - core dependency
            raise ModelUnavailable("faster-whisper is missing: pip install faster-whisper") from err
        self.name = f"whisper:{options.model}"
        self._options = options
        self._ct2 = ctranslate2
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=options.compute_type,
            cpu_threads=options.cpu_threads,
            num_workers=1,
        )
        multilingual = self._model.model.is_multilingual
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language="en" if multilingual else None,
        )
        self._features = self._model.feature_extractor
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE_HZ) * 0.01).astype(np.float32)
        self.recognize(noise, with_words=True)

    def window_frames(self, n_samples: int) -> int:
        """Encoder window, in mel frames, for a clip of ``n_samples``: whole seconds."""
        needed_s = n_samples / SAMPLE_RATE_HZ + self._options.pad_s
        window_s = min(MAX_WINDOW_S, max(self._options.min_window_s, int(np.ceil(needed_s))))
        return window_s * FRAMES_PER_S

    def _token_budget(self, n_samples: int) -> int:
        per_s = self._options.max_tokens_per_s * n_samples / SAMPLE_RATE_HZ
        return min(self._options.max_new_tokens, int(per_s) + 12)

    def decoder_prompt(self, context: RecognitionContext = NO_CONTEXT) -> list[int]:
        """The token prompt the decoder gets for ``context``: empty context, plain prompt."""
        # A punctuated list ("Gong, Salesforce, HubSpot."): a bare run of names makes Whisper
        # drop its punctuation, and the alignment then ends words early (-1.3 s a sentence).
        names = [w.strip() for w in context.hotwords if w.strip()]
        hot = ", ".join(names) + "." if names else ""
        hot_ids = (
            self._tokenizer.encode(" " + hot)[: self._options.max_hotword_tokens] if hot else []
        )
        text, keep = context.prompt.strip(), self._options.max_prompt_tokens
        prev_ids = self._tokenizer.encode(" " + text)[-keep:] if text and keep else []
        if not hot_ids and not prev_ids:
            return self._prompt
        return [self._tokenizer.sot_prev, *hot_ids, *prev_ids, *self._prompt]

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        max_samples = MAX_WINDOW_S * SAMPLE_RATE_HZ - int(self._options.pad_s * SAMPLE_RATE_HZ)
        clip = audio[:max_samples]
        n_frames = self.window_frames(len(clip))
        padded = np.zeros(n_frames * HOP_SAMPLES, dtype=np.float32)
        padded[: len(clip)] = clip
        mel = self._features(padded, padding=0)[:, :n_frames]
        if mel.shape[1] < n_frames:
            mel = np.pad(mel, ((0, 0), (0, n_frames - mel.shape[1])))
        features = self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None], np.float32))
        encoded = self._model.model.encode(features, to_cpu=False)
        result, tokens = self._generate(encoded, self.decoder_prompt(context), len(clip))
        if context != NO_CONTEXT and self._runaway(len(tokens), len(clip)):
            # a prompt can make Whisper copy it onto a short clip ("You can call me Abby."
            # -> "You can call me Abigail Claphlin. You can call me Abig"): decode plainly
            result, tokens = self._generate(encoded, self._prompt, len(clip))
        text = self._tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] if result.scores else 0.0
        words: tuple[Word, ...] = ()
        if with_words and tokens:
            words = self._align(encoded, tokens, n_frames, len(clip))
        return Recognition(
            text=text,
            words=words,
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=float(avg_logprob),
            compression_ratio=compression_ratio(text),
        )

    def _generate(
        self, encoded: object, prompt: list[int], n_samples: int
    ) -> tuple[Any, list[int]]:
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._options.beam_size,
            max_length=min(MAX_DECODE_TOKENS, len(prompt) + self._token_budget(n_samples)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=self._options.no_repeat_ngram_size,
        )[0]
        return result, [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]

    def _runaway(self, n_tokens: int, n_samples: int) -> bool:
        """More text than the clip can hold: ~3-4 tokens a second is speech, 6 is fast."""
        return n_tokens > self._options.max_context_tokens_per_s * n_samples / SAMPLE_RATE_HZ + 4

    def _align(
        self, encoded: object, tokens: list[int], n_frames: int, n_samples: int
    ) -> tuple[Word, ...]:
        content_frames = min(n_frames, max(2, n_samples // HOP_SAMPLES))
        aligned = self._model.model.align(
            encoded, self._tokenizer.sot_sequence, [tokens], content_frames, median_filter_width=7
        )[0]
        text_idx = np.array([p[0] for p in aligned.alignments])
        time_idx = np.array([p[1] for p in aligned.alignments])
        words, word_tokens = self._tokenizer.split_to_word_tokens([*tokens, self._tokenizer.eot])
        if len(word_tokens) <= 1 or len(text_idx) == 0:
            return ()
        bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_s = time_idx[jumps] / (FRAMES_PER_S / 2)  # two mel frames per encoder position
        probs = aligned.text_token_probs
        clip_end_s = n_samples / SAMPLE_RATE_HZ
        out: list[Word] = []
        for i in range(len(bounds) - 1):  # the last entry is <|endoftext|>
            word = words[i]
            if not word.strip():
                continue
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            start = float(jump_s[lo]) if lo < len(jump_s) else clip_end_s
            end = float(jump_s[hi]) if hi < len(jump_s) else clip_end_s
            prob = float(np.mean(probs[lo:hi])) if hi > lo else 0.0
            out.append(Word(word.strip(), min(start, clip_end_s), min(end, clip_end_s), prob))
        return tuple(out)


def compression_ratio(text: str) -> float:
    """gzip ratio of the text; Whisper's repetition loops compress far better than speech."""
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))
