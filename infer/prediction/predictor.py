"""Tiled prediction of one tile pair: change probability and mask rasters of any size.

:class:`TiledPredictor` slides overlapping windows over the pair grid (:mod:`.tiling`), runs the
model on batches of them (:mod:`.inference`), blends the overlaps with smooth weights
(:mod:`.blending`) and writes ``probability.tif`` and ``mask.tif`` on the pair grid
(:mod:`.blended_writing`, :mod:`.raster_io`). Memory stays bounded whatever the scene size: each
batch of windows is read as one block, only the output rows that windows in flight touch are
kept, and finished rows are written as they complete. With OpenVINO and its graphs kept from an
earlier run, the predictor never imports torch (:attr:`TiledPredictor.model` is made on first
use).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from groundbreak.datasets.clouds import (
    CLOUD_MASK_MODES,
    CloudMask,
    CloudMaskMode,
    coarse_factor,
    scene_cloud_mask,
)
from groundbreak.datasets.date_matching import check_date_matching, match_pair
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.radiometry import RadiometryWarning, unknown_radiometry_warning
from groundbreak.datasets.scene import (
    Scene,
    bands_kept,
    files_kept_open,
    strip_block_cache_bytes,
)
from groundbreak.infer.prediction.blended_writing import BatchPrediction, write_blended
from groundbreak.infer.prediction.blending import BLEND_MODES, BlendMode
from groundbreak.infer.prediction.compiled_model import CompiledChangeModel, CompileError
from groundbreak.infer.prediction.cuda_pages import drop_cuda_code_pages
from groundbreak.infer.prediction.inference import (
    ChangeModel,
    Precision,
    Runtime,
    autocast_dtype,
    check_runtime,
    compiled_probabilities,
    forward_batch_for,
    predict_probabilities,
    use_channels_last,
)
from groundbreak.infer.prediction.raster_io import (
    GDAL_CACHE_BYTES,
    bounded_gdal_cache,
)
from groundbreak.infer.prediction.stage_clock import StageClock, prefetched
from groundbreak.infer.prediction.tiling import (
    BatchInput,
    PairInput,
    WindowBatch,
    WindowLayout,
    read_batch,
    round_down,
    round_up,
)
from groundbreak.train.devices import resolve_device_name

if TYPE_CHECKING:
    import torch

    from groundbreak.train.bundle import ModelBundle

DEFAULT_WINDOW = 256
PREFETCH_BATCHES = 2
"""Batches read ahead of the model on a background thread (0 reads them in turn)."""
BATCH_PIXELS = 4 * 256**2
"""Window pixels a batch holds by default (``batch_size`` None): 4 windows of 256², 1 of 512².
Measured on the 4096² COG night (bench/README.md): the U-Net's peak RSS is the same with 4 or 8
windows of 256² a batch (1549 MB), the ensemble's 71 MB lower with 1 window of 512² than with 2."""
CLOUD_MASK_CACHE = 8
"""Cloud masks a predictor keeps (a night scores an acquisition as the after-date of one pair
and the before-date of the next: its mask is computed once)."""
STRIP_READ_GDAL_CACHE_BYTES = 32 * 2**20
"""GDAL's block cache while windows are read: the strips of :func:`files_kept_open` hold the
decoded rows themselves, so a larger cache would only hold them twice (more only for a
pixel-interleaved file, see :func:`strip_block_cache_bytes`)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionResult:
    """What :meth:`TiledPredictor.predict_pair` wrote.

    Attributes:
        probability_path: ``probability.tif``: float32 change probability, NaN = nodata.
        mask_path: ``mask.tif``: uint8, 1 = change (probability >= threshold), 0 = no change,
            255 = nodata.
        grid: The pair grid both rasters lie on.
        threshold: The threshold the mask was cut at.
        valid_fraction: Fraction of the grid with a valid prediction (valid input on both dates,
            seen by both: not hidden by a cloud or its shadow).
        seconds: Wall time of the prediction, reading and writing included.
        unobserved_fraction: Fraction of the grid hidden by a cloud or shadow on either date.
        cloud_masks: The cloud-mask method used for the before and the after date.
        cloud_fractions: Fraction of the grid hidden by clouds or shadows on each date.
        stages: Seconds spent in each stage (see :class:`~groundbreak.infer.prediction.stage_clock.
            StageClock`): ``cloud mask``, ``date matching`` (when the bundle matches dates),
            ``read`` (on the prefetch thread, beside the model),
            ``wait`` (the model waiting for a read), ``model``, ``export`` (an ONNX or
            OpenVINO runtime converting the model), ``blend``, ``write``.
        windows: Windows the model ran (those wholly unobserved are skipped).
    """

    probability_path: Path
    mask_path: Path
    grid: Grid
    threshold: float
    valid_fraction: float
    seconds: float
    unobserved_fraction: float = 0.0
    cloud_masks: tuple[str, str] = ("none", "none")
    cloud_fractions: tuple[float, float] = (0.0, 0.0)
    stages: dict[str, float] = field(default_factory=dict)
    windows: int = 0

    @classmethod
    def written(
        cls,
        source: PairInput,
        paths: tuple[Path, Path, float],
        threshold: float,
        started: float,
        stages: dict[str, float] | None = None,
        windows: int = 0,
    ) -> PredictionResult:
        """The result of a prediction of ``source`` that wrote ``paths`` (probability, mask,
        valid fraction, as :func:`write_blended` returns them), begun at ``started``
        (``time.perf_counter()``)."""
        probability_path, mask_path, valid_fraction = paths
        return cls(
            probability_path=probability_path,
            mask_path=mask_path,
            grid=source.pair.grid,
            threshold=threshold,
            valid_fraction=valid_fraction,
            seconds=time.perf_counter() - started,
            unobserved_fraction=source.unobserved_fraction,
            cloud_masks=source.cloud_masks,
            cloud_fractions=source.cloud_fractions,
            stages=dict(stages or {}),
            windows=windows,
        )


class TiledPredictor:
    """Predicts change over whole tile pairs with overlapping, blended windows.

    Args:
        bundle: The model bundle. Its model is moved to ``device`` (and to channels-last memory
            when the torch runtime uses that).
        window: Window side in pixels, a multiple of the model's output stride; default the
            bundle's ``window`` (``model.json``), else ``2 * bundle.chip_size`` (``256`` when
            the bundle has no chip size).
        overlap: Pixels shared by neighbouring windows, ``window - overlap`` a multiple of the
            output stride; default the bundle's ``overlap`` when the window is the bundle's,
            else ``window // 4`` (rounded down to the output stride).
        batch_size: Windows read and predicted together (on a CPU the model sees them
            ``CPU_FORWARD_BATCH`` at a time, which bounds activation memory); default as many
            as hold :data:`BATCH_PIXELS` pixels (4 windows of 256², 1 of 512²), so the read
            buffers weigh the same whatever the window.
        tta: Average the predictions of the identity, horizontal and vertical flips.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        blend: ``"cosine"`` (Hann weights, no seams) or ``"uniform"`` (plain average).
        precision: ``"auto"`` (bf16 autocast on CUDA, the measured best on CPU), ``"fp32"``
            or ``"bf16"``.
        channels_last: Channels-last memory format for the torch runtime; None = the device's
            measured default.
        runtime: What runs the model: ``"auto"`` (OpenVINO for float32 on a CPU when it is
            installed, else torch; ``$GROUNDBREAK_CPU_RUNTIME`` over it), ``"torch"``,
            ``"onnx"`` (ONNX Runtime) or ``"openvino"`` (OpenVINO); the last two run float32 on
            a CPU and convert the model on the first window of each shape (seconds; OpenVINO
            keeps the converted graph for the next process); a model that ``"auto"``'s choice
            cannot convert runs with torch, with a RuntimeWarning. See
            :data:`~groundbreak.infer.prediction.inference.CPU_RUNTIME` for the measurement;
            :attr:`runtime` is the one running.
        cloud_mask: How clouds and their shadows are found on each date (``auto``,
            ``s2cloudless``, ``scl``, ``none``; see :mod:`groundbreak.datasets.clouds`). Pixels
            hidden on either date are nodata in the outputs. Each scene's mask is kept (the last
            ``CLOUD_MASK_CACHE`` of them), so a scene in two pairs is masked once.
        prefetch: Batches read ahead on a background thread while the model runs (0: read each
            batch in turn on this thread); default :data:`PREFETCH_BATCHES`.
        skip_unobserved: Read no window that the cloud masks hide entirely (its outputs are
            nodata either way).
        date_matching: How the after date is matched to the before date (``none``,
            ``mean_std``; see :mod:`groundbreak.datasets.date_matching`); None: as the bundle
            says (``model.json`` ``date_matching``).
        threshold: The mask's threshold on the probability, in (0, 1); None: the bundle's
            (its ``tta_threshold`` with ``tta`` when it states one).

    Raises:
        ValueError: For a window, overlap, batch size or blend mode that does not fit.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        window: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        device: str = "auto",
        blend: BlendMode = "cosine",
        *,
        precision: Precision = "auto",
        channels_last: bool | None = None,
        runtime: Runtime = "auto",
        cloud_mask: CloudMaskMode = "auto",
        prefetch: int | None = None,
        skip_unobserved: bool = True,
        date_matching: str | None = None,
        threshold: float | None = None,
    ) -> None:
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        self._threshold = threshold
        if cloud_mask not in CLOUD_MASK_MODES:
            raise ValueError(
                f"unknown cloud mask {cloud_mask!r}; expected one of {', '.join(CLOUD_MASK_MODES)}"
            )
        self.cloud_mask: CloudMaskMode = cloud_mask
        self.date_matching: str = check_date_matching(
            bundle.date_matching if date_matching is None else date_matching
        )
        self.bundle = bundle
        self.multiple = bundle.output_stride
        chip = int(bundle.chip_size or 0)
        if window is None:
            window = bundle.window
        if overlap is None and window is not None and window == bundle.window:
            overlap = bundle.overlap
        self.window = int(window) if window is not None else round_up(
            2 * chip if chip else DEFAULT_WINDOW, self.multiple
        )
        if self.window < 1 or self.window % self.multiple:
            raise ValueError(
                f"window {self.window} must be a positive multiple of {self.multiple} "
                "(the model's output stride)"
            )
        self.overlap = (
            int(overlap) if overlap is not None else round_down(self.window // 4, self.multiple)
        )
        if not 0 <= self.overlap < self.window or (self.window - self.overlap) % self.multiple:
            raise ValueError(
                f"overlap {self.overlap} must be in [0, window {self.window}) with window - "
                f"overlap a multiple of {self.multiple} (the model's output stride)"
            )
        if batch_size is None:
            batch_size = max(1, BATCH_PIXELS // self.window**2)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        prefetch = PREFETCH_BATCHES if prefetch is None else int(prefetch)
        if prefetch < 0:
            raise ValueError(f"prefetch must be at least 0, got {prefetch}")
        self.prefetch = prefetch
        self.skip_unobserved = skip_unobserved
        self._cloud_masks: OrderedDict[tuple[object, ...], CloudMask | None] = OrderedDict()
        if blend not in BLEND_MODES:
            raise ValueError(f"unknown blend {blend!r}; expected one of {', '.join(BLEND_MODES)}")
        self.batch_size = int(batch_size)
        self.tta = tta
        self.blend: BlendMode = blend
        self.device_name = resolve_device_name(device)
        """The device the model runs on: ``"cpu"``, ``"cuda"``, ``"cuda:1"``..."""
        self.precision: Precision = precision
        self.autocast = autocast_dtype(self.device_name, precision)
        self.runtime = check_runtime(self.device_name, runtime, self.autocast)
        self._falls_back_to_torch = runtime == "auto" and self.runtime != "torch"
        """Whether a model the chosen runtime cannot compile runs with torch (with a warning)
        rather than failing: only a runtime ``auto`` chose."""
        self.channels_last = self.runtime == "torch" and use_channels_last(
            self.device_name, channels_last
        )
        self.forward_batch = forward_batch_for(self.device_name, self.batch_size)
        self._model: torch.nn.Module | None = None
        self.runner: ChangeModel
        if self.runtime == "openvino":
            from groundbreak.infer.prediction.openvino_model import (
                OpenVinoChangeModel,
                bundle_key,
            )

            key = bundle_key(bundle.path) if bundle.model_from_files else None
            runner = OpenVinoChangeModel(lambda: self.model, key=key)
            if not runner.has_kept_graphs():  # converted before: its files were checked then
                runner.model  # noqa: B018  (built now: a bundle that fails, fails before any pair)
            self.runner = runner
        elif self.runtime == "onnx":
            from groundbreak.infer.prediction.onnx_model import OnnxChangeModel

            self.runner = OnnxChangeModel(self.model)
        else:
            self.runner = self.model

    @property
    def device(self) -> torch.device:
        """The torch device the model runs on (imports torch)."""
        import torch

        return torch.device(self.device_name)

    @property
    def model(self) -> torch.nn.Module:
        """The bundle's model as this predictor runs it with torch (or converts it): a copy with
        its BatchNorms folded, on the device; made on first use, which an OpenVINO runtime whose
        graphs are kept never makes (torch, timm and smp then stay out of the process)."""
        if self._model is None:
            import torch

            from groundbreak.infer.prediction.folding import fold_batch_norms

            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
            model, _ = fold_batch_norms(self.bundle.model)  # the bundle's is untouched
            self._model = model.to(self.device_name, memory_format=memory_format)
            drop_cuda_code_pages()  # torch may have been imported just now
        return self._model

    def release_runtime(self) -> None:
        """Give back what a compiled runtime holds between pairs (OpenVINO plans its activations
        once: 148 MB for the default ensemble at the default window); the next pair
        compiles the model again. Nothing to give back with torch."""
        release = getattr(self.runner, "release", None)
        if release is not None:
            release()

    @property
    def threshold(self) -> float:
        """The mask's threshold: the one given, else the bundle's for this TTA setting
        (:meth:`~groundbreak.train.bundle.ModelBundle.threshold_for`)."""
        if self._threshold is not None:
            return float(self._threshold)
        return float(self.bundle.threshold_for(self.tta))

    def check_bands(self, pair: TilePair) -> list[str]:
        """The model's bands; an InputError names a scene lacking some and what they are."""
        for scene in (pair.before, pair.after):
            self.bundle.check_scene_bands(scene)
        return list(self.bundle.bands)

    def prepare(self, pair: TilePair, clock: StageClock | None = None) -> PairInput:
        """Check a pair's bands, find its clouds, match its dates when the bundle does (see
        :mod:`groundbreak.datasets.date_matching`) and say what reading its windows needs
        (the seconds of the cloud masks and of the date matching go to ``clock``).

        Warns (:class:`~groundbreak.datasets.radiometry.RadiometryWarning`) for a scene whose
        radiometric convention is unknown but whose date needs one stated.

        Raises:
            InputError: When a scene lacks a band of the model, or an explicitly asked cloud
                mask cannot run on it.
        """
        bands = self.check_bands(pair)
        for scene in (pair.before, pair.after):
            if not scene.radiometry.known:
                message = unknown_radiometry_warning(scene.path, scene.date)
                if message:
                    warnings.warn(message, RadiometryWarning, stacklevel=2)
        clock = clock or StageClock()
        with clock.time("cloud mask"):
            masks = [self.cloud_mask_of(s, pair.grid) for s in (pair.before, pair.after)]
        present = [m for m in masks if m is not None]
        unobserved = None
        if present:
            unobserved = present[0].unobserved
            for mask in present[1:]:
                unobserved = unobserved | mask.unobserved
        factor = present[0].factor if present else 1
        date_match = None
        if self.date_matching == "mean_std":  # fitted on what both dates observe
            with clock.time("date matching"):
                date_match = match_pair(pair, bands, self.bundle.radiometry, unobserved, factor)
        return PairInput(
            pair=pair,
            bands=bands,
            normalize=self.bundle.normalize,
            radiometry=self.bundle.radiometry,
            unobserved=unobserved,
            factor=factor,
            cloud_masks=(masks[0].method if masks[0] else "none",
                         masks[1].method if masks[1] else "none"),
            unobserved_fraction=float(unobserved.mean()) if unobserved is not None else 0.0,
            cloud_fractions=(masks[0].fraction() if masks[0] else 0.0,
                             masks[1].fraction() if masks[1] else 0.0),
            date_match=date_match,
        )

    def cloud_mask_of(self, scene: Scene, grid: Grid) -> CloudMask | None:
        """A scene's cloud mask on a pair grid, computed once while its files stay unchanged."""
        key = (*_files_key(scene), grid, self.cloud_mask)
        if key in self._cloud_masks:
            self._cloud_masks.move_to_end(key)
            return self._cloud_masks[key]
        mask = scene_cloud_mask(scene, grid, self.cloud_mask, coarse_factor(grid))
        self._cloud_masks[key] = mask
        while len(self._cloud_masks) > CLOUD_MASK_CACHE:
            self._cloud_masks.popitem(last=False)
        return mask

    def layout_for(self, grid: Grid) -> WindowLayout:
        """The windows this predictor lays over a grid."""
        return WindowLayout.for_scene(
            grid.height, grid.width, self.window, self.overlap, self.multiple
        )

    def predict_batch(self, data: BatchInput) -> BatchPrediction:
        """Run the model on the kept windows of one batch."""
        if len(data.kept) == 0:
            shape = (0, *data.valid.shape[1:])
            probability = np.zeros(shape, dtype=np.float32)
        else:
            try:
                probability = self._probabilities(data)
            except CompileError as err:
                if not self._falls_back_to_torch:
                    raise
                warnings.warn(f"runtime 'auto' runs the model with torch: {err}",
                              RuntimeWarning, stacklevel=2)
                self.runner, self.runtime, self._falls_back_to_torch = self.model, "torch", False
                probability = self._probabilities(data)
        return BatchPrediction(data.batch, data.kept, probability, data.valid)

    def _probabilities(self, data: BatchInput) -> np.ndarray:
        """The runner's change probabilities of a batch's kept windows (a compiled runtime's
        in numpy, without torch)."""
        if isinstance(self.runner, CompiledChangeModel):
            return compiled_probabilities(self.runner.run, data.before, data.after,
                                          tta=self.tta, forward_batch=self.forward_batch)
        import torch

        with torch.inference_mode():
            return (
                predict_probabilities(
                    self.runner,
                    torch.from_numpy(data.before).to(self.device_name),
                    torch.from_numpy(data.after).to(self.device_name),
                    tta=self.tta,
                    autocast=self.autocast,
                    channels_last=self.channels_last,
                    forward_batch=self.forward_batch,
                )
                .cpu()
                .numpy()
            )

    def iter_inputs(
        self, source: PairInput, layout: WindowLayout, clock: StageClock | None = None
    ) -> Iterator[BatchInput]:
        """Read every batch of windows of a prepared pair, in batch order (``prefetch`` ahead
        on a background thread)."""
        clock = clock or StageClock()

        def read(batch: WindowBatch) -> BatchInput:
            with clock.time("read"):
                return read_batch(source, layout, batch, skip_unobserved=self.skip_unobserved)

        batches = layout.batches(self.batch_size)
        scenes = (source.pair.before, source.pair.after)
        needed = strip_block_cache_bytes(s for scene in scenes for s in scene.sources.values())
        cache_bytes = min(GDAL_CACHE_BYTES, max(STRIP_READ_GDAL_CACHE_BYTES, needed * 5 // 4))
        if self.prefetch == 0:
            with bounded_gdal_cache(cache_bytes), files_kept_open():
                yield from map(read, batches)
            return

        def reader_context() -> contextlib.ExitStack:
            stack = contextlib.ExitStack()
            # GDAL's cache bound is process-wide: the writer's blocks share it meanwhile
            stack.enter_context(bounded_gdal_cache(cache_bytes))
            stack.enter_context(files_kept_open())
            return stack

        inputs = prefetched(read, batches, self.prefetch, reader_context)
        while True:
            started = time.perf_counter()
            data = next(inputs, None)
            clock.add("wait", time.perf_counter() - started)
            if data is None:
                return
            yield data

    def iter_predictions(
        self, source: PairInput, layout: WindowLayout, clock: StageClock | None = None
    ) -> Iterator[BatchPrediction]:
        """Read and predict every batch of windows of a prepared pair, in batch order (the
        model's seconds and windows go to ``clock``; an ONNX or OpenVINO runtime's export of
        the model to its own graph goes to its ``export`` stage, not the model's)."""
        clock = clock or StageClock()
        for data in self.iter_inputs(source, layout, clock):
            runner = self.runner  # the one whose export is timed, should 'auto' fall back
            exported = getattr(runner, "export_seconds", 0.0)
            started = time.perf_counter()
            prediction = self.predict_batch(data)
            exporting = getattr(runner, "export_seconds", 0.0) - exported
            if exporting:
                clock.add("export", exporting)
            clock.add("model", time.perf_counter() - started - exporting)
            clock.add("windows", len(data.kept))
            yield prediction

    def predict_pair(self, pair: TilePair, out_dir: str | os.PathLike[str]) -> PredictionResult:
        """Write ``out_dir/probability.tif`` and ``out_dir/mask.tif`` for a tile pair.

        Raises:
            InputError: When a scene lacks a band of the model or cannot be read.
        """
        start = time.perf_counter()
        clock = StageClock()
        # bands the date matching decodes whole are kept for the windows (issue 25)
        with bounded_gdal_cache(), bands_kept(pair.before, pair.after):
            source = self.prepare(pair, clock)  # before any output is written
            layout = self.layout_for(pair.grid)
            # closed on any error, so the prefetch thread stops reading at once
            with contextlib.closing(self.iter_predictions(source, layout, clock)) as predictions:
                written = write_blended(
                    predictions, layout, pair.grid, out_dir, self.threshold, self.blend, clock
                )
        stages = clock.rounded()
        windows = int(stages.pop("windows", 0))
        result = PredictionResult.written(
            source, written, self.threshold, start, stages, windows
        )
        logger.debug("predicted %s in %.1f s: %s", pair.pair_id, result.seconds, stages,
                     extra={"stages": stages, "windows": windows, "seconds": result.seconds})
        return result


def _files_key(scene: Scene) -> tuple[object, ...]:
    """What a scene's cloud mask depends on: its band sources and files (with their sizes and
    change times), SCL, user mask, radiometry and sun angles."""
    files = [str(s.path) for s in scene.sources.values()]
    files += [str(p) for p in (scene.scl.path if scene.scl else None, scene.cloud_mask) if p]
    stats = []
    for path in sorted(set(files)):
        try:
            stat = os.stat(path)
            stats.append((path, stat.st_size, stat.st_mtime_ns))
        except OSError:  # remote or in an archive: its path is all that is known
            stats.append((path, None, None))
    sources = tuple((name, str(s.path), s.index, s.nodata) for name, s in scene.sources.items())
    return (str(scene.path), sources, tuple(stats), repr(scene.radiometry), scene.sun_angles)
