"""The change model run by OpenVINO on a CPU (``runtime="openvino"`` of the predictor).

:class:`OpenVinoChangeModel` is called like the torch model (``model(before, after) -> logits``).
It converts the torch model the first time it sees an input shape (``torch.export``, then
``openvino.convert_model``: 4-6 s for the default ensemble on 2 cores) and runs an OpenVINO CPU
model compiled for that shape from then on, in float32 (the CPU plugin would otherwise run bf16
on CPUs that have it). The converted graphs are kept in a cache folder (:func:`cache_folder`),
one folder a model, named by a hash of it and the versions, and in it one graph a shape, so a
later process reads the graph back without exporting the model (which took 1.5 s and kept about
40 MB for the default ensemble). A bundle's model is named by its files (:func:`bundle_key`), so
a process that finds its graphs kept never builds the torch model: the predictor then imports
neither torch nor timm nor smp (the 4096^2 COG night's start 0.7-0.9 s instead of 2.8-3.3 s, its
peak about 350 MB lower, on the 2-core machine); a bare model is named by its modules, their
packages' source files and its weights (:func:`model_key`).

A compiled model plans its activations' memory once and reuses it for every window, where torch
allocates and frees them per forward pass; that is most of its lead on the 2-core machine
(``bench/README.md``, "OpenVINO").
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from groundbreak.infer.prediction.compiled_model import CompiledChangeModel, ModelSource
from groundbreak.train import architecture

if TYPE_CHECKING:
    import openvino
    import torch
    from torch import nn


def openvino_available() -> bool:
    """Whether OpenVINO imports (the ``openvino`` extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cache_folder() -> Path:
    """Where converted graphs are kept: ``$GROUNDBREAK_CACHE_DIR/openvino``, else
    ``$XDG_CACHE_HOME/groundbreak/openvino``, else ``~/.cache/groundbreak/openvino``."""
    root = os.environ.get("GROUNDBREAK_CACHE_DIR")
    if root:
        return Path(root) / "openvino"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "groundbreak" / "openvino"


def export_program(
    model: nn.Module, before: torch.Tensor, after: torch.Tensor
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model(before, after)`` at these inputs' shapes; it refuses a
    forward whose control flow depends on the data (a trace would keep one branch without a
    word)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's chatter
            return torch.export.export(model, (before, after))
    finally:
        model.train(was_training)


KEY_FORMAT = "model-3"
"""Bumped whenever what :func:`model_key` or :func:`bundle_key` covers changes, or the cache's
layout, so older entries are never read."""

KEY_LIBRARIES = ("torch", "segmentation-models-pytorch", "timm", "openvino")
"""The installed packages whose versions :func:`bundle_key` covers."""


def model_key(model: nn.Module) -> str:
    """A name for the OpenVINO graphs of ``model``, computed without exporting it: the modules'
    structure and plain attributes, the source files of the packages their classes come from
    (torch's own are covered by its version), every parameter and buffer and the libraries'
    versions."""
    import openvino as ov
    import torch

    digest = hashlib.sha256()
    for part in (KEY_FORMAT, repr(model), torch.__version__, ov.__version__):
        digest.update(part.encode())
    folders: set[Path] = set()
    for name, module in model.named_modules():
        kind = type(module)
        digest.update(f"{name}:{kind.__module__}.{kind.__qualname__}".encode())
        digest.update(repr(sorted(_plain_attributes(module).items())).encode())
        source = _source_file(kind) if not kind.__module__.startswith("torch.") else None
        if source:
            folders.add(Path(source).parent)
    for path in sorted(p for folder in folders for p in folder.glob("*.py")):
        digest.update(path.read_bytes())
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name, value in sorted(tensors.items()):
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "model-" + digest.hexdigest()[:32]


def bundle_key(folder: str | os.PathLike[str]) -> str:
    """A name for the OpenVINO graphs of a bundle's model as the predictor runs it, computed
    without building the model: the bundle's two files, the source files of the code that builds
    and folds it (``groundbreak.train``, :mod:`.folding`) and the versions of the libraries that
    build and convert it (:data:`KEY_LIBRARIES`; an installed package's source changes with its
    version)."""
    from importlib.metadata import PackageNotFoundError, version

    from groundbreak.train.bundle import META_FILE, WEIGHTS_FILE

    digest = hashlib.sha256(KEY_FORMAT.encode())
    for package in KEY_LIBRARIES:
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=none".encode())
    here = Path(__file__).resolve().parent
    train = Path(architecture.__file__).resolve().parent
    for path in [*sorted(train.glob("*.py")), here / "folding.py", Path(__file__).resolve()]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for name in (META_FILE, WEIGHTS_FILE):
        digest.update(name.encode())
        digest.update(hashlib.sha256((Path(folder) / name).read_bytes()).digest())
    return "bundle-" + digest.hexdigest()[:32]


def shape_name(shape: tuple[int, ...]) -> str:
    """The folder of one input shape's graph in a model's cache folder: ``1x13x512x512``."""
    return "x".join(str(int(size)) for size in shape)


def _source_file(kind: type) -> str | None:
    """The file that defines ``kind``, or None (a class from a compiled extension)."""
    try:
        return inspect.getsourcefile(kind)
    except TypeError:
        return None


def _plain_attributes(module: nn.Module) -> dict[str, object]:
    """A module's public attributes of plain types (settings its forward may read)."""
    plain = (bool, int, float, str, tuple, list, type(None))
    return {
        key: value for key, value in vars(module).items()
        if not key.startswith("_") and key != "training" and isinstance(value, plain)
    }


def kept_graph(folder: Path) -> openvino.Model | None:
    """The graph kept in ``folder``, or None where there is none; a damaged entry is removed
    (it is converted again)."""
    import openvino as ov

    if not (folder / "model.xml").is_file():
        return None
    try:
        return ov.Core().read_model(folder / "model.xml")
    except RuntimeError:
        shutil.rmtree(folder, ignore_errors=True)
        return None


def converted_graph(
    program: torch.export.ExportedProgram, shape: tuple[int, ...]
) -> openvino.Model:
    """The OpenVINO graph of ``program``, static at ``shape``."""
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(program)
    # the converter leaves batch, height and width dynamic: a static graph plans its memory once
    for port in converted.inputs:
        port.get_node().set_partial_shape(ov.PartialShape(list(shape)))
    converted.validate_nodes_and_infer_types()
    return converted


def keep_graph(converted: openvino.Model, folder: Path) -> None:
    """Save ``converted`` as ``folder/model.xml`` (float32 weights), the folder renamed into place
    whole; nothing is kept where it cannot be written (read-only, full, or another process
    kept the same graph first)."""
    import openvino as ov

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError:
        return
    try:
        ov.save_model(converted, partial / "model.xml", compress_to_fp16=False)
        partial.rename(folder)
    except (OSError, RuntimeError):
        shutil.rmtree(partial, ignore_errors=True)


class OpenVinoChangeModel(CompiledChangeModel):
    """A torch change model run by OpenVINO on the CPU, converted and compiled per input shape.

    Args:
        model: The torch change model (float32, on the CPU; it is not modified), or a function
            that makes it, called only when a shape's graph is not kept.
        threads: OpenVINO's inference threads; default
            :func:`~groundbreak.infer.prediction.compiled_model.default_threads`.
        cache: Folder of converted graphs: True for :func:`cache_folder`, False for none.
        key: The model's name in the cache (:func:`bundle_key` for a bundle's); default
            :func:`model_key` of the model.
    """

    compiling = "convert the model to OpenVINO"

    def __init__(
        self,
        model: ModelSource,
        threads: int | None = None,
        cache: bool | str | Path = True,
        key: str | None = None,
    ) -> None:
        super().__init__(model, threads)
        self.cache: Path | None = (
            cache_folder() if cache is True else Path(cache) if cache is not False else None
        )
        self._key = key

    @property
    def key(self) -> str:
        """The model's name in the cache."""
        if self._key is None:
            self._key = model_key(self.model)
        return self._key

    def has_kept_graphs(self) -> bool:
        """Whether the cache holds a graph of this model for some shape (then its files were
        checked and converted once already, by this process or an earlier one)."""
        if self.cache is None:
            return False
        kept = self.cache.glob(f"{self.key}/*/model.xml")
        return any(not path.parent.name.startswith(".") for path in kept)  # not one being saved

    def _graph_for(self, shape: tuple[int, ...]) -> openvino.Model:
        """The graph for ``shape``: read back from the cache without exporting the model, else
        exported, converted and kept."""
        folder = self.cache / self.key / shape_name(shape) if self.cache is not None else None
        kept = kept_graph(folder) if folder is not None else None
        if kept is not None:
            return kept
        import torch

        # two distinct example tensors: one tensor passed twice would export one input
        program = export_program(self.model, torch.zeros(shape), torch.zeros(shape))
        converted = converted_graph(program, shape)
        if folder is not None:
            keep_graph(converted, folder)
        return converted

    def _compile(self, shape: tuple[int, ...]) -> openvino.InferRequest:
        """An inference request of the model compiled for inputs of ``shape``."""
        import openvino as ov

        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # as torch: no bf16 where the CPU has it
        }
        if self.threads:  # else OpenVINO's own choice
            config["INFERENCE_NUM_THREADS"] = self.threads
        converted = self._graph_for(shape)
        return ov.Core().compile_model(converted, "CPU", config).create_infer_request()

    def _run(self, compiled: openvino.InferRequest, inputs: list[np.ndarray]) -> np.ndarray:
        """The request's logits, copied out of its output buffer."""
        compiled.infer(inputs)
        return compiled.get_output_tensor(0).data.copy()
