"""``cuecard token create``: mint a scoped token (a JWT, ``server.auth``) and print it.

    cuecard token create --rep ana --call c-42 --scope events:read,cards:act --ttl 12h
    cuecard token create --sub crm-bridge --call '*' --scope audio:write --ttl 30d

``--rep`` or ``--sub`` names the subject (a rep, or an integration); ``--call`` is one call id
or ``*``; ``--scope`` a comma- or space-separated list of ``audio:write``, ``events:read``,
``cards:act``, ``admin``; ``--ttl`` a number with s, m, h or d (default 12h, at most 30d).
The token is signed HS256 with the server's secret (``CUECARD_JWT_SECRET``, else the data
directory's ``jwt_secret``, the one ``cuecard serve`` reads: pass the same ``--data-dir``),
or RS256 with ``--private-key PEM`` for a server that verifies with ``CUECARD_JWT_PUBLIC_KEY``.
Only the token goes to stdout; exit status 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from server.auth import Algorithm, mint, parse_scopes, parse_ttl
from server.clock import Clock, SystemClock
from server.settings import Settings


def register(subparsers: Any) -> None:
    """Add ``token create --rep|--sub NAME --call ID|* --scope S[,S] [--ttl 12h]``."""
    parser = subparsers.add_parser("token", help="mint scoped tokens (JWT)")
    actions = parser.add_subparsers(dest="action", required=True)
    p = actions.add_parser("create", help="print a new token")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--rep", help="the rep the token is for")
    who.add_argument("--sub", help="an integration's name (the token's subject)")
    p.add_argument("--call", required=True, help="a call id, or * for every call")
    p.add_argument(
        "--scope", required=True, help="audio:write, events:read, cards:act, admin (a,b)"
    )
    p.add_argument("--ttl", default="12h", help="lifetime: 90s, 15m, 12h, 7d (at most 30d)")
    p.add_argument("--private-key", help="sign RS256 with this PEM private key")
    p.add_argument("--data-dir", help="the server's data directory (its jwt_secret)")
    p.set_defaults(func=run_create)


def run_create(
    args: argparse.Namespace, out: TextIO | None = None, clock: Clock | None = None
) -> int:
    out = out or sys.stdout
    try:
        scopes = parse_scopes(args.scope)
        ttl_s = parse_ttl(args.ttl)
        key, algorithm = _signing_key(args)
        subject = args.rep or args.sub
        token = mint(
            key, algorithm, subject, scopes, args.call, ttl_s, (clock or SystemClock()).now()
        )
    except (ValueError, OSError) as err:
        print(f"cuecard token create: {err}", file=sys.stderr)
        return 2
    out.write(token + "\n")
    return 0


def _signing_key(args: argparse.Namespace) -> tuple[str, Algorithm]:
    if args.private_key:
        return Path(args.private_key).expanduser().read_text(), "RS256"
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else None
    settings = Settings.from_env(data_dir=data_dir)
    if settings.jwt_public_key:
        raise ValueError(
            "the server verifies RS256 tokens (CUECARD_JWT_PUBLIC_KEY): pass --private-key"
        )
    return settings.resolved_jwt_secret(), "HS256"
