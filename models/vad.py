"""Speech detectors: Silero (ONNX, default) and WebRTC VAD."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audio.chunk import SAMPLE_RATE_HZ, Samples
from audio.vad import DetectorFactory
from models.errors import ModelUnavailable

SILERO_FRAME = 512  # 32 ms at 16 kHz
SILERO_CONTEXT = 64


class SileroDetector:
    """Silero VAD v6 streaming: one 512-sample frame per call, state carried across calls."""

    name = "silero"
    frame_samples = SILERO_FRAME

    def __init__(self, session: object) -> None:
        self._session = session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT, dtype=np.float32)

    def probability(self, frame: Samples) -> float:
        x = np.concatenate([self._context, frame])[None, :]
        out, self._h, self._c = self._session.run(  # type: ignore[attr-defined]
            None, {"input": x, "h": self._h, "c": self._c}
        )
        self._context = frame[-SILERO_CONTEXT:]
        return float(out.reshape(-1)[0])


def silero_factory(model_path: Path) -> DetectorFactory:
    """One ONNX session (1 thread) shared by every channel's detector."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    session = onnxruntime.InferenceSession(
        str(model_path), providers=["CPUExecutionProvider"], sess_options=opts
    )
    return lambda: SileroDetector(session)


class WebRtcDetector:
    """WebRTC VAD on 30 ms frames; its decisions are 0/1, reported as probabilities."""

    name = "webrtc"
    frame_samples = 480

    def __init__(self, aggressiveness: int) -> None:
        try:
            import webrtcvad
        except ImportError as err:
            raise ModelUnavailable("webrtcvad is missing: pip install webrtcvad-wheels") from err
        self._vad = webrtcvad.Vad(aggressiveness)

    def reset(self) -> None:
        return None

    def probability(self, frame: Samples) -> float:
        pcm = (np.clip(frame, -1, 1) * 32767).astype("<i2").tobytes()
        return 1.0 if self._vad.is_speech(pcm, SAMPLE_RATE_HZ) else 0.0


def webrtc_factory(aggressiveness: int = 2) -> DetectorFactory:
    WebRtcDetector(aggressiveness)  # fail at start-up, not at the first frame
    return lambda: WebRtcDetector(aggressiveness)
