"""Vocabulary hints: how often product, competitor and company names come out right.

Rendered speech: sentences naming the default playbook's vocabulary (``vocabulary_hints()``)
and per-call account names, spoken by espeak-ng in several voices and paces, at 16 kHz and
through the Twilio path (8 kHz mu-law, decoded by ``audio.codec``). Real speech: the files
of the real-speech set whose reference names a person or place, with those names as the
per-call hints. Each clip is decoded as the stream decodes a final (``WhisperTranscriber``,
clip-sized window) without hints, and with the hints as ``RecognitionContext.hotwords``.

A name counts as a hit when its words appear, in order, in the normalised hypothesis
(``Sales force`` for ``Salesforce`` is a miss: the entity extractor and the rep would miss
it too). Also printed: the mean decode time with and without (the latency cost), and on the
real files any hint word the hypothesis gained that the reference lacks (a false name).

Usage: ``python -m bench.bench_vocab [--model tiny.en] [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.realspeech import items, normalise, telephone
from clients.callgen import espeak
from guidance.playbook import load_playbook
from models.registry import whisper_path
from models.whisper import WhisperOptions, WhisperTranscriber
from nlp.transcript import RecognitionContext

ACCOUNTS = ("Northwind Traders", "Contoso", "Fabrikam")
SENTENCES = (
    ("We record every call in Gong right now.", "Gong"),
    ("Our Salesforce contract renews in March.", "Salesforce"),
    ("Have you compared this with Pipedrive?", "Pipedrive"),
    ("The marketing team lives in HubSpot all day.", "HubSpot"),
    ("We looked at Salesloft last year and it was too expensive.", "Salesloft"),
    ("Our sequences run through Outreach.", "Outreach"),
    ("Finance moved us onto Zoho a while ago.", "Zoho"),
    ("Microsoft Dynamics is our system of record.", "Microsoft Dynamics"),
    ("We buy contact data from ZoomInfo.", "ZoomInfo"),
    ("Chorus came bundled with our data contract.", "Chorus"),
    ("The reps use Freshsales for the dialer.", "Freshsales"),
    ("Does Cuecard work with our phone system?", "Cuecard"),
    ("Hi, this is Sam from Acme, thanks for your time.", "Acme"),
    ("I am calling about the Northwind Traders account.", "Northwind Traders"),
    ("Contoso wants the proposal by Friday.", "Contoso"),
    ("Fabrikam has thirty reps on the team.", "Fabrikam"),
)
VOICES = (("en-us", 165), ("en-gb", 180), ("en-us+f3", 150), ("en-gb-x-rp", 195))
REAL_NAMES = {  # file -> names in its reference (a per-call hint, e.g. the contact's name)
    "lhotse_ami_ES2011a_headset0_40-46s": ("Abigail", "Claflin", "Abbi"),
    "sense_and_sensibility_01_austen_64kb-0870": ("John Dashwood",),
    "121-127105-0000": ("Douglas",),
    "6829-68769-0004": ("Lucy",),
    "8463-287645-0007": ("John Wesley",),
}


@dataclass(frozen=True, slots=True)
class Clip:
    name: str  # the name that must come out right
    audio: np.ndarray
    reference: str = ""


def hit(name: str, text: str) -> bool:
    want, got = normalise(name), normalise(text)
    return any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))


def rendered(path: str) -> list[Clip]:
    pad = np.zeros(3200, np.float32)  # 0.2 s each side, as the segmenter's pre-roll and tail
    out = []
    for voice, wpm in VOICES:
        for text, name in SENTENCES:
            audio = np.concatenate([pad, espeak(text, voice, wpm, 50, 100), pad])
            out.append(Clip(name, telephone(audio) if path == "telephone" else audio))
    return out


def decode_all(
    t: WhisperTranscriber, clips: list[Clip], hints: tuple[str, ...] | None
) -> tuple[list[str], float]:
    texts, spent = [], 0.0
    for c in clips:
        words = hints if hints is not None else tuple(n for n in REAL_NAMES.get(c.name, ()))
        ctx = RecognitionContext(hotwords=words)
        t0 = time.perf_counter()
        texts.append(t.recognize(c.audio, with_words=True, context=ctx).text)
        spent += time.perf_counter() - t0
    return texts, spent / max(1, len(clips))


def score(clips: list[Clip], texts: list[str], names: list[tuple[str, ...]]) -> dict[str, Any]:
    hits = sum(all(hit(n, txt) for n in ns) for ns, txt in zip(names, texts, strict=True))
    return {"clips": len(clips), "hits": hits, "hit_rate": round(hits / max(1, len(clips)), 3)}


def run(model: str) -> dict[str, Any]:
    t = WhisperTranscriber(whisper_path(model), WhisperOptions(model))
    t.warmup()
    vocab = (*load_playbook().vocabulary_hints(), *ACCOUNTS)
    report: dict[str, Any] = {"model": model, "hotwords": list(vocab)}
    for path in ("wideband", "telephone"):
        clips = rendered(path)
        names: list[tuple[str, ...]] = [(c.name,) for c in clips]
        plain, ms_plain = decode_all(t, clips, ())
        hinted, ms_hint = decode_all(t, clips, vocab)
        report[f"rendered_{path}"] = {
            "without": score(clips, plain, names),
            "with": score(clips, hinted, names),
            "decode_ms": {"without": round(1000 * ms_plain, 1), "with": round(1000 * ms_hint, 1)},
            "misses_with": sorted({c.name for c, x in zip(clips, hinted, strict=True) if not hit(c.name, x)}),
        }  # fmt: skip
    real = [Clip(i.name, i.audio, i.reference) for i in items() if i.name in REAL_NAMES]
    real_names = [REAL_NAMES[c.name] for c in real]
    plain, _ = decode_all(t, real, ())
    hinted, _ = decode_all(t, real, None)
    report["real"] = {
        "without": score(real, plain, real_names),
        "with": score(real, hinted, real_names),
        "texts": {c.name: {"without": p, "with": h} for c, p, h in zip(real, plain, hinted, strict=True)},
    }  # fmt: skip
    return report


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", choices=["tiny.en", "base"])
    p.add_argument("--json")
    args = p.parse_args()
    out = [run(m) for m in args.model or ["tiny.en", "base"]]
    for r in out:
        print(f"\n== {r['model']}")
        for key in ("rendered_wideband", "rendered_telephone", "real"):
            a = r[key]
            ms = a.get("decode_ms", {})
            print(
                f"{key:<20} names right: without {a['without']['hits']}/{a['without']['clips']}"
                f", with {a['with']['hits']}/{a['with']['clips']}"
                + (f"; decode {ms['without']} -> {ms['with']} ms" if ms else "")
            )
            if "misses_with" in a:
                print(f"{'':<20} still missed with hints: {', '.join(a['misses_with'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
