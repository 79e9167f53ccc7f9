"""Reading and writing the course's notebook files: one error type, one reader, one byte-exact
writer (the same notebook always gives the same text), atomic saves.

The lowest of the notebook modules: lesson generation (``lessons``), nbgrader metadata
(``grading``), kernel runs (``kernels``), output cleaning (``outputs``), the ``check`` scoreboard
(``scoreboard``) and ``python -m mnist_course.notebooks`` all build on it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from mnist_course import CourseError
from mnist_course._atomic import atomic_write

__all__ = ["NotebookError", "read_notebook", "render", "write_text"]


class NotebookError(CourseError):
    """A notebook cannot be turned into a lesson, graded or executed; the message says why."""


def render(nb: nbformat.NotebookNode) -> str:
    """The notebook as JSON text, the way Jupyter writes it (indent 1, sorted keys), ending in a
    newline. The same notebook always gives the same text."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat 4, with a clear error when the file is not one."""
    try:
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise NotebookError(f"{path}: no such notebook") from None
    except (ValueError, KeyError, TypeError, AttributeError, nbformat.ValidationError) as exc:
        raise NotebookError(f"{path} is not a readable Jupyter notebook: {exc}") from None


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in UTF-8, atomically: an interrupted save never leaves half a
    notebook."""
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
