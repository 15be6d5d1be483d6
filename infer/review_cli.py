"""``groundbreak review``: triage the nightly alerts in a browser (a local web app).

    groundbreak review --state STATE_DIR [--port 8765] [--host 127.0.0.1] [--analyst NAME]

Serves the queue of open alerts (highest score first, with filters and counts), each with its
before / after / probability crops, history and facts, and writes confirm / dismiss / reopen
decisions (with a note, the time and the analyst's name) to the state, as ``groundbreak alerts``
does. Listens on localhost only unless ``--host`` says otherwise. Stop it with Ctrl+C.
Exit codes: 0 stopped; 2 bad usage, no state there, or the port is taken; 5 the state database is
damaged (see "Backup and recovery" in docs/operator.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from groundbreak.datasets.errors import InputError
from groundbreak.infer.alerts_cli import open_state, os_user
from groundbreak.infer.review_app import LOOPBACK, clean_analyst, make_server

DEFAULT_PORT = 8765


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak review``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak review",
        description="Triage the nightly alerts in a browser: a queue of open alerts with their "
        "pictures; confirm, dismiss or reopen with a note (keys j/k, c, d, r, n).",
    )
    parser.add_argument("--state", required=True, metavar="STATE_DIR",
                        help="the nightly state directory")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--analyst", help="name recorded with decisions (default: the OS user)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Serve the review app until interrupted; return the exit code."""
    args = build_parser().parse_args(list(argv))
    open_state(args.state, read_only=True).close()  # no state, or a damaged one: say so now
    analyst = clean_analyst(args.analyst or os_user()) or "analyst"
    try:
        server = make_server(args.state, args.host, args.port, analyst)
    except OSError as err:
        raise InputError(f"{args.host}:{args.port}", f"cannot listen there ({err.strerror or err})"
                         ) from err
    if args.host.strip("[]").lower() not in LOOPBACK:
        print(f"groundbreak review: warning: listening on {args.host}: anyone who can reach "
              "this machine can read and decide alerts", file=sys.stderr)
    print(f"Reviewing {server.app.state_dir} as {analyst!r} at {server.url}  (Ctrl+C stops)",
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
