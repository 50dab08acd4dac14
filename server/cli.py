"""``cuecard``: the command line. Each subcommand is a thin layer over the packages."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from models.errors import ModelUnavailable
from server.settings import Settings, SettingsError
from server.store import StoreError

log = logging.getLogger("cuecard")


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux
        return asyncio.run(coro)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=Path(args.data_dir).expanduser() if getattr(args, "data_dir", None) else None,
        model=getattr(args, "model", None),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from server import logs
    from server.main import serve

    settings = _settings(args)
    # the server's logging: CUECARD_LOG_FORMAT, CUECARD_LOG_TRANSCRIPTS (server/logs.py)
    logs.configure(
        settings.log_format, transcripts=bool(settings.log_transcripts), verbose=args.verbose
    )
    _quiet_webrtc(args.verbose)
    return int(run_async(serve(settings, demo=args.demo)) or 0)


def cmd_simulate(args: argparse.Namespace) -> int:
    from clients.simulator import SimOptions, format_event, simulate

    settings = Settings.from_env()
    token = args.token or settings.resolved_token()
    options = SimOptions(server=args.server, token=token, speed=args.speed, twilio=args.twilio)
    if args.call_id:
        options = SimOptions(args.server, token, args.speed, args.twilio, args.call_id)
    if args.audiohook or args.vonage:
        options = _source_options(options, args, settings)
    if args.webrtc:  # a track per channel over WebRTC, in real time whatever --speed says
        options = dataclasses.replace(options, webrtc=True)
    if args.twilio and settings.twilio_auth_token:  # signed like Twilio's upgrade
        options = dataclasses.replace(
            options, twilio_auth_token=settings.twilio_auth_token, public_url=settings.public_url
        )

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event) if args.json else format_event(event), flush=True)

    refused: tuple[type[Exception], ...] = ()
    if args.webrtc:
        from clients.webrtc import SignallingRefused

        refused = (SignallingRefused,)
    try:
        result = run_async(simulate(Path(args.file), options, show))
    except refused as err:
        print(f"cuecard simulate: the server refused the WebRTC offer: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"cuecard simulate: cannot reach {args.server}: {err}", file=sys.stderr)
        return 2
    if not args.json:
        print(
            f"call {result.call_id}: {result.audio_s:.1f} s of audio, {len(result.events)} events"
        )
    return 0


def _source_options(options: Any, args: argparse.Namespace, settings: Settings) -> Any:
    """--audiohook: signed with the first of CUECARD_AUDIOHOOK_KEYS (else the token), the call
    id a UUID (the conversationId); --vonage: one mixed channel labelled --speaker."""
    import uuid

    from server.audiohook_auth import parse_keys

    if args.vonage:
        return dataclasses.replace(options, vonage=True, speaker=args.speaker)
    key, secret = next(iter(parse_keys(settings.audiohook_keys).items()), ("", b""))
    call_id = args.call_id or str(uuid.uuid4())
    return dataclasses.replace(
        options, audiohook=True, call_id=call_id, api_key=key, client_secret=secret
    )


def cmd_transcribe(args: argparse.Namespace) -> int:
    from server.offline import transcribe_file

    settings = _settings(args)
    for t in run_async(transcribe_file(Path(args.file), settings)):
        if args.json:
            print(
                json.dumps(
                    {"speaker": t.speaker, "start_s": t.start_s, "end_s": t.end_s, "text": t.text}
                )
            )
        else:
            print(f"[{t.start_s:7.2f}-{t.end_s:7.2f}] {t.speaker:<8} {t.text}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models.registry import installed
    from server.engines import load_detectors, load_transcriber

    ok = True
    for m in installed():
        state = "installed" if m.error is None else f"missing: {m.error}"
        print(f"{m.kind:8} {m.name:8} {state} {m.location}")
    settings = _settings(args)
    try:
        transcriber = load_transcriber(settings)
        load_detectors(settings)()
        print(f"configured: {transcriber.name}, VAD {settings.vad}: loads and runs")
    except ModelUnavailable as err:
        print(f"configured model {settings.model!r} does not load: {err}")
        ok = False
    return 0 if ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    """``python -m bench`` under the product's name: the benchmark lives in the source tree."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("bench") is None:
        print("cuecard bench runs in a source checkout (its bench/ folder)", file=sys.stderr)
        return 2
    # by name: bench/ is no installed package, and outside the type-checked ones
    return int(importlib.import_module("bench.__main__").main(list(args.args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cuecard", description="Live coaching for sales calls")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the server")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--model", help="tiny.en (default), base, or a CTranslate2 folder")
    p.add_argument("--demo", action="store_true", help="also stream a simulated call into it")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("simulate", help="stream a WAV into a running server as a softphone would")
    p.add_argument("file")
    p.add_argument("--server", default="ws://127.0.0.1:8000")
    p.add_argument("--token", default="", help="default: CUECARD_TOKEN or the data dir's token")
    p.add_argument(
        "--speed", type=float, default=1.0, help="1.0 = real time, 0 = as fast as possible"
    )
    p.add_argument("--twilio", action="store_true", help="use Twilio Media Streams (mu-law 8 kHz)")
    p.add_argument("--audiohook", action="store_true", help="use Genesys AudioHook (PCMU 8 kHz)")
    p.add_argument("--vonage", action="store_true", help="use Vonage WebSockets (mixed mono)")
    p.add_argument(
        "--webrtc", action="store_true", help="use WebRTC: an Opus track per channel (real time)"
    )
    p.add_argument(
        "--speaker",
        default="unknown",
        choices=("rep", "customer", "unknown"),
        help="--vonage: who is on its one channel",
    )
    p.add_argument("--json", action="store_true", help="one JSON event per line with received_s")
    p.add_argument("--call-id")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("transcribe", help="transcribe a WAV offline with the same models")
    p.add_argument("file")
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("models", help="list installed models and check the configured one loads")
    p.add_argument("--model")
    p.set_defaults(func=cmd_models)

    # Every argument goes to python -m bench unparsed ("+" is no prefix: --quick stays its own).
    p = sub.add_parser(
        "bench", help="the benchmark: python -m bench --help", add_help=False, prefix_chars="+"
    )
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    for register in _registrars():
        register(sub)
    return parser


def _registrars() -> list[Any]:
    from server import calls_cli, enroll_cli, guidance_cli, intent_cli, redact_cli, token_cli

    return [
        enroll_cli.register,
        intent_cli.register,
        redact_cli.register,
        guidance_cli.register,
        calls_cli.register,
        token_cli.register,
    ]


def _quiet_webrtc(verbose: bool) -> None:
    if not verbose:  # WebRTC's ICE logs every candidate pair of every call at INFO
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _quiet_webrtc(args.verbose)
    try:
        handler = getattr(args, "func", None) or args.handler
        return int(handler(args))
    except (SettingsError, ModelUnavailable, StoreError) as err:
        print(f"cuecard {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
