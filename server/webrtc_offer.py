"""The WebRTC signalling message and what is checked before any peer connection exists.

Sans-I/O: ``parse_offer`` reads the JSON body of ``POST /v1/calls/{call_id}/webrtc``,
``audio_tracks`` reads the SDP's media sections (RFC 8866: ``m=`` starts a section; a
direction attribute in it, else at session level, else ``sendrecv``), and ``parse_ice_servers``
reads ``CUECARD_ICE_SERVERS``. Each refusal is an ``OfferRefused`` with the HTTP status and a
sentence for the sender; the sender must change its offer (a retry of the same one fails the
same way), except 409 (the call id is streaming already), which may succeed once that call ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from audio.chunk import Speaker
from guidance.errors import describe_validation
from server.ingest import CallDetails

MAX_SDP_CHARS = 64_000  # Chrome's two-track offer is about 5 kB
MAX_TRACKS = 2
SENDING = ("sendrecv", "sendonly")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class OfferRefused(Exception):
    """The offer cannot be answered; ``status`` is the HTTP status, ``detail`` says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class WebRtcOffer(CallDetails):
    """``{"type": "offer", "sdp": ..., "speakers": [...]}``; the rest as a native start."""

    type: Literal["offer"]
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS)
    # one per audio m-line, in m-line order
    speakers: list[Literal["rep", "customer", "unknown"]] = Field(
        min_length=1, max_length=MAX_TRACKS
    )

    @model_validator(mode="after")
    def _distinct_speakers(self) -> WebRtcOffer:
        if len(set(self.speakers)) != len(self.speakers):
            raise ValueError("each audio track needs its own speaker")
        return self

    @property
    def track_speakers(self) -> tuple[Speaker, ...]:
        return tuple(self.speakers)


def parse_offer(body: bytes) -> WebRtcOffer:
    try:
        return WebRtcOffer.model_validate_json(body)
    except ValidationError as err:
        why = describe_validation(err, root="body")
        raise OfferRefused(400, f"bad offer: {why}") from err


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str  # audio, video, application, ...
    direction: str


def media_sections(sdp: str) -> list[MediaSection]:
    """The SDP's media sections in order; ``OfferRefused`` for text that is no SDP."""
    lines = [ln.strip() for ln in sdp.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise OfferRefused(400, "invalid SDP offer: it must start with the line v=0")
    session_dir = "sendrecv"
    kinds: list[str] = []
    dirs: list[str | None] = []
    for line in lines[1:]:
        if line.startswith("m="):
            kinds.append(line[2:].split(" ", 1)[0])
            dirs.append(None)
        elif line.startswith("a=") and line[2:] in DIRECTIONS:
            if dirs:
                dirs[-1] = line[2:]
            else:
                session_dir = line[2:]
    return [MediaSection(k, d or session_dir) for k, d in zip(kinds, dirs, strict=True)]


def audio_tracks(offer: WebRtcOffer) -> int:
    """How many audio tracks the offer sends: one per m-line, each named by ``speakers``."""
    sections = media_sections(offer.sdp)
    for i, s in enumerate(sections, 1):
        if s.kind != "audio":
            raise OfferRefused(400, f"m-line {i} is {s.kind}: only audio tracks are taken")
        if s.direction not in SENDING:
            raise OfferRefused(400, f"audio m-line {i} sends nothing (a={s.direction})")
    if not sections:
        raise OfferRefused(400, "the offer has no audio track")
    if len(sections) != len(offer.speakers):
        raise OfferRefused(
            400,
            f"the offer has {len(sections)} audio track(s) and speakers names "
            f"{len(offer.speakers)}: name one speaker per audio m-line, in order",
        )
    return len(sections)


@dataclass(frozen=True, slots=True)
class IceServer:
    """A STUN or TURN server, as in the browser's ``RTCIceServer``."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


def parse_ice_servers(text: str) -> tuple[IceServer, ...]:
    """``CUECARD_ICE_SERVERS``: a JSON list of ``{"urls": str | [str], "username"?,
    "credential"?}``; empty: none (a LAN needs none). ``ValueError`` says what is wrong."""
    if not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err.msg}") from None
    if not isinstance(raw, list):
        raise ValueError('must be a JSON list such as [{"urls": "stun:stun.example.org"}]')
    return tuple(_ice_server(i, item) for i, item in enumerate(raw))


def _ice_server(i: int, item: Any) -> IceServer:
    if not isinstance(item, dict) or not set(item) <= {"urls", "username", "credential"}:
        raise ValueError(f"entry {i} must be an object of urls, username, credential")
    urls = item.get("urls")
    urls = [urls] if isinstance(urls, str) else urls
    if not urls or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"entry {i}: urls must be a URL or a list of URLs")
    for url in urls:
        if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            raise ValueError(f"entry {i}: {url!r} is not a stun: or turn: URL")
    user, cred = item.get("username"), item.get("credential")
    for name, value in (("username", user), ("credential", cred)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"entry {i}: {name} must be a string")
    return IceServer(tuple(urls), user, cred)
