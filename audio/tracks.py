"""Decoded media tracks of one call (WebRTC) -> 16 kHz chunks on one call timeline.

``TrackTimeline`` is a sans-I/O core: the transport hands it each track's decoded frames
(``TrackFrame``: mono 16-bit samples, the frame's presentation time in samples, and when it
arrived on a monotonic clock) and it returns ``AudioChunk``s of that track's speaker, resampled
by the same streaming resampler as every other source (``audio.codec.ChannelDecoder``).

How the tracks share one timeline:

- The call's audio time 0 is the arrival of the first frame on any track. A track whose first
  frame arrives later starts with that much silence, so its words line up with the other side's
  (precise to the network's jitter: the tracks carry no common clock until RTCP sender reports,
  which are not read here).
- After its first frame a track is placed by its presentation timestamps (RTP time, unwrapped
  and counted from 0 by the receiver): a gap (lost packets, discontinuous transmission) is
  filled with silence so later words keep their time. A jump is believed only as far as the
  wall time that passed since the previous frame allows (plus ``max_burst_s`` for frames that
  the jitter buffer releases in a burst): a sender that skips its timestamps by hours gets
  seconds of silence, not hours.
- A timestamp that goes backwards (a sender that restarted) is taken as contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from audio.chunk import AudioChunk, Speaker
from audio.codec import SUPPORTED_RATES_HZ, AudioFormatError, ChannelDecoder, StreamFormat

Pcm16 = npt.NDArray[np.int16]
_MAX_FEED_BYTES = 1 << 20  # the decoder's own frame limit; the timeline bounds what it feeds


@dataclass(frozen=True, slots=True)
class TrackFrame:
    """One decoded frame of one track: mono 16-bit samples at ``sample_rate_hz``."""

    samples: Pcm16 = field(repr=False)
    sample_rate_hz: int
    pts: int | None  # presentation time in samples at sample_rate_hz; None: contiguous
    arrival_s: float  # monotonic seconds, any origin (the same one for every track)


@dataclass(frozen=True, slots=True)
class TimelineOptions:
    max_burst_s: float = (
        1.0  # a timestamp gap may exceed the wall time since the last frame by this
    )
    max_lead_s: float = 120.0  # the most silence put before a track that starts late

    def __post_init__(self) -> None:
        if not (self.max_burst_s >= 0 and self.max_lead_s >= 0):
            raise ValueError("max_burst_s and max_lead_s must be >= 0")


@dataclass(slots=True)
class _Track:
    speaker: Speaker
    decoder: ChannelDecoder | None = None
    next_pts: int = 0
    last_arrival_s: float = 0.0


class TrackTimeline:
    """The tracks of one call, each labelled with its speaker, in m-line order."""

    def __init__(self, speakers: tuple[Speaker, ...], opts: TimelineOptions | None = None) -> None:
        if not speakers or len(set(speakers)) != len(speakers):
            raise ValueError("each track needs its own speaker")
        self.opts = opts or TimelineOptions()
        self._tracks = [_Track(s) for s in speakers]
        self._origin_s: float | None = None

    @property
    def speakers(self) -> tuple[Speaker, ...]:
        return tuple(t.speaker for t in self._tracks)

    def started(self, index: int) -> bool:
        """Whether track ``index`` has delivered a frame."""
        return self._tracks[index].decoder is not None

    def feed(self, index: int, frame: TrackFrame) -> list[AudioChunk]:
        """Chunks of track ``index``'s speaker: any silence that places this frame on the
        call's timeline, then the frame. Raises ``AudioFormatError`` for a rate that cannot
        be resampled or that changes mid-track."""
        track = self._tracks[index]
        if frame.samples.ndim != 1:
            raise AudioFormatError("a track frame must be mono")
        rate = frame.sample_rate_hz
        out: list[AudioChunk] = []
        if track.decoder is None:
            if rate not in SUPPORTED_RATES_HZ:
                raise AudioFormatError(f"track rate {rate} Hz unsupported: {SUPPORTED_RATES_HZ}")
            fmt = StreamFormat("pcm16", rate, (track.speaker,))
            track.decoder = ChannelDecoder(fmt, _MAX_FEED_BYTES)
            if self._origin_s is None:
                self._origin_s = frame.arrival_s
            lead_s = min(max(frame.arrival_s - self._origin_s, 0.0), self.opts.max_lead_s)
            out += self._silence(track, round(lead_s * rate))
        elif rate != track.decoder.format.sample_rate_hz:
            raise AudioFormatError("a track's sample rate changed mid-call")
        else:
            out += self._silence(track, self._gap(track, frame))
        track.next_pts = (frame.pts if frame.pts is not None else track.next_pts) + len(
            frame.samples
        )
        track.last_arrival_s = frame.arrival_s
        out += self._feed(track, frame.samples)
        return out

    def flush(self) -> list[AudioChunk]:
        """The resamplers' tails, at the end of the call."""
        return [c for t in self._tracks if t.decoder is not None for c in t.decoder.flush()]

    def _gap(self, track: _Track, frame: TrackFrame) -> int:
        if frame.pts is None or frame.pts <= track.next_pts:
            return 0  # contiguous, or a sender that restarted its clock
        rate = frame.sample_rate_hz
        wall_s = max(frame.arrival_s - track.last_arrival_s, 0.0) + self.opts.max_burst_s
        return min(frame.pts - track.next_pts, round(wall_s * rate))

    def _silence(self, track: _Track, n_samples: int) -> list[AudioChunk]:
        out: list[AudioChunk] = []
        step = _MAX_FEED_BYTES // 2
        while n_samples > 0:
            n = min(n_samples, step)
            out += self._feed(track, np.zeros(n, np.int16))
            n_samples -= n
        return out

    def _feed(self, track: _Track, samples: Pcm16) -> list[AudioChunk]:
        assert track.decoder is not None
        chunk = track.decoder.feed(samples.astype("<i2", copy=False).tobytes())
        return [c for c in chunk if len(c.samples)]
