"""The command line: the ``groundbreak`` dispatcher and the subcommands of the inference stage.

Owns :func:`main` (the console script ``groundbreak``, also ``python -m groundbreak.infer.cli``)
and one module per subcommand of ``infer``: :mod:`.predict`, :mod:`.rank`, :mod:`.nightly`,
:mod:`.alerts`, :mod:`.review` and :mod:`.demo`. The subcommands of the lower stages stay in
their own packages (``chips``: :mod:`groundbreak.datasets.cli`; ``train``, ``export``,
``ensemble``: :mod:`groundbreak.train`; ``evaluate``, ``cv``, ``cv-ensemble``:
:mod:`groundbreak.infer.evaluation`).

Each subcommand is imported only when it runs (:data:`COMMANDS` names its module as a string),
so ``groundbreak --help`` stays fast. Before a subcommand is imported, :func:`prepare_process`
makes the process lean: an inference subcommand keeps triton out on a machine without CUDA
(:func:`keep_triton_out`: 74 MB less resident) and takes the CUDA libraries' code pages out
(:func:`~groundbreak.infer.prediction.cuda_pages.drop_cuda_code_pages`: 226 MB less; the
prediction commands import torch only if they run it, and the predictor drops those pages then),
and the commands that read and write no parquet file keep pyarrow out while they run
(:func:`keep_pyarrow_out`). A subcommand is a function ``main(argv: list[str]) -> int``;
:func:`main` returns every exit code rather than raising SystemExit. A usage error exits 2 with
argparse's message; bad input (:class:`InputError`) or a user's bad path (any other
``OSError``: a missing folder, a missing permission, an ``--out`` that is a file) is printed as
one line, without a traceback, with exit code 2; a full disk or quota (ENOSPC, EDQUOT, also when
GDAL or SQLite is the writer) exits 4; a damaged nightly state database exits 5 (the codes:
:mod:`groundbreak.infer.exit_codes`).

The command sits in the top stage because ``groundbreak`` itself is no package folder (the
distribution maps only ``datasets``, ``train`` and ``infer`` onto top-level folders), and
``infer`` is the stage that may depend on the other two: no stage depends on a higher one.
"""

from __future__ import annotations

import importlib
import logging
import sqlite3
import sys
import warnings
from collections.abc import Sequence

from groundbreak.datasets.errors import InputError, is_disk_full
from groundbreak.infer.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_STATE_DAMAGED,
    EXIT_STOPPED,
)
from groundbreak.infer.prediction.cuda_pages import drop_cuda_code_pages
from groundbreak.train.devices import gpu_driver_absent

__all__ = ["COMMANDS", "INFERENCE_COMMANDS", "PARQUET_FREE_COMMANDS", "keep_pyarrow_out",
           "keep_triton_out", "let_pyarrow_in", "main", "prepare_process"]

COMMANDS: dict[str, tuple[str, str]] = {
    "chips": ("groundbreak.datasets.cli", "cut a dataset into chips and write a manifest"),
    "train": ("groundbreak.train.cli", "train a change model (LightningCLI: fit, validate, ...)"),
    "export": ("groundbreak.train.export", "export a training checkpoint to a model bundle"),
    "ensemble": ("groundbreak.train.ensemble", "combine model bundles into an ensemble bundle"),
    "evaluate": ("groundbreak.infer.evaluation.evaluate",
                 "score a model bundle on labelled scenes or chips"),
    "cv": ("groundbreak.infer.evaluation.crossval",
           "cross-validate a training config by held-out city"),
    "cv-ensemble": ("groundbreak.infer.evaluation.ensemble_cv",
                    "cross-validate an ensemble of finished cv runs"),
    "predict": ("groundbreak.infer.cli.predict", "change maps for one tile pair"),
    "rank": ("groundbreak.infer.cli.rank", "score and rank sites over many tile pairs"),
    "nightly": ("groundbreak.infer.cli.nightly", "the nightly batch over a watch-list"),
    "alerts": ("groundbreak.infer.cli.alerts", "list, confirm or dismiss alerts"),
    "review": ("groundbreak.infer.cli.review", "triage alerts in a browser (local web app)"),
    "demo": ("groundbreak.infer.cli.demo", "rank the bundled tile pairs with the default model"),
}

INFERENCE_COMMANDS = frozenset({"predict", "rank", "nightly", "demo", "evaluate", "cv-ensemble"})
"""Subcommands that only run models (no training, no ``torch.compile``)."""

PARQUET_FREE_COMMANDS = frozenset({"predict", "rank", "nightly", "demo"})
"""Inference subcommands that read and write no parquet file (a chips manifest is one), so
pyarrow is kept out of them (:func:`keep_pyarrow_out`). They are also the ones that may run
without torch (an OpenVINO graph kept from an earlier run); the other inference commands import
it at once, so that its CUDA code is dropped before they start."""


def keep_triton_out() -> bool:
    """Keep triton out of this process when torch sees no CUDA device; True if it did.

    A CUDA build of torch (what ``pip install torch`` gives on x86-64 Linux) ships triton, and
    timm's import of torchvision imports torch's compiler stack, which imports triton: 74 MB of
    resident memory (its shared library) that a CPU process never uses; the nightly memory
    budget is 2 GB (bench/README.md). With ``sys.modules["triton"] = None`` an ``import triton``
    raises ImportError, which torch reads as "no triton", as on its CPU builds. A no-op once
    triton is imported, or with a CUDA device (where it could serve ``torch.compile``). Torch's
    FLOP counter (imported with Lightning, e.g. by ``evaluate``) would then warn on every start
    that triton is missing: that one warning is dropped, as it is this choice, not a fault.
    Torch is not imported to tell where no GPU driver is there to see
    (:func:`~groundbreak.train.devices.gpu_driver_absent`).
    """
    if "triton" in sys.modules:
        return False
    if "torch" in sys.modules or not gpu_driver_absent():
        import torch

        if torch.cuda.is_available():
            return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    logging.getLogger("torch.utils.flop_counter").addFilter(_not_triton_missing)
    return True


def keep_pyarrow_out() -> bool:
    """Keep pyarrow out of this process; True if it did (a no-op once pyarrow is imported).

    pandas 3 imports pyarrow whenever it is installed (it backs pandas' string columns), and
    ``groundbreak chips`` needs it for its parquet manifests: 41-66 MB resident (its shared
    libraries and pandas' pyarrow glue) in a night that only writes a few CSV files; the nightly
    memory budget is 2 GB (bench/README.md). With ``sys.modules["pyarrow"] = None`` pandas reads
    pyarrow as not installed and keeps strings as Python objects; the files it writes are the
    same (tests/infer/test_modules_kept_out.py).
    """
    if "pyarrow" in sys.modules:
        return False
    sys.modules["pyarrow"] = None  # type: ignore[assignment]
    return True


def let_pyarrow_in() -> None:
    """Undo :func:`keep_pyarrow_out`: a later ``import pyarrow`` imports it (pandas, imported
    meanwhile, keeps its strings as Python objects)."""
    if "pyarrow" in sys.modules and sys.modules["pyarrow"] is None:
        del sys.modules["pyarrow"]


def prepare_process(name: str) -> bool:
    """Make this process lean for subcommand ``name`` before it is imported: triton and the
    CUDA libraries' code out of an inference command, pyarrow out of a parquet-free one.
    True if pyarrow was kept out (:func:`let_pyarrow_in` undoes it)."""
    if name in INFERENCE_COMMANDS:
        keep_triton_out()
        if name not in PARQUET_FREE_COMMANDS:
            import torch  # noqa: F401  (they run it: imported now, its CUDA code dropped now)
        drop_cuda_code_pages()
    return name in PARQUET_FREE_COMMANDS and keep_pyarrow_out()


def _not_triton_missing(record: logging.LogRecord) -> bool:
    """False for torch's "triton not found" warning (a logging filter)."""
    return not record.getMessage().startswith("triton not found")


def _usage() -> str:
    lines = ["usage: groundbreak <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'groundbreak <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"groundbreak: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    pyarrow_kept_out = prepare_process(name)
    try:
        return _run(name, rest)
    finally:
        if pyarrow_kept_out:  # a program that called main() may import pyarrow after it
            let_pyarrow_in()


def _run(name: str, rest: list[str]) -> int:
    """Run subcommand ``name`` with its arguments; return its exit code (errors as codes)."""
    module = importlib.import_module(COMMANDS[name][0])
    # GDAL's errors come back as exceptions; its log lines would only repeat them on stderr.
    logging.getLogger("rasterio").addHandler(logging.NullHandler())
    _one_line_warnings(name)
    try:
        return int(module.main(rest) or 0)
    except InputError as err:
        print(f"groundbreak {name}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exit_:  # argparse: 2 on a usage error, 0 after --help
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return 1
        return int(exit_.code or 0)
    except (OSError, sqlite3.DatabaseError) as err:
        if is_disk_full(err):  # the machine's: rerun once there is space
            print(f"groundbreak {name}: stopped: {' '.join(str(err).split())}", file=sys.stderr)
            return EXIT_STOPPED
        if isinstance(err, sqlite3.DatabaseError):
            print(f"groundbreak {name}: error: the nightly state database cannot be read "
                  f"({_one_line(err)}); see 'Backup and recovery' in docs/operator.md",
                  file=sys.stderr)
            return EXIT_STATE_DAMAGED
        print(f"groundbreak {name}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"groundbreak {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line_warnings(name: str) -> None:
    """Print groundbreak's own warnings (e.g. an unknown radiometric offset) as one line each."""
    from groundbreak.datasets.radiometry import RadiometryWarning

    shown = getattr(warnings.showwarning, "shown", warnings.showwarning)  # not wrapped twice

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if issubclass(category, RadiometryWarning):
            print(f"groundbreak {name}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.shown = shown  # type: ignore[attr-defined]
    warnings.showwarning = show


def _one_line(err: BaseException) -> str:
    """An error as one line: ``<path>: <reason>`` for an OSError that names a path."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())

