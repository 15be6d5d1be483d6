"""``groundbreak review``: triage the nightly alerts in a browser (a local web app).

    groundbreak review [--state STATE_DIR] [--port 8765] [--host 127.0.0.1] [--analyst NAME]
                       [--token TOKEN | --token-file FILE] [--allowed-host NAME ...]

Serves the queue of open alerts (highest score first, with filters and counts), each with its
before / after / probability crops, history and facts, and writes confirm / dismiss / reopen
decisions (with a note, the time and the analyst's name) to the state, as ``groundbreak alerts``
does. Listens on localhost only unless ``--host`` says otherwise; then every request needs an
access token: ``--token`` (or ``GROUNDBREAK_REVIEW_TOKEN``; else one is generated and printed
with the address, as Jupyter does), recorded as ``--analyst``, or ``--token-file`` (lines
``TOKEN ANALYST NAME``: one token per analyst, recorded as theirs). Stop it with Ctrl+C.
Exit codes: 0 stopped; 2 bad usage, no state there, or the port is taken; 5 the state database is
damaged (see "Backup and recovery" in docs/operator.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from collections.abc import Sequence

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.text_files import read_text_file
from groundbreak.infer.cli.alerts import STATE_ENV, open_state, os_user
from groundbreak.infer.review.app import LOOPBACK, TOKEN_FORM, clean_analyst, make_server

DEFAULT_PORT = 8765
TOKEN_ENV = "GROUNDBREAK_REVIEW_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak review``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak review",
        description="Triage the nightly alerts in a browser: a queue of open alerts with their "
        "pictures; confirm, dismiss or reopen with a note (keys j/k, c, d, r, n).",
    )
    parser.add_argument("--state", metavar="STATE_DIR",
                        help=f"the nightly state directory (default: ${STATE_ENV})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--analyst", help="name recorded with decisions (default: the OS user)")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token", help="access token every request must carry (default: "
                        f"${TOKEN_ENV}; beyond localhost, a generated one, printed); "
                        "decisions are recorded as --analyst")
    tokens.add_argument("--token-file", metavar="FILE",
                        help="one access token per analyst: lines 'TOKEN ANALYST NAME'; "
                        "decisions are recorded as the token's analyst")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="another name the app is reached by (a DNS name of this machine); "
                        "repeatable")
    return parser


def read_token_file(path: str) -> dict[str, str]:
    """``{token: analyst}`` from a token file: lines ``TOKEN ANALYST NAME``, ``#`` comments.

    Raises:
        InputError: Naming the file and line for a malformed line, a short token, a repeated
            token, or no token at all.
    """
    text = read_text_file(path, limit=1 << 20, what="token file")
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        token, _, name = line.strip().replace("\t", " ").partition(" ")
        if not token or token.startswith("#"):
            continue
        analyst = clean_analyst(name)
        if not TOKEN_FORM.match(token) or not analyst:
            raise InputError(path, f"line {number}: expected 'TOKEN ANALYST NAME', the token "
                             "16-256 letters, digits or '._~-'")
        if token in tokens:
            raise InputError(path, f"line {number}: this token is given twice")
        tokens[token] = analyst
    if not tokens:
        raise InputError(path, "token file holds no token")
    return tokens


def main(argv: Sequence[str]) -> int:
    """Serve the review app until interrupted; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    args.state = args.state or os.environ.get(STATE_ENV)
    if not args.state:
        parser.error(f"no state directory: pass --state STATE_DIR or set {STATE_ENV}")
    open_state(args.state, read_only=True).close()  # no state, or a damaged one: say so now
    analyst = clean_analyst(args.analyst or os_user()) or "analyst"
    loopback = args.host.strip("[]").lower() in LOOPBACK
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is not None and not TOKEN_FORM.match(token):
        parser.error("--token (or $GROUNDBREAK_REVIEW_TOKEN) must be 16-256 letters, digits or "
                     "'._~-'")
    if args.token_file:
        access: dict[str, str] | None = read_token_file(args.token_file)
    elif token is None and not loopback:
        token = secrets.token_urlsafe(24)
        access = {token: analyst}
    else:
        access = {token: analyst} if token is not None else None
    try:
        server = make_server(args.state, args.host, args.port, analyst, access=access,
                             allowed_hosts=args.allowed_host)
    except OSError as err:
        raise InputError(f"{args.host}:{args.port}", f"cannot listen there ({err.strerror or err})"
                         ) from err
    if not loopback:
        print(f"groundbreak review: warning: listening on {args.host} over plain HTTP: whoever "
              "holds a token can read and decide alerts; share it only on a network you trust",
              file=sys.stderr)
    if args.token_file:
        names = ", ".join(sorted(set(access.values())))  # type: ignore[union-attr]
        print(f"Reviewing {server.app.state_dir} at {server.url}  (tokens of {names} from "
              f"{args.token_file}; Ctrl+C stops)", flush=True)
    else:
        address = f"{server.url}?token={token}" if token is not None else server.url
        print(f"Reviewing {server.app.state_dir} as {analyst!r} at {address}  (Ctrl+C stops)",
              flush=True)
    # Ctrl+C stops the server even when started in the background of a script, where the
    # shell hands it SIGINT ignored (and Python then installs no KeyboardInterrupt handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("groundbreak review: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {port}")
    return port


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
