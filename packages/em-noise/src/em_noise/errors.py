"""The one exception the toolkit raises for bad input."""
from __future__ import annotations

from pathlib import Path


class EMInputError(ValueError):
    """Bad input file or argument; ``str(err)`` is one line naming the file and the problem.

    CLIs print it to stderr and exit with code 2.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = " ".join(str(problem).split())  # force one line
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)
