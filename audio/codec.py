"""Telephone and PCM audio to 16 kHz float32, per channel, with sample-exact time.

``ChannelDecoder`` is a sans-I/O core: it takes raw bytes as they arrive (any frame size that
is a whole number of sample frames), splits interleaved channels, resamples each with a
streaming resampler (soxr keeps filter state between calls, so frame edges leave no clicks),
and returns ``AudioChunk``s stamped with their 16 kHz start sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import soxr

from audio.chunk import SAMPLE_RATE_HZ, AudioChunk, Samples, Speaker

Encoding = Literal["pcm16", "mulaw"]
SUPPORTED_RATES_HZ = (8000, 16000, 48000)


class AudioFormatError(ValueError):
    """Audio bytes that do not fit the declared format; the sender must fix its input."""


def _mulaw_table() -> Samples:
    """ITU-T G.711 mu-law byte -> linear float32 in [-1, 1]."""
    u = ~np.arange(256, dtype=np.uint8)
    sign = (u & 0x80) != 0
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent.astype(np.int32)
    linear = np.where(sign, 0x84 - magnitude, magnitude - 0x84)
    return (linear / 32768.0).astype(np.float32)


MULAW_TO_FLOAT = _mulaw_table()


def mulaw_encode(samples: Samples) -> bytes:
    """Linear float32 -> G.711 mu-law bytes (used by the simulator's Twilio mode and tests)."""
    x = np.clip(samples, -1.0, 1.0) * 32767.0
    sign = np.where(x < 0, 0x80, 0x00)
    mag = np.minimum(np.abs(x).astype(np.int32) + 0x84, 0x7FFF)
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def decode_bytes(data: bytes, encoding: Encoding) -> Samples:
    if encoding == "mulaw":
        return MULAW_TO_FLOAT[np.frombuffer(data, dtype=np.uint8)]
    if len(data) % 2:
        raise AudioFormatError(f"pcm16 frame of {len(data)} bytes is not whole samples")
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


@dataclass(frozen=True, slots=True)
class StreamFormat:
    encoding: Encoding
    sample_rate_hz: int
    speakers: tuple[Speaker, ...]  # one per channel, in interleaving order

    def __post_init__(self) -> None:
        if self.sample_rate_hz not in SUPPORTED_RATES_HZ:
            raise AudioFormatError(
                f"sample_rate_hz {self.sample_rate_hz} unsupported; use one of {SUPPORTED_RATES_HZ}"
            )
        if len(self.speakers) not in (1, 2):
            raise AudioFormatError("channels must be 1 or 2")
        if len(set(self.speakers)) != len(self.speakers):
            raise AudioFormatError("each channel needs its own speaker")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample across all channels."""
        return (2 if self.encoding == "pcm16" else 1) * len(self.speakers)


class ChannelDecoder:
    """Bytes of one stream -> per-speaker 16 kHz chunks on one shared timeline."""

    def __init__(self, fmt: StreamFormat, max_frame_bytes: int) -> None:
        self.format = fmt
        self.max_frame_bytes = max_frame_bytes
        self._resamplers = [
            soxr.ResampleStream(
                fmt.sample_rate_hz, SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ"
            )
            if fmt.sample_rate_hz != SAMPLE_RATE_HZ
            else None
            for _ in fmt.speakers
        ]
        self._next_sample = [0 for _ in fmt.speakers]

    def feed(self, data: bytes) -> list[AudioChunk]:
        if len(data) > self.max_frame_bytes:
            raise AudioFormatError(
                f"frame of {len(data)} bytes exceeds the limit of {self.max_frame_bytes}"
            )
        if len(data) % self.format.bytes_per_frame:
            raise AudioFormatError(
                f"frame of {len(data)} bytes is not a whole number of "
                f"{self.format.bytes_per_frame}-byte sample frames"
            )
        decoded = decode_bytes(data, self.format.encoding)
        channels = decoded.reshape(-1, len(self.format.speakers)).T
        return [self._chunk(i, np.ascontiguousarray(ch)) for i, ch in enumerate(channels)]

    def flush(self) -> list[AudioChunk]:
        """The resamplers' tails at the end of the stream."""
        out = []
        for i, rs in enumerate(self._resamplers):
            if rs is not None:
                tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
                if len(tail):
                    out.append(self._stamp(i, tail.astype(np.float32)))
        return out

    def _chunk(self, i: int, samples: Samples) -> AudioChunk:
        rs = self._resamplers[i]
        resampled = samples if rs is None else rs.resample_chunk(samples).astype(np.float32)
        return self._stamp(i, resampled)

    def _stamp(self, i: int, samples: Samples) -> AudioChunk:
        chunk = AudioChunk(self.format.speakers[i], self._next_sample[i], samples)
        self._next_sample[i] += len(samples)
        return chunk
