"""The one error type for bad input: it names the file and the problem."""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """Bad input data: a file that is missing, corrupt, mismatched or unusable.

    The message always reads ``<path>: <problem>`` so a CLI can print it as one line.
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
