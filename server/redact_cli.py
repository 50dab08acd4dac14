"""``cuecard redact``: mask cards, SSNs, emails and phone numbers in text, line by line.

The same ``nlp.redaction.Redactor`` the server runs on every transcript, so a user can check
what a line would look like on the rep's screen and in the store. Exit status 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from nlp.redaction import RedactionOptions, redact_text


def register(subparsers: Any) -> None:
    """Add ``redact [TEXT ...] [--partial] [--keep-cards|ssns|emails|phones]``."""
    parser = subparsers.add_parser("redact", help="mask cards, SSNs, emails, phones in text")
    parser.add_argument("text", nargs="*", help="text to redact (default: read stdin)")
    parser.add_argument("--partial", action="store_true", help="apply the partial rules")
    for category in ("cards", "ssns", "emails", "phones"):
        parser.add_argument(f"--keep-{category}", action="store_true", help=f"leave {category}")
    parser.set_defaults(func=run_redact)


def run_redact(
    args: argparse.Namespace, stdin: TextIO | None = None, out: TextIO | None = None
) -> int:
    """Prints each redacted line of the arguments (joined) or of stdin."""
    options = RedactionOptions(
        cards=not args.keep_cards,
        ssns=not args.keep_ssns,
        emails=not args.keep_emails,
        phones=not args.keep_phones,
    )
    out = out or sys.stdout
    lines = [" ".join(args.text)] if args.text else (stdin or sys.stdin).read().splitlines()
    for line in lines:
        out.write(redact_text(line, options, is_final=not args.partial) + "\n")
    return 0
