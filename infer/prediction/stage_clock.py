"""Where a prediction's time goes, and reading ahead of the model on a thread.

:class:`StageClock` sums the seconds of named stages (cloud mask, read, model, blend, write) of
one prediction; stages that run on another thread (the reader of :func:`prefetched`) overlap
the others, so the sum can exceed the wall time. :func:`prefetched` runs a producer on a
background thread a few items ahead of its consumer: GDAL's reads and decoding and torch's
model both release the GIL, so the next batches are read while the model runs on this one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class StageClock:
    """Seconds spent in named stages; safe to add to from several threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` more in ``stage``."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Count the time spent in the ``with`` block in ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """The stages' seconds, rounded."""
        with self._lock:
            return {name: round(value, digits) for name, value in self.seconds.items()}


_DONE = object()


def prefetched(
    produce: Callable[[T], R],
    items: Iterable[T],
    depth: int = 2,
    context: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
) -> Iterator[R]:
    """``produce(item)`` for each item, in order, computed up to ``depth`` items ahead on a thread.

    ``context`` (a factory) is entered on the thread around all its work (a rasterio
    environment, open files). An exception of ``produce`` is raised here at its item; when the
    consumer stops early, the thread stops after the item it is on.
    """
    results: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                results.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with context() if context is not None else contextlib.nullcontext():
                for item in items:
                    if stop.is_set() or not put((produce(item), None)):
                        return
        except BaseException as err:  # handed to the consumer, raised there
            put((None, err))
            return
        put((_DONE, None))

    thread = threading.Thread(target=work, name="groundbreak-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value, error = results.get()
            if error is not None:
                raise error
            if value is _DONE:
                return
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
