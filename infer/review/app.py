"""The review app: a small threaded HTTP server (standard library) over one nightly state.

Routes (nothing else is served; no URL names a file):

- ``GET /`` and ``GET /alerts/<site_id>``: the queue page, with the first or the named alert;
- ``GET /alerts/<site_id>/{before,after,probability}.png``: the alert's crops;
- ``POST /alerts/<site_id>/decision``: confirm, dismiss or reopen, with a note (then 303 to the
  next alert of the view);
- ``GET /export.csv``, ``GET /export.geojson``: the current view;
- ``GET /static/review.css``, ``GET /static/review.js``.

Each request opens the state on its own (read-only to read), so the app and a running night,
``groundbreak alerts`` or another analyst's app share it safely. A decision carries the decision
version its page showed: another analyst's decision in between is a 409 conflict page, never a
silent overwrite. Bad input is a 4xx page, a damaged state a 503 page, anything else a 500 page
with one line; never a traceback. Forms carry a per-server token (no cross-site posts) and the
Host header must name this server, whatever address it listens on (no DNS rebinding). Beyond
loopback every request needs an access token (``?token=`` once, then a cookie, or
``Authorization: Bearer``) and a decision is recorded as the analyst the token belongs to.
The pages are :mod:`.pages`' templates.

Why the standard library and not Flask or Starlette, measured in code lines of this module
(472): the transport code kept by hand is 124 lines, and a framework removes little of it.

================  ====  ===================================  ====================================
maintained here   now   Flask (+ werkzeug) removes / adds    Starlette (+ uvicorn) removes / adds
================  ====  ===================================  ====================================
routing           45    45 / ~25 (views, 404/405 pages)      45 / ~27 (routes, endpoints)
forms, body       24    19 / ~4 (the 32-field cap on query   8 / ~2 (no body cap; forms need
                        strings stays)                       python-multipart)
CSRF token        7     0 (none built in)                    0 (none built in)
headers, cookies  25    25 / ~9 (security headers kept)      25 / ~10 (a middleware)
host check        14    0 (fixed host list only; the         0 (TrustedHostMiddleware: a fixed
                        arrival address is not in WSGI)      list)
server plumbing   9     8 / 0                                9 / ~10 (uvicorn in a thread)
net removed             ~59 (12 %)                           ~38 (8 %)
================  ====  ===================================  ====================================

Neither removes the code that guards the app (CSRF token, Host check, access tokens). Flask
would add four packages (flask, werkzeug, itsdangerous, blinker), Starlette three (starlette,
uvicorn, python-multipart) and async handlers over a synchronous SQLite state.
"""

from __future__ import annotations

import re
import secrets
import socket
import sqlite3
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from groundbreak.datasets.errors import InputError
from groundbreak.infer.nightly.state import (
    DECISIONS,
    AlertConflictError,
    NightlyState,
    StateDamagedError,
)
from groundbreak.infer.review import assets, pages
from groundbreak.infer.review.crops import CROP_KINDS, CropRenderer
from groundbreak.infer.review.pages import QueuePage, alert_url
from groundbreak.infer.review.queue import (
    QueueFilter,
    alert_rows,
    queue,
    site_history,
    status_counts,
    to_csv,
    to_geojson,
)

MAX_BODY = 64 * 1024
MAX_NOTE = 2000
MAX_ANALYST = 80
MAX_FIELDS = 32
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
COOKIE = "groundbreak_review_token"
TOKEN_FORM = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")
"""An access token: 16-256 URL-safe characters (as ``secrets.token_urlsafe`` makes)."""

_ALERT = re.compile(r"^/alerts/(?P<site>[^/]+)(?:/(?P<part>[a-z]+)(?:\.(?P<ext>png))?)?$")


class HttpError(Exception):
    """An answer other than 200: status, title and a message for the page."""

    def __init__(self, status: HTTPStatus, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass
class Response:
    """What the handler sends back."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: HTTPStatus = HTTPStatus.OK
    headers: dict[str, str] = field(default_factory=dict)


class ReviewApp:
    """The review app's logic over one state directory, independent of the transport."""

    def __init__(
        self, state_dir: str | Path, analyst: str, access: Mapping[str, str] | None = None
    ) -> None:
        """``access`` maps access tokens to the analyst each belongs to: when given, every
        request must carry one (``?token=``, then a cookie; or ``Authorization: Bearer``) and
        decisions are recorded as its analyst. Without it, decisions name the analyst the form
        sends (else ``analyst``)."""
        self.state_dir = Path(state_dir).resolve()
        self.analyst = clean_analyst(analyst) or "analyst"
        self.token = secrets.token_urlsafe(24)  # the forms' token: no cross-site posts
        self.access = (
            None if access is None
            else {token: clean_analyst(name) or "analyst" for token, name in access.items()}
        )
        self.crops = CropRenderer(self.state_dir)

    @contextmanager
    def state(self, write: bool = False) -> Iterator[NightlyState]:
        """The state, opened for this request only (read-only unless ``write``)."""
        with NightlyState(self.state_dir, read_only=not write, existing=True) as state:
            yield state

    # -- dispatch -------------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """Answer one request; every failure becomes a page, never an exception."""
        try:
            analyst = self._signed_in(target, headers or {})
            if isinstance(analyst, Response):
                return analyst
            return self._route(method, target, body, analyst)
        except HttpError as err:
            page = pages.message_page(err.title, err.message)
            extra = {"WWW-Authenticate": "Bearer"} if err.status == HTTPStatus.UNAUTHORIZED else {}
            return Response(page.encode(), status=err.status, headers=extra)
        except sqlite3.OperationalError as err:
            if "locked" in str(err) or "busy" in str(err):
                return self._page(HTTPStatus.SERVICE_UNAVAILABLE, "The state is busy",
                                  "Another process holds the state database; try again in a "
                                  "moment.")
            return self._damaged(err)
        except (StateDamagedError, sqlite3.DatabaseError) as err:
            return self._damaged(err)
        except Exception as err:  # the analyst gets one line; the terminal gets the same
            line = " ".join(f"{type(err).__name__}: {err}".split())
            print(f"groundbreak review: error on {method} {target[:200]}: {line}",
                  file=sys.stderr)
            return self._page(HTTPStatus.INTERNAL_SERVER_ERROR, "Something went wrong",
                              f"The page could not be made ({line}).")

    def _signed_in(self, target: str, headers: Mapping[str, str]) -> str | None | Response:
        """The analyst a request's access token belongs to (None when the app has no tokens),
        or, for a valid ``?token=``, the redirect that stores it in a cookie.

        Raises:
            HttpError: 401 when the app has tokens and the request carries none that is valid.
        """
        if self.access is None:
            return None
        parts = urlsplit(target)
        fields = parse_form(parts.query)
        query = [(k, v) for k, v in fields if k != "token"]
        given = [v for k, v in fields if k == "token"]
        if given:
            analyst = self._analyst_of(given[-1])
            if analyst is None:
                raise _needs_token("This access token is not valid here.")
            path = parts.path if _SAFE_PATH.match(parts.path) else "/"
            location = path + (f"?{urlencode(query)}" if query else "")
            cookie = f"{COOKIE}={given[-1]}; Path=/; HttpOnly; SameSite=Strict"
            return Response(b"", status=HTTPStatus.SEE_OTHER,
                            headers={"Location": location, "Set-Cookie": cookie})
        bearer = headers.get("Authorization", "")
        if bearer[:7].lower() == "bearer ":
            analyst = self._analyst_of(bearer[7:].strip())
        else:
            analyst = self._analyst_of(_cookie(headers.get("Cookie", "")))
        if analyst is None:
            raise _needs_token("This review app is open beyond its machine and needs an access "
                               "token: open the address with ?token=... that it printed when it "
                               "started, or ask whoever runs it for yours.")
        return analyst

    def _analyst_of(self, token: str | None) -> str | None:
        """The analyst of an access token (compared in constant time), or None."""
        if not token or self.access is None:
            return None
        given = token.encode("utf-8", "replace")
        found = None
        for known, analyst in self.access.items():
            if secrets.compare_digest(given, known.encode("utf-8")):
                found = analyst
        return found

    def _route(self, method: str, target: str, body: bytes, analyst: str | None) -> Response:
        parts = urlsplit(target)
        path, query = parts.path, _query(parts.query)
        if method not in ("GET", "HEAD", "POST"):
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "Not allowed",
                            f"{method} is not used here.")
        if method == "POST":
            match = _ALERT.match(path)
            if not match or match["part"] != "decision" or match["ext"]:
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "Not allowed",
                                "Only decisions are posted, to /alerts/<site>/decision.")
            return self.decide(unquote(match["site"]), body, analyst)
        if path == "/":
            return self.queue_page(query, None, analyst)
        if path == "/static/review.css":
            return Response(assets.CSS.encode(), "text/css; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})
        if path == "/static/review.js":
            return Response(assets.JS.encode(), "text/javascript; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})
        if path == "/favicon.ico":
            return Response(b"", "image/x-icon", HTTPStatus.NO_CONTENT)
        if path in ("/export.csv", "/export.geojson"):
            return self.export(query, path.rsplit(".", 1)[1])
        match = _ALERT.match(path)
        if match and match["part"] is None:
            return self.queue_page(query, unquote(match["site"]), analyst)
        if match and match["part"] in CROP_KINDS and match["ext"] == "png":
            return self.crop(unquote(match["site"]), match["part"])
        raise HttpError(HTTPStatus.NOT_FOUND, "Not found",
                        f"There is no page {path[:200]!r} here: only the queue, its alerts "
                        "and their exports.")

    # -- pages ----------------------------------------------------------------------------------

    def queue_page(
        self, query: Mapping[str, list[str]], site_id: str | None, analyst: str | None = None
    ) -> Response:
        """The queue of a view, with one alert (the named one, or the first); ``analyst`` is
        the signed-in analyst (None: the name is the browser's to choose)."""
        view = _view(query)
        with self.state() as state:
            everything = alert_rows(state)
            rows = [r for r in everything if view.matches(r)]
            if site_id is None:
                selected = rows[0] if rows else None
            else:
                selected = next((r for r in everything if r["site_id"] == site_id), None)
                if selected is None:
                    raise _unknown(site_id)
            extra: dict[str, Any] = {}
            if selected is not None:
                crops = self.crops.crops(state, selected)
                extra = {
                    "version": state.decision_version(selected["site_id"]),
                    "history": site_history(state, selected["site_id"]),
                    "events": state.alert_events(selected["site_id"]),
                    "crops_problem": crops if isinstance(crops, str) else None,
                }
        saved = (query.get("saved") or [""])[-1]
        flash = None
        if saved:
            done = next((r for r in everything if r["site_id"] == saved), None)
            flash = f"Saved: {saved} is now {done['status']}." if done else None
        page = QueuePage(self.state_dir.name, analyst or self.analyst, self.token, view, rows,
                         status_counts(everything), selected, flash=flash,
                         analyst_fixed=analyst is not None, **extra)
        return Response(pages.queue_page(page).encode())

    def crop(self, site_id: str, kind: str) -> Response:
        """One crop of an alert, as PNG."""
        with self.state() as state:
            alert = next((r for r in alert_rows(state) if r["site_id"] == site_id), None)
            if alert is None:
                raise _unknown(site_id)
            crops = self.crops.crops(state, alert)
        if isinstance(crops, str):
            raise HttpError(HTTPStatus.NOT_FOUND, "No imagery", crops)
        return Response(crops[kind], "image/png", headers={"Cache-Control": "no-cache"})

    def export(self, query: Mapping[str, list[str]], kind: str) -> Response:
        """The view as CSV or GeoJSON, to download."""
        view = _view(query)
        with self.state() as state:
            rows = queue(state, view)
        if kind == "csv":
            body, content_type = to_csv(rows), "text/csv; charset=utf-8"
        else:
            body, content_type = to_geojson(rows), "application/geo+json"
        name = f"alerts-{self.state_dir.name}-{view.status}.{kind}"
        disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
        return Response(body.encode(), content_type, headers={"Content-Disposition": disposition})

    def decide(self, site_id: str, body: bytes, analyst: str | None = None) -> Response:
        """Write a decision as ``analyst`` (the signed-in one; None: the form's analyst, else
        the app's); a conflict or bad form is a page saying so."""
        form = _query(body.decode("utf-8", "replace"))

        def value(name: str) -> str:
            return (form.get(name) or [""])[-1]

        sent = value("token").encode("utf-8", "replace")
        if not secrets.compare_digest(sent, self.token.encode("utf-8")):
            raise HttpError(HTTPStatus.FORBIDDEN, "Form expired",
                            "This form is not from this review session (the app was restarted, "
                            "or the page came from elsewhere). Reload the queue and decide "
                            "again.")
        action = value("action")
        if action not in DECISIONS:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Bad decision",
                            f"The decision must be one of {', '.join(DECISIONS)}, not "
                            f"{action[:40]!r}.")
        try:
            version = int(value("version"))
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Bad form",
                            "The form lacks the alert's version; reload the page.") from None
        note = value("note").strip()
        if len(note) > MAX_NOTE:
            raise HttpError(HTTPStatus.BAD_REQUEST, "Note too long",
                            f"A note has at most {MAX_NOTE} characters.")
        view = _view(_query(value("view")))
        if analyst is None:
            analyst = clean_analyst(value("analyst")) or self.analyst
        with self.state(write=True) as state:
            if state.alert(site_id) is None:
                raise _unknown(site_id)
            try:
                state.decide(site_id, action, note or None, analyst, expected_version=version)
            except AlertConflictError as err:
                page = pages.conflict_page(site_id, str(err), note, view)
                return Response(page.encode(), status=HTTPStatus.CONFLICT)
            following = value("next")
            if not following or state.alert(following) is None:
                following = site_id
        location = alert_url(following, view)
        location += ("&" if "?" in location else "?") + f"saved={quote(site_id, safe='')}"
        return Response(b"", status=HTTPStatus.SEE_OTHER, headers={"Location": location})

    def _damaged(self, err: BaseException) -> Response:
        return self._page(
            HTTPStatus.SERVICE_UNAVAILABLE, "The nightly state cannot be read",
            f"{' '.join(str(err).split())}. See 'Backup and recovery' in docs/operator.md.",
        )

    @staticmethod
    def _page(status: HTTPStatus, title: str, message: str) -> Response:
        return Response(pages.message_page(title, message).encode(), status=status)


def clean_analyst(name: str | None) -> str:
    """An analyst's name as stored: printable, one line, at most :data:`MAX_ANALYST` characters."""
    text = "".join(c for c in (name or "") if unicodedata.category(c)[0] != "C")
    return " ".join(text.split())[:MAX_ANALYST]


def parse_form(text: str) -> list[tuple[str, str]]:
    """The fields of a query string or form body.

    Raises:
        HttpError: 400 for more than :data:`MAX_FIELDS` fields.
    """
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "Bad request",
                        f"A form or address has at most {MAX_FIELDS} fields.") from None


def _query(text: str) -> dict[str, list[str]]:
    """:func:`parse_form` as ``{name: [values]}``, blank values left out (as ``parse_qs``)."""
    fields: dict[str, list[str]] = {}
    for name, value in parse_form(text):
        if value:
            fields.setdefault(name, []).append(value)
    return fields


_SAFE_PATH = re.compile(r"^/(?:alerts/[^/\\\x00-\x20\x7f-\xff]+)?$")
"""Paths a token link may land on (never ``//host`` or ``/\\host``: no open redirect)."""


def _cookie(header: str) -> str | None:
    """The access token in a ``Cookie`` header, or None."""
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def _needs_token(message: str) -> HttpError:
    return HttpError(HTTPStatus.UNAUTHORIZED, "Access token needed", message)


def machine_names() -> set[str]:
    """This machine's host names (short and fully qualified), lower case."""
    names = set()
    for lookup in (socket.gethostname, socket.getfqdn):
        try:
            names.add(lookup().lower())
        except OSError:
            continue
    return {name for name in names if name}


def _view(query: Mapping[str, list[str]]) -> QueueFilter:
    try:
        return QueueFilter.from_query(query)
    except InputError as err:
        raise HttpError(HTTPStatus.BAD_REQUEST, "Bad filter", f"Filter {err}.") from err


def _unknown(site_id: str) -> HttpError:
    return HttpError(HTTPStatus.NOT_FOUND, "Unknown alert",
                     f"There is no alert for site {site_id[:120]!r} in this state.")


class ReviewHandler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :meth:`ReviewApp.handle` calls."""

    server: ReviewServer
    server_version = "groundbreak-review"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._answer("PATCH")

    def _answer(self, method: str) -> None:
        app = self.server.app
        body = b""
        if not self._host_allowed():
            response = Response(pages.message_page(
                "Wrong host", "This review app answers only to the address it was started on.",
                None).encode(), status=HTTPStatus.MISDIRECTED_REQUEST)
        else:
            if method in ("POST", "PUT", "PATCH"):
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self._send(Response(pages.message_page(
                        "Bad request", "The form is missing or too large.").encode(),
                        status=HTTPStatus.BAD_REQUEST), method)
                    return
                body = self.rfile.read(length)
            response = app.handle(method, self.path, body, self.headers)
        self._send(response, method)

    def _send(self, response: Response, method: str) -> None:
        self.send_response(response.status)
        headers = {
            "Content-Type": response.content_type,
            "Content-Length": str(len(response.body)),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; img-src 'self'; "
                                       "form-action 'self'; frame-ancestors 'none'",
            "Cache-Control": "no-store",
            **response.headers,
        }
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def _host_allowed(self) -> bool:
        """True when the Host header names this server: a configured name, or the address the
        request arrived at (a DNS-rebinding page sends its own domain name, never that)."""
        host = (self.headers.get("Host") or "").strip().lower()
        name = (host.rsplit(":", 1)[0] if not host.endswith("]") else host).strip("[]")
        if name in self.server.allowed_hosts:
            return True
        try:
            arrived = str(self.connection.getsockname()[0]).lower()
        except OSError:
            return False
        return bool(name) and name == arrived.removeprefix("::ffff:")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.quiet:
            return
        sys.stderr.write(f"groundbreak review: {self.address_string()} {format % args}\n")


class ReviewServer(ThreadingHTTPServer):
    """The review app's HTTP server (one thread per request)."""

    daemon_threads = True

    def __init__(
        self,
        app: ReviewApp,
        host: str,
        port: int,
        quiet: bool = False,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        """Bind ``host:port``. Requests must name the server in their Host header: by a loopback
        name, ``allowed_hosts``, the address they arrived at, and, beyond loopback, the bound
        address or this machine's names.

        Raises:
            ValueError: When listening beyond loopback without access tokens.
        """
        bound = host.strip("[]").lower()
        if bound not in LOOPBACK and app.access is None:
            raise ValueError(f"listening on {host} (beyond this machine) needs access tokens")
        self.app, self.quiet = app, quiet
        self.address_family = _family(host)
        super().__init__((host, port), ReviewHandler)
        names = {*LOOPBACK, *(h.strip().strip("[]").lower() for h in allowed_hosts)}
        if bound not in LOOPBACK:
            names |= machine_names() | ({bound} - set(WILDCARDS))
        self.allowed_hosts: set[str] = names - {""}

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://[{shown}]:{port}/" if ":" in str(shown) else f"http://{shown}:{port}/"


def make_server(
    state_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    analyst: str = "analyst",
    quiet: bool = False,
    access: Mapping[str, str] | None = None,
    allowed_hosts: Iterable[str] = (),
) -> ReviewServer:
    """A review server over a state directory, bound and ready to ``serve_forever()``
    (``access``: tokens to analysts, required beyond loopback; see :class:`ReviewApp`)."""
    return ReviewServer(ReviewApp(state_dir, analyst, access), host, port, quiet, allowed_hosts)


def _family(host: str) -> Any:
    import socket

    return socket.AF_INET6 if ":" in host else socket.AF_INET
