"""Remote band reads have HTTP limits: a server that accepts and never answers fails the scene
with one InputError naming the URL, within seconds (limits set through the environment)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.windows import Window

from groundbreak.datasets import scene as scene_module
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scene import open_scene

BOUND_S = 30.0


@pytest.fixture(autouse=True)
def short_http_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """groundbreak's own limits, shortened (GDAL's defaults wait for ever), and no override
    from the environment."""
    for key in scene_module.REMOTE_READ_OPTIONS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setitem(scene_module.REMOTE_READ_OPTIONS, "GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setitem(scene_module.REMOTE_READ_OPTIONS, "GDAL_HTTP_CONNECTTIMEOUT", "1")
    monkeypatch.setitem(scene_module.REMOTE_READ_OPTIONS, "GDAL_HTTP_MAX_RETRY", "0")


def test_the_environment_overrides_each_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "7")
    options = scene_module.remote_read_options()
    assert options["GDAL_HTTP_TIMEOUT"] == "7" and options["GDAL_HTTP_MAX_RETRY"] == "0"
    assert {"GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_MAX_RETRY",
            "GDAL_HTTP_RETRY_DELAY"} <= set(options)


def bounded(call: Callable[[], object], release: Callable[[], None]) -> tuple[BaseException, float]:
    """Run ``call`` in a thread for at most :data:`BOUND_S` seconds; what it raised and how
    long it took. A call still hanging then is released (``release``) and the test fails."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as err:  # noqa: BLE001 (handed to the test)
            outcome.append(err)

    start = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(BOUND_S)
    took = time.monotonic() - start
    if worker.is_alive():
        release()
        worker.join(BOUND_S)
        pytest.fail(f"the remote read still hung after {BOUND_S:.0f} s")
    assert outcome, "the read of a server that never answers succeeded"
    return outcome[0], took


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A TCP server on 127.0.0.1 that accepts connections (the kernel does) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server
    server.close()


def test_a_band_on_a_server_that_never_answers_fails_the_scene(
    silent_server: socket.socket, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{silent_server.getsockname()[1]}/T_B02.tif"
    manifest = tmp_path / "scene.json"
    manifest.write_text(json.dumps({"bands": {"B02": url}}))
    error, took = bounded(lambda: open_scene(manifest), silent_server.close)
    assert isinstance(error, InputError), repr(error)
    assert str(error).startswith(url) and "GDAL_HTTP_TIMEOUT=1" in str(error)
    assert took < BOUND_S


class _Stalling(BaseHTTPRequestHandler):
    """Serves one file (``/T_B02.tif``, with range requests) until ``stall`` is set, then
    never answers."""

    protocol_version = "HTTP/1.1"
    data: bytes = b""
    stall = threading.Event()
    release = threading.Event()

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        if self.stall.is_set():
            self.release.wait(BOUND_S * 2)
            return
        if self.path != "/T_B02.tif":
            self.send_error(404)
            return
        start, stop = 0, len(self.data)
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start, stop = int(first), min(int(last or len(self.data) - 1) + 1, len(self.data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(self.data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(self.data[start:stop])

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_stops_answering_during_the_read_fails_the_read(
    tmp_path: Path, make_raster
) -> None:
    values = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
    band = make_raster(tmp_path / "T_B02.tif", values, Affine(10, 0, 0, 0, -10, 5120),
                       "EPSG:32636")
    handler = type("Handler", (_Stalling,), {"data": band.read_bytes(),
                                             "stall": threading.Event(),
                                             "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/T_B02.tif"
        manifest = tmp_path / "scene.json"
        manifest.write_text(json.dumps({"bands": {"B02": url}}))
        scene = open_scene(manifest)  # the header is served
        handler.stall.set()
        corner = scene.grid.subgrid(Window(0, 0, 16, 16))
        error, _ = bounded(lambda: scene.read(grid=corner), handler.release.set)
        assert isinstance(error, InputError), repr(error)
        assert str(error).startswith(f"{url}: cannot read band 1")
        assert "GDAL_HTTP_TIMEOUT=1" in str(error)
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
