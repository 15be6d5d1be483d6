"""A night's pairs on Dask distributed workers: they predict and score, this process records.

``cluster: local:N`` starts a Dask ``LocalCluster`` of N worker processes on 127.0.0.1;
``cluster: tcp://host:8786`` joins a running scheduler (``dask scheduler`` / ``dask worker``,
or any Dask deployment). Dask distributed was chosen over Ray: a pure-Python pip install,
one-machine and many-machine clusters with the same code, and a task whose worker dies is run
again on another worker by the scheduler itself.

Who does what:

- **A worker** runs :func:`compute_pair`, which is pure computation: it loads the model bundle
  and the watch-list from their paths (once per process, checked against the driver's hashes:
  workers must see the same files), predicts the pair into a private temporary folder, scores
  it, and returns the scores with the bytes of ``probability.tif`` and ``mask.tif``. It writes
  nothing that the night keeps.
- **The driver** (the ``groundbreak nightly`` process) is the only writer of the state and of the
  run folder. It collects results as they complete, writes each pair's rasters into its hidden
  staging folder, then publishes and records pairs in the night's pair order, exactly as one
  process does (:class:`~.pair_scorer.PairScorer`), so discovered sites are numbered the same and a
  cloudy acquisition re-pairs the rest as it would in one process (pairs whose pairing changes
  are cancelled and the new pairs submitted).

A worker lost mid-pair loses nothing: the scheduler runs its pair again on another worker, up to
:data:`ALLOWED_FAILURES` times before the pair is recorded as failed with that reason (a pair that
kills every worker it runs on, e.g. out of memory). Pairs already recorded stay recorded; a night
whose driver is killed is resumed by running it again, as always.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.atomic import TEMP_MARK
from groundbreak.infer.nightly.cluster_spec import ClusterSpec
from groundbreak.infer.prediction.raster_io import MASK_FILE, PROBABILITY_FILE
from groundbreak.infer.report.stored_crops import DISPLAY_CROPS_FILE
from groundbreak.infer.sites.ranking import PairOutcome, PairScores, describe_error, stops_the_run

if TYPE_CHECKING:
    from groundbreak.infer.nightly.pair_scorer import PairScorer
    from groundbreak.infer.nightly.records import PairRecord

ALLOWED_FAILURES = 3
"""A pair is run again after its worker died this many times, then recorded as failed
(``distributed.scheduler.allowed-failures``; set on the scheduler of a ``tcp://`` cluster)."""

WORKER_WAIT_S = 60.0
"""How long the driver waits for a first worker to join a running scheduler."""

CONNECT_TIMEOUT_S = 20.0
"""How long the driver tries to reach a running scheduler."""

PAIR_FILES = (PROBABILITY_FILE, MASK_FILE)


# -- the worker's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class PairJob:
    """Everything a worker needs to predict and score one pair (paths, not loaded objects)."""

    spec: PairSpec
    model: str
    model_hash: str
    predictor: dict[str, Any]
    sites: str | None
    sites_hash: str | None
    min_area_m2: float
    area_scale: float
    torch_threads: dict[str, int] = field(default_factory=dict)
    """Torch threads per pair on each worker host, so a host's workers share its cores."""


@dataclass
class PairComputed:
    """A worker's result: the pair's outcome and scores, and the bytes of its rasters (and of
    its stored crops, when it stored them) by file name."""

    outcome: PairOutcome
    scores: PairScores | None
    files: dict[str, bytes]
    worker: str


_LOADED: dict[tuple[Any, ...], Any] = {}
_LOAD_LOCK = threading.Lock()


def compute_pair(job: PairJob) -> PairComputed:
    """Predict and score one pair on a worker; its rasters come back as bytes.

    Raises:
        OSError: When the disk or quota is full (it stops the night, as in one process).
    """
    started = time.perf_counter()
    worker = _worker_address()
    _limit_torch_threads(job.torch_threads, worker)
    try:
        predictor, sites = _worker_model(job), _worker_sites(job)
    except InputError as err:  # a worker that cannot see the driver's files: the pair fails
        reason = f"pair {job.spec.pair_id}: on Dask worker {worker}: {err}"
        outcome = PairOutcome(job.spec.pair_id, False, time.perf_counter() - started, reason)
        return PairComputed(outcome, None, {}, worker)
    from groundbreak.infer.sites.ranking import process_pair

    with tempfile.TemporaryDirectory(prefix="groundbreak-pair-") as tmp:
        out = Path(tmp) / "pair"
        outcome, scores = process_pair(job.spec, out, predictor, sites,
                                       min_area_m2=job.min_area_m2, area_scale=job.area_scale)
        files = {}
        if scores is not None:
            files = {name: (out / name).read_bytes() for name in PAIR_FILES}
            if (out / DISPLAY_CROPS_FILE).is_file():  # its cards' crops, cut from decoded rows
                files[DISPLAY_CROPS_FILE] = (out / DISPLAY_CROPS_FILE).read_bytes()
    outcome = replace(outcome, probability_path=None, mask_path=None)
    return PairComputed(outcome, scores, files, worker)


def _worker_address() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # called outside a worker (tests, a debugger)
        return f"pid {os.getpid()}"


def _limit_torch_threads(threads_by_host: dict[str, int], worker: str) -> None:
    """Share the host's cores among its workers' pairs (Dask's nanny sets OMP threads to 1)."""
    import torch
    from distributed.comm import get_address_host

    try:
        host = get_address_host(worker)
    except ValueError:
        host = ""
    threads = threads_by_host.get(host) or usable_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _worker_model(job: PairJob) -> Any:
    """The job's tiled predictor, loaded once per worker process, from the driver's bundle."""
    from groundbreak.infer.nightly.hashing import ContentHasher
    from groundbreak.infer.prediction.predictor import TiledPredictor
    from groundbreak.train.bundle import load_bundle

    key = ("model", job.model, job.model_hash, repr(sorted(job.predictor.items())))
    with _LOAD_LOCK:
        if key not in _LOADED:
            if ContentHasher(None).bundle_hash(job.model) != job.model_hash:
                raise InputError(job.model, "model bundle differs from the one the night "
                                 "started with (workers must see the same files)")
            _forget_loaded("model")  # a long-lived worker keeps one night's model
            _LOADED[key] = TiledPredictor(load_bundle(job.model, build=False), **job.predictor)
        return _LOADED[key]


def _worker_sites(job: PairJob) -> Any:
    """The job's watch-list (None: discovered regions), read once per worker process."""
    from groundbreak.infer.nightly.hashing import ContentHasher
    from groundbreak.infer.sites.sites import load_watch_list

    if job.sites is None:
        return None
    key = ("sites", job.sites, job.sites_hash)
    with _LOAD_LOCK:
        if key not in _LOADED:
            if ContentHasher(None).file_sha256(job.sites) != job.sites_hash:
                raise InputError(job.sites, "watch-list differs from the one the night "
                                 "started with (workers must see the same files)")
            _forget_loaded("sites")
            _LOADED[key] = load_watch_list(job.sites)
        return _LOADED[key]


def _forget_loaded(kind: str) -> None:
    for key in [k for k in _LOADED if k[0] == kind]:
        del _LOADED[key]


# -- the driver's side ------------------------------------------------------------------------


@dataclass
class _Slot:
    """One pair of the night on its way: examined, submitted, arrived, then recorded."""

    started: float
    inputs_hash: str | None = None
    error: str | None = None
    examine_s: float = 0.0
    future: Any = None
    computed: PairComputed | None = None
    staging: Path | None = None


class PairCluster:
    """A Dask client (and its LocalCluster for ``local:N``) that scores a night's pairs."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.client: Any = None
        self.local: Any = None
        self.torch_threads: dict[str, int] = {}
        self._count = 0

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return str(self.client.scheduler.address)

    @property
    def workers(self) -> int:
        """How many workers the scheduler has now."""
        return len(self.client.nthreads())

    def start(self) -> PairCluster:
        """Start the LocalCluster or reach the scheduler; an InputError when that fails."""
        import dask
        from distributed import Client, LocalCluster

        try:
            if self.spec.workers is not None:
                with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
                    self.local = LocalCluster(
                        n_workers=self.spec.workers, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                    )
                self.client = Client(self.local)
            else:
                self.client = Client(self.spec.address, timeout=CONNECT_TIMEOUT_S)
                self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (OSError, TimeoutError) as err:
            what = (f"no worker joined the Dask scheduler within {WORKER_WAIT_S:.0f} s"
                    if self.client is not None
                    else f"cannot start or reach the Dask cluster ({err})")
            self.close()
            raise InputError("cluster", f"{self.spec.text}: {what}") from err
        self.torch_threads = self._threads_by_host()
        return self

    def _threads_by_host(self) -> dict[str, int]:
        """Torch threads per pair on each host: its cores over its workers' Dask threads."""
        from distributed.comm import get_address_host

        cores = self.client.run(usable_cores)
        hosts: dict[str, tuple[int, int]] = {}  # host -> (cores, pairs at once)
        for address, nthreads in self.client.nthreads().items():
            host = get_address_host(address)
            host_cores, slots = hosts.get(host, (cores.get(address, 1), 0))
            hosts[host] = (min(host_cores, cores.get(address, 1)), slots + int(nthreads))
        return {host: max(1, c // n) for host, (c, n) in hosts.items()}

    def close(self) -> None:
        """Close the client and, for ``local:N``, stop its workers."""
        if self.client is not None:
            self.client.close()
        if self.local is not None:
            self.local.close()
        self.client = self.local = None

    def __enter__(self) -> PairCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, scorer: PairScorer, spec: PairSpec) -> Any:
        """Send one pair to the workers; the future's key names the night and the pair."""
        self._count += 1
        job = PairJob(
            spec=spec, model=str(scorer.bundle.path), model_hash=scorer.model_hash,
            predictor=dict(scorer.config.predictor),
            sites=None if scorer.config.sites is None else str(scorer.config.sites),
            sites_hash=scorer.sites_hash, min_area_m2=scorer.config.min_area_m2,
            area_scale=scorer.config.area_scale, torch_threads=self.torch_threads,
        )
        key = f"nightly-{scorer.config.run_id}-{spec.pair_id}-{self._count}-{uuid.uuid4().hex[:6]}"
        return self.client.submit(compute_pair, job, key=key, pure=False, retries=0)

    def score(
        self,
        scorer: PairScorer,
        pairs: Sequence[PairSpec],
        note: Callable[[PairRecord], None],
        repair: Callable[[set[str]], list[PairSpec]] | None = None,
    ) -> None:
        """Score the pairs on the workers; record each, in order, with ``scorer`` and ``note``.

        ``repair`` (given the after-scenes recorded so far) re-pairs the rest of the night once
        a pair turns out too cloudy, as the one-process loop does.
        """
        from distributed import as_completed

        order = list(pairs)
        slots: dict[PairSpec, _Slot] = {}
        by_key: dict[str, PairSpec] = {}
        arrivals = as_completed()
        afters: set[str] = set()

        def plan(spec: PairSpec) -> None:
            if spec in slots:
                return
            slot = _Slot(started=time.perf_counter())
            try:
                slot.inputs_hash = scorer.examine(spec)
            except Exception as err:  # any error of one pair's inputs fails that pair only
                if stops_the_run(err):
                    raise
                slot.error = f"pair {spec.pair_id}: {describe_error(err)}"
            if slot.inputs_hash is not None and scorer.done_row(spec, slot.inputs_hash) is None:
                slot.future = self.submit(scorer, spec)
                by_key[slot.future.key] = spec
                arrivals.add(slot.future)
            slot.examine_s = time.perf_counter() - slot.started
            slots[spec] = slot

        def forget(spec: PairSpec) -> None:
            slot = slots.pop(spec)
            if slot.future is not None:
                by_key.pop(slot.future.key, None)
                if not slot.future.done():
                    slot.future.cancel()
            if slot.staging is not None:
                shutil.rmtree(slot.staging, ignore_errors=True)

        def record_ready() -> None:
            nonlocal order
            while order:
                spec = order[0]
                plan(spec)
                slot = slots[spec]
                record = self._settle(scorer, spec, slot)
                if record is None:
                    if slot.future is None:  # done before, its outputs gone since: score it
                        slot.future = self.submit(scorer, spec)
                        by_key[slot.future.key] = spec
                        arrivals.add(slot.future)
                    return  # wait for this pair's result
                order.pop(0)
                forget(spec)  # its staging folder is published or no longer needed
                note(record)
                afters.add(str(spec.after))
                if record.status == "skipped" and repair is not None:
                    order = repair(afters)
                    for stale in [s for s in slots if s not in order]:
                        forget(stale)
                    for again in order:
                        plan(again)

        try:
            for spec in order:
                plan(spec)
            record_ready()
            for future in arrivals:
                spec = by_key.pop(future.key, None)
                if spec is None:  # cancelled: its pairing changed
                    continue
                slot = slots[spec]
                slot.computed = self._collect(future, spec)
                future.release()
                slot.staging = self._stage(scorer, spec, slot.computed)
                record_ready()
            if order:
                raise RuntimeError(f"night ended with {len(order)} pair(s) not recorded")
        finally:
            for spec in list(slots):
                forget(spec)

    def _settle(self, scorer: PairScorer, spec: PairSpec, slot: _Slot) -> PairRecord | None:
        """Record the pair at the head of the night if it can be; None while it computes."""
        # the pair's own time: examined here, computed on its worker, recorded here
        worker_s = 0.0 if slot.computed is None else slot.computed.outcome.seconds
        started = time.perf_counter() - slot.examine_s - worker_s
        if slot.error is not None:
            return scorer.fail(spec.pair_id, None, slot.error, started)
        assert slot.inputs_hash is not None
        reused = scorer.reuse(spec, slot.inputs_hash, started)
        if reused is not None:  # also a pair done meanwhile by its twin earlier this night
            return reused
        if slot.computed is None:
            return None
        # a failed pair has no staging folder (and finish does not look for one)
        staging = slot.staging if slot.staging is not None else scorer.final_dir(spec)
        return scorer.finish(spec, slot.inputs_hash, slot.computed.outcome,
                             slot.computed.scores, staging, started)

    @staticmethod
    def _collect(future: Any, spec: PairSpec) -> PairComputed:
        """A finished future's result; a pair whose workers kept dying is a failed outcome."""
        from distributed import KilledWorker

        try:
            return future.result()
        except KilledWorker:
            reason = (f"pair {spec.pair_id}: the Dask worker running it died "
                      f"{ALLOWED_FAILURES} times (out of memory or killed; see the workers' "
                      "logs)")
            return PairComputed(PairOutcome(spec.pair_id, False, 0.0, reason), None, {}, "")

    @staticmethod
    def _stage(scorer: PairScorer, spec: PairSpec, computed: PairComputed) -> Path | None:
        """Write a computed pair's rasters into a hidden staging folder of this driver."""
        if computed.scores is None:
            return None
        final = scorer.final_dir(spec)
        staging = final.parent / f".{final.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        for name, data in computed.files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        computed.files = {}
        return staging
