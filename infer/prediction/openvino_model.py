"""The change model run by OpenVINO on a CPU (``runtime="openvino"`` of the predictor).

:class:`OpenVinoChangeModel` is called like the torch model (``model(before, after) -> logits``).
It converts the torch model the first time it sees an input shape (``torch.export``, then
``openvino.convert_model``: 4-6 s for the default ensemble on 2 cores) and runs an OpenVINO CPU
model compiled for that shape from then on, in float32 (the CPU plugin would otherwise run bf16
on CPUs that have it). The converted graph is kept in a cache folder (:func:`cache_folder`),
named by a hash of the model (:func:`model_key`: its modules, their packages' source files, its
weights), the shape and the versions, so a later process reads the graph back without exporting
the model (which took 1.5 s and kept about 40 MB for the default ensemble).

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
import torch
from torch import nn

from groundbreak.infer.prediction.compiled_model import CompiledChangeModel

if TYPE_CHECKING:
    import openvino


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
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's chatter
            return torch.export.export(model, (before, after))
    finally:
        model.train(was_training)


KEY_FORMAT = "model-2"
"""Bumped whenever what :func:`model_key` covers changes, so older entries are never read."""


def model_key(model: nn.Module, shape: tuple[int, ...]) -> str:
    """A name for the OpenVINO graph of ``model`` at input ``shape``, computed without exporting
    it: the modules' structure and plain attributes, the source files of the packages their
    classes come from (torch's own are covered by its version), every parameter and buffer, the
    shape and the libraries' versions."""
    import openvino as ov

    digest = hashlib.sha256()
    for part in (KEY_FORMAT, repr(model), repr(shape), torch.__version__, ov.__version__):
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
    return digest.hexdigest()[:32]


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
        model: The torch change model (float32, on the CPU). It is not modified.
        threads: OpenVINO's inference threads; default ``torch.get_num_threads()``.
        cache: Folder of converted graphs: True for :func:`cache_folder`, False for none.
    """

    compiling = "convert the model to OpenVINO"

    def __init__(
        self, model: nn.Module, threads: int | None = None, cache: bool | str | Path = True
    ) -> None:
        super().__init__(model, threads)
        self.cache: Path | None = (
            cache_folder() if cache is True else Path(cache) if cache is not False else None
        )

    def _graph_for(self, shape: tuple[int, ...]) -> openvino.Model:
        """The graph for ``shape``: read back from the cache without exporting the model, else
        exported, converted and kept."""
        folder = self.cache / model_key(self.model, shape) if self.cache is not None else None
        kept = kept_graph(folder) if folder is not None else None
        if kept is not None:
            return kept
        # two distinct example tensors: one tensor passed twice would export one input
        program = export_program(self.model, torch.zeros(shape), torch.zeros(shape))
        converted = converted_graph(program, shape)
        if folder is not None:
            keep_graph(converted, folder)
        return converted

    def _compile(self, before: torch.Tensor, after: torch.Tensor) -> openvino.InferRequest:
        """An inference request of the model compiled for these inputs' shape."""
        import openvino as ov

        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # as torch: no bf16 where the CPU has it
        }
        converted = self._graph_for(tuple(before.shape))
        return ov.Core().compile_model(converted, "CPU", config).create_infer_request()

    def _run(self, compiled: openvino.InferRequest, inputs: list[np.ndarray]) -> np.ndarray:
        """The request's logits, copied out of its output buffer."""
        compiled.infer(inputs)
        return compiled.get_output_tensor(0).data.copy()
