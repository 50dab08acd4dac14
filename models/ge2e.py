"""GE2E speaker encoder (Resemblyzer's ``pretrained.pt``) run in numpy: no torch at run time.

The ``resemblyzer`` 0.1.4 wheel (Apache-2.0) ships a 17 MB checkpoint of a 3-layer LSTM
(256 units) over 40-band mel power spectra (25 ms windows, 10 ms hop) with a 256-d ReLU
projection, trained with the generalised end-to-end loss. Its Python code imports torch, so
only the file is used (``pip install --no-deps resemblyzer``): ``read_legacy_checkpoint`` parses
torch's legacy serialization (a stream of pickles followed by raw storages) with a restricted
unpickler, and ``Ge2eEncoder`` is the same forward pass in numpy, windows batched (it matches
torch to ~1e-6; ``tests/test_diarize.py`` checks it where torch happens to be installed).

``embed(audio)`` follows Resemblyzer's recipe: the clip is raised to -30 dBFS (never lowered),
its quiet ends trimmed, cut into 1.6 s windows every ``hop_s``, and each window gives one
unit-length embedding (see ``embed`` for clips shorter than a window).
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from audio.chunk import SAMPLE_RATE_HZ, Samples
from models.errors import ModelUnavailable

F32 = npt.NDArray[np.float32]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s
TARGET_DBFS = -30.0
HINT = "pip install --no-deps resemblyzer==0.1.4"
_DTYPES: dict[str, type[np.generic]] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
}


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: type[np.generic]


@dataclass(frozen=True, slots=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Only what a state dict holds: tensors, storages, ordered dicts. Anything else refuses."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch._utils", "_rebuild_tensor"),
        }:
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}: not a state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, dtype_name, key = pid[0], pid[1], pid[2]
        if kind != "storage" or dtype_name not in _DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        return _Storage(str(key), _DTYPES[dtype_name])


def read_legacy_checkpoint(path: Path) -> dict[str, Any]:
    """A torch legacy (pre-zip) checkpoint as nested dicts of numpy arrays."""
    with path.open("rb") as f:
        if pickle.load(f) != LEGACY_MAGIC:
            raise ModelUnavailable(f"{path}: not a legacy torch checkpoint")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        obj = _Unpickler(f).load()
        keys = pickle.load(f)
        buffers: dict[str, np.ndarray] = {}
        dtypes = _storage_dtypes(obj)
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            dtype = np.dtype(dtypes.get(key, np.float32))
            buffers[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    return _materialise(obj, buffers)


def _storage_dtypes(obj: Any) -> dict[str, type[np.generic]]:
    if isinstance(obj, _TensorRef):
        return {obj.storage.key: obj.storage.dtype}
    if isinstance(obj, dict):
        return {k: v for value in obj.values() for k, v in _storage_dtypes(value).items()}
    return {}


def _materialise(obj: Any, buffers: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _TensorRef):
        flat = buffers[obj.storage.key]
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset :], obj.size, tuple(s * item for s in obj.stride)
        )
        return np.array(view)
    if isinstance(obj, dict):
        return {k: _materialise(v, buffers) for k, v in obj.items()}
    return obj


def resemblyzer_checkpoint() -> Path:
    """The checkpoint inside the installed ``resemblyzer`` package (its code is not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"resemblyzer is not installed; install it with: {HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.exists():
        raise ModelUnavailable(f"{path} is missing; reinstall with: {HINT}")
    return path


class Ge2eEncoder:
    """Speaker embeddings of 16 kHz clips, one per 1.6 s window. Blocking; one onnxruntime
    session (1 thread), safe to call from one executor thread at a time."""

    name = "ge2e"
    window_s = WINDOW_FRAMES * HOP / SAMPLE_RATE_HZ

    def __init__(self, state: dict[str, np.ndarray], hop_s: float = 0.8) -> None:
        if not 0.1 <= hop_s <= self.window_s:
            raise ValueError(f"hop_s must be within [0.1, {self.window_s}]")
        self.hop_s = hop_s
        self._state = {k: np.asarray(v, np.float32) for k, v in state.items()}
        self._session = _session(_graph(self._state))
        self._mel = _mel_filters()
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann

    @classmethod
    def load(cls, path: Path | None = None, hop_s: float = 0.8) -> Ge2eEncoder:
        checkpoint = read_legacy_checkpoint(path or resemblyzer_checkpoint())
        return cls(checkpoint["model_state"], hop_s)

    def warmup(self) -> None:
        self.embed(np.full(SAMPLE_RATE_HZ * 2, 0.01, np.float32))

    def embed(self, audio: Samples) -> F32:
        """(n_windows, 256) unit rows; at least one window, however short the clip. A clip
        shorter than a window is one window of its own length (padding it with silence would
        make the LSTM's last state describe the silence); the last window of a longer clip
        ends with the clip."""
        frames = _trim_quiet(self._mel_frames(_raise_volume(audio)))
        if len(frames) <= WINDOW_FRAMES:
            batch = frames[None]
        else:
            step = max(1, round(self.hop_s * SAMPLE_RATE_HZ / HOP))
            starts = list(range(0, len(frames) - WINDOW_FRAMES + 1, step))
            if len(frames) - (starts[-1] + WINDOW_FRAMES) > step // 2:
                starts.append(len(frames) - WINDOW_FRAMES)
            batch = np.stack([frames[s : s + WINDOW_FRAMES] for s in starts])
        (raw,) = self._session.run(None, {"mels": np.ascontiguousarray(batch.transpose(1, 0, 2))})
        return _unit(np.asarray(raw, np.float32))

    def forward_reference(self, mels: F32) -> F32:
        """The same network in plain numpy, (batch, frames, 40) -> (batch, 256): the check
        that the ONNX graph is wired right (and that it matches torch, where torch exists)."""
        x = mels
        for i in range(3):
            w_ih, w_hh = self._state[f"lstm.weight_ih_l{i}"], self._state[f"lstm.weight_hh_l{i}"]
            bias = self._state[f"lstm.bias_ih_l{i}"] + self._state[f"lstm.bias_hh_l{i}"]
            x = _lstm_layer(x, w_ih.T, w_hh.T, bias)
        out = x[:, -1] @ self._state["linear.weight"].T + self._state["linear.bias"]
        return _unit(np.maximum(out, 0.0))

    def _mel_frames(self, audio: Samples) -> F32:
        """librosa-style centred STFT (zero padding), power, 40 Slaney mel bands: (frames, 40)."""
        padded = np.pad(audio.astype(np.float32), N_FFT // 2)
        n = 1 + (len(padded) - N_FFT) // HOP
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(padded[idx] * self._window, axis=1)) ** 2
        return (spec.astype(np.float32) @ self._mel.T).astype(np.float32)


def _trim_quiet(frames: F32, floor_db: float = 40.0) -> F32:
    """Leading and trailing frames more than ``floor_db`` below the loudest one dropped (the
    segmenter's pre-roll and tail); at least 10 frames are kept."""
    energy = frames.sum(axis=1)
    if len(energy) == 0:
        return frames
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-floor_db / 10))
    if len(loud) == 0 or loud[-1] + 1 - loud[0] < 10:
        return frames
    return frames[loud[0] : loud[-1] + 1]


def _unit(x: F32) -> F32:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-9)).astype(np.float32)


def _graph(state: dict[str, F32]) -> bytes:
    """Three ONNX LSTM nodes and the ReLU projection, built from the weights (no export).
    PyTorch orders the gates i, f, g, o; ONNX wants i, o, f, c."""
    from onnx import TensorProto, helper, numpy_helper

    def gates(w: F32) -> F32:
        i, f, g, o = np.split(w, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    nodes, inits = [], []
    x = "mels"  # (time, batch, 40)
    for i in range(3):
        w = gates(state[f"lstm.weight_ih_l{i}"])[None]
        r = gates(state[f"lstm.weight_hh_l{i}"])[None]
        b = np.concatenate([gates(state[f"lstm.bias_ih_l{i}"]), gates(state[f"lstm.bias_hh_l{i}"])])
        for name, arr in ((f"W{i}", w), (f"R{i}", r), (f"B{i}", b[None])):
            inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        outs = [f"Y{i}", f"H{i}"]
        nodes.append(
            helper.make_node("LSTM", [x, f"W{i}", f"R{i}", f"B{i}"], outs, hidden_size=256)
        )
        inits.append(numpy_helper.from_array(np.array([1], np.int64), f"ax{i}"))
        nodes.append(helper.make_node("Squeeze", [f"Y{i}", f"ax{i}"], [f"X{i}"]))
        x = f"X{i}"
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax_h"))
    inits.append(numpy_helper.from_array(state["linear.weight"], "Wp"))
    inits.append(numpy_helper.from_array(state["linear.bias"], "Bp"))
    nodes.append(helper.make_node("Squeeze", ["H2", "ax_h"], ["h"]))
    nodes.append(helper.make_node("Gemm", ["h", "Wp", "Bp"], ["p"], transB=1))
    nodes.append(helper.make_node("Relu", ["p"], ["embedding"]))
    graph = helper.make_graph(
        nodes,
        "ge2e",
        [helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["time", "batch", N_MELS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 256])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _session(graph: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def _lstm_layer(x: F32, w_ih: F32, w_hh: F32, bias: F32) -> F32:
    """PyTorch's LSTM (gates i, f, g, o) over (batch, time, in) -> (batch, time, hidden)."""
    batch, steps, _ = x.shape
    hidden = w_hh.shape[0]
    gates_in = x @ w_ih + bias
    h = np.zeros((batch, hidden), np.float32)
    c = np.zeros((batch, hidden), np.float32)
    out = np.empty((batch, steps, hidden), np.float32)
    for t in range(steps):
        g = gates_in[:, t] + h @ w_hh
        i, f = _sigmoid(g[:, :hidden]), _sigmoid(g[:, hidden : 2 * hidden])
        cell, o = np.tanh(g[:, 2 * hidden : 3 * hidden]), _sigmoid(g[:, 3 * hidden :])
        c = f * c + i * cell
        h = o * np.tanh(c)
        out[:, t] = h
    return out


def _sigmoid(x: F32) -> F32:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _raise_volume(audio: Samples) -> Samples:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    if rms <= 1e-9:
        return audio
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    return audio * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else audio


def _mel_filters() -> F32:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE_HZ, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
