"""Enrolled voiceprints: one rep's voice, stored once under the data dir, read at call start.

A voiceprint is the unit mean of a speaker encoder's window embeddings over a sample the rep
recorded (``cuecard enroll --rep ana FILE.wav``). It is stored as ``voiceprints/<rep_id>.npy``
with the encoder's name beside it (``<rep_id>.json``), so a print made by another encoder is
never compared with this one's embeddings. A voiceprint is biometric data: it stays in the
data dir, is never sent on the wire, and ``delete`` removes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from audio.diarize import Embeddings

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class VoiceprintStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _stem(self, rep_id: str) -> Path:
        if not rep_id:
            raise ValueError("rep_id must not be empty")
        name = rep_id if _SAFE.match(rep_id) and not rep_id.startswith(".") else None
        name = name or "rep-" + hashlib.sha256(rep_id.encode()).hexdigest()[:24]
        return self.root / name

    def save(self, rep_id: str, voiceprint: Embeddings, encoder: str, speech_s: float) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        stem = self._stem(rep_id)
        np.save(stem.with_suffix(".npy"), np.asarray(voiceprint, np.float32))
        meta = {"rep_id": rep_id, "encoder": encoder, "speech_s": round(speech_s, 2)}
        stem.with_suffix(".json").write_text(json.dumps(meta))
        return stem.with_suffix(".npy")

    def load(self, rep_id: str | None, encoder: str) -> Embeddings | None:
        """The rep's voiceprint made by ``encoder``; None when there is none (or another
        encoder's, or an unreadable file: the call then falls back to the first voice)."""
        if not rep_id:
            return None
        stem = self._stem(rep_id)
        try:
            meta = json.loads(stem.with_suffix(".json").read_text())
            vector = np.load(stem.with_suffix(".npy"))
        except (OSError, ValueError):
            return None
        if meta.get("encoder") != encoder or vector.ndim != 1:
            return None
        return np.asarray(vector, np.float32)

    def delete(self, rep_id: str) -> bool:
        stem = self._stem(rep_id)
        found = False
        for suffix in (".npy", ".json"):
            path = stem.with_suffix(suffix)
            if path.exists():
                path.unlink()
                found = True
        return found
