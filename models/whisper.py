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
from collections.abc import Callable, Sequence
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
DEVICES = ("cpu", "cuda")
DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    model: str = "tiny.en"  # a name from models.registry, a CTranslate2 folder, or a hub name
    # Threads per decode, and decodes that may run at once (CTranslate2 replicas sharing the
    # weights). Whisper's decoder takes one token at a time in small matrix products that a
    # second thread barely speeds up: on 2 AVX2 cores one thread decoded 1.3x faster than two,
    # and two one-thread workers did twice the work of one two-thread decode (bench/README.md).
    cpu_threads: int = 1
    workers: int = 1
    device: str = "cpu"  # "cpu" or "cuda" (CTranslate2's CUDA build; needs a GPU)
    compute_type: str = ""  # "": int8 on cpu, float16 on cuda (int8_float16 also fits)
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
        if self.cpu_threads < 1 or self.workers < 1:
            raise ValueError("cpu_threads and workers must be >= 1")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
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
    """A ``nlp.transcript.Transcriber`` over one CTranslate2 Whisper model. Safe for
    ``workers`` concurrent calls from as many threads (each runs on its own replica; the rest
    of the object is read-only after construction); more calls wait for a free replica."""

    def __init__(self, model_dir: Path, options: WhisperOptions) -> None:
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as err:  # pragma: no cover - core dependency
            raise ModelUnavailable("faster-whisper is missing: pip install faster-whisper") from err
        self.name = f"whisper:{options.model}"
        self.device = options.device
        self.workers = options.workers
        self._options = options
        self._ct2 = ctranslate2
        if options.device == "cuda" and ctranslate2.get_cuda_device_count() < 1:
            raise ModelUnavailable(
                "CUECARD_DEVICE=cuda but CTranslate2 sees no CUDA device (driver, and the CUDA 12 "
                "cuBLAS and cuDNN 9 libraries on the library path?); unset it for the CPU"
            )
        self.compute_type = options.compute_type or DEFAULT_COMPUTE_TYPE[options.device]
        self._model = WhisperModel(
            str(model_dir),
            device=options.device,
            compute_type=self.compute_type,
            cpu_threads=options.cpu_threads,
            num_workers=options.workers,
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

    def prompt_parts(self, context: RecognitionContext) -> tuple[list[int], list[int]]:
        """The hotword tokens and the newest prompt tokens ``context`` gives the decoder."""
        # A punctuated list ("Gong, Salesforce, HubSpot."): a bare run of names makes Whisper
        # drop its punctuation, and the alignment then ends words early (-1.3 s a sentence).
        names = [w.strip() for w in context.hotwords if w.strip()]
        hot = ", ".join(names) + "." if names else ""
        hot_ids = (
            self._tokenizer.encode(" " + hot)[: self._options.max_hotword_tokens] if hot else []
        )
        text, keep = context.prompt.strip(), self._options.max_prompt_tokens
        prev_ids = self._tokenizer.encode(" " + text)[-keep:] if text and keep else []
        return hot_ids, prev_ids

    def decoder_prompt(self, context: RecognitionContext = NO_CONTEXT, fit: int = 0) -> list[int]:
        """The token prompt the decoder gets for ``context``: empty context, plain prompt.
        ``fit`` > 0 trims what goes before the transcript start to that many tokens (oldest
        prompt tokens first, then the last hotwords): a batch needs the same length in all."""
        hot_ids, prev_ids = self.prompt_parts(context)
        if not hot_ids and not prev_ids:
            return self._prompt
        if fit:
            room = max(0, fit - 1 - len(hot_ids))
            prev_ids = prev_ids[len(prev_ids) - room :] if room else []
            hot_ids = hot_ids[: fit - 1 - len(prev_ids)]
        return [self._tokenizer.sot_prev, *hot_ids, *prev_ids, *self._prompt]

    def recognize(
        self, audio: Samples, *, with_words: bool, context: RecognitionContext = NO_CONTEXT
    ) -> Recognition:
        out = self.recognize_batch([audio], with_words=[with_words], contexts=[context])
        assert out is not None  # no should_stop: never cut short
        return out[0]

    def recognize_batch(
        self,
        audios: Sequence[Samples],
        *,
        with_words: Sequence[bool],
        contexts: Sequence[RecognitionContext],
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Recognition] | None:
        """Several clips in one encoder window (the longest clip's; shorter ones get more
        silence, as in Whisper's 30 s windows) and one generate per group of prompts of
        similar length. None when ``should_stop`` says so between stages."""
        max_samples = MAX_WINDOW_S * SAMPLE_RATE_HZ - int(self._options.pad_s * SAMPLE_RATE_HZ)
        clips = [a[:max_samples] for a in audios]
        n_frames = max(self.window_frames(len(c)) for c in clips)
        mels = [self._mel(c, n_frames) for c in clips]
        out: list[Recognition | None] = [None] * len(clips)
        for idx, prompts in self._prompt_groups(contexts):
            encoded = self._encode([mels[i] for i in idx])
            if should_stop is not None and should_stop():
                return None
            lengths = [len(clips[i]) for i in idx]
            results, tokens = self._generate(encoded, prompts, lengths)
            redo = [k for k, i in enumerate(idx) if contexts[i] != NO_CONTEXT
                    and self._runaway(len(tokens[k]), lengths[k])]  # fmt: skip
            if redo:
                # a prompt can make Whisper copy it onto a short clip ("You can call me Abby."
                # -> "You can call me Abigail Claphlin. You can call me Abig"): decode plainly
                again = self._encode([mels[idx[k]] for k in redo])
                plain = [self._prompt] * len(redo)
                r2, t2 = self._generate(again, plain, [lengths[k] for k in redo])
                for k, res, toks in zip(redo, r2, t2, strict=True):
                    results[k], tokens[k] = res, toks
            if should_stop is not None and should_stop():
                return None
            wanted = [toks if with_words[i] else [] for i, toks in zip(idx, tokens, strict=True)]
            words = self._align(encoded, wanted, n_frames, lengths) if any(wanted) else None
            for k, i in enumerate(idx):
                out[i] = self._recognition(results[k], tokens[k], words[k] if words else ())
        return [r for r in out if r is not None]

    def _mel(self, clip: Samples, n_frames: int) -> np.ndarray:
        padded = np.zeros(n_frames * HOP_SAMPLES, dtype=np.float32)
        padded[: len(clip)] = clip
        mel = self._features(padded, padding=0)[:, :n_frames]
        if mel.shape[1] < n_frames:
            mel = np.pad(mel, ((0, 0), (0, n_frames - mel.shape[1])))
        return np.asarray(mel, np.float32)

    def _encode(self, mels: list[np.ndarray]) -> object:
        features = self._ct2.StorageView.from_array(np.ascontiguousarray(np.stack(mels)))
        return self._model.model.encode(features, to_cpu=False)

    def _prompt_groups(
        self, contexts: Sequence[RecognitionContext]
    ) -> list[tuple[list[int], list[list[int]]]]:
        """Batch items by prompt length: CTranslate2 needs the transcript start at the same
        position in every prompt of one generate, so a group's prompts are trimmed to its
        shortest, and a group takes only prompts at least 3/4 as long as its longest."""
        full = [self.decoder_prompt(c) for c in contexts]
        pre = [len(p) - len(self._prompt) for p in full]
        groups: list[list[int]] = []
        for i in sorted(range(len(full)), key=lambda i: -pre[i]):
            lead = pre[groups[-1][0]] if groups else -1
            if groups and (pre[i] == lead or (pre[i] > 0 and 4 * pre[i] >= 3 * lead)):
                groups[-1].append(i)
            else:
                groups.append([i])
        out = []
        for g in groups:
            fit = min(pre[i] for i in g)
            prompts = [full[i] if pre[i] == fit else self.decoder_prompt(contexts[i], fit)
                       for i in g]  # fmt: skip
            out.append((g, prompts))
        return out

    def _token_budget(self, n_samples: int) -> int:
        per_s = self._options.max_tokens_per_s * n_samples / SAMPLE_RATE_HZ
        return min(self._options.max_new_tokens, int(per_s) + 12)

    def _generate(
        self, encoded: object, prompts: list[list[int]], lengths: list[int]
    ) -> tuple[list[Any], list[list[int]]]:
        budgets = [self._token_budget(n) for n in lengths]
        # CTranslate2 caps the new tokens at half of max_length (and at max_length minus the
        # prompt): twice the budget, or a 20 s clip without a prompt lost its last sentence
        wanted = max(2 * max(budgets), len(prompts[0]) + max(budgets))
        results = self._model.model.generate(
            encoded,
            prompts,
            beam_size=self._options.beam_size,
            max_length=min(MAX_DECODE_TOKENS, wanted),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            no_repeat_ngram_size=self._options.no_repeat_ngram_size,
        )
        eot = self._tokenizer.eot
        tokens = [
            [t for t in r.sequences_ids[0] if t < eot][:budget]
            for r, budget in zip(results, budgets, strict=True)
        ]
        return list(results), tokens

    def _recognition(self, result: Any, tokens: list[int], words: tuple[Word, ...]) -> Recognition:
        text = self._tokenizer.decode(tokens).strip()
        return Recognition(
            text=text,
            words=words,
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=float(result.scores[0] if result.scores else 0.0),
            compression_ratio=compression_ratio(text),
        )

    def _runaway(self, n_tokens: int, n_samples: int) -> bool:
        """More text than the clip can hold: ~3-4 tokens a second is speech, 6 is fast."""
        return n_tokens > self._options.max_context_tokens_per_s * n_samples / SAMPLE_RATE_HZ + 4

    def _align(
        self, encoded: object, tokens: list[list[int]], n_frames: int, lengths: list[int]
    ) -> list[tuple[Word, ...]]:
        """Word times of each item (no tokens: none) from one batched alignment."""
        frames = [min(n_frames, max(2, n // HOP_SAMPLES)) for n in lengths]
        aligned = self._model.model.align(
            encoded, self._tokenizer.sot_sequence, tokens, frames, median_filter_width=7
        )
        return [
            self._words(a, toks, n) if toks else ()
            for a, toks, n in zip(aligned, tokens, lengths, strict=True)
        ]

    def _words(self, aligned: Any, tokens: list[int], n_samples: int) -> tuple[Word, ...]:
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
