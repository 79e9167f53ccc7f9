"""Solution regions: the markers that make a solution notebook's exercises, and their stubs.

``solutions/NN_x.ipynb`` marks each exercise's answer with nbgrader's delimiters; in the lesson
the region becomes a stub::

    def relu_forward(x):                      def relu_forward(x):
        ### BEGIN SOLUTION                        # YOUR CODE HERE
        out = np.maximum(0, x)         -->        raise NotImplementedError()
        ### END SOLUTION                        return out, x
        return out, x

In a markdown cell the region becomes ``YOUR ANSWER HERE``. Lesson generation (``lessons``),
nbgrader metadata (``grading``) and the ``check`` scoreboard (``scoreboard``) all read the
regions through this module.
"""

from __future__ import annotations

from mnist_course.notebook_io import NotebookError

__all__ = ["BEGIN", "CODE_STUB", "END", "MARKDOWN_STUB", "has_solution", "is_solution_cell",
           "strip_solutions"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"


def _marker(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith(BEGIN):
        return BEGIN
    if stripped.startswith(END):
        return END
    return None


def strip_solutions(source: str, cell_type: str = "code", where: str = "cell") -> str:
    """Replace every solution region of one cell's source by its stub.

    A code region becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` and a markdown
    region ``YOUR ANSWER HERE``, each indented like its ``### BEGIN SOLUTION`` line. Text outside
    the regions is kept as it is. ``where`` names the cell in error messages.

    Raises NotebookError for an END without BEGIN, a BEGIN inside a region, or a region that is
    never closed.
    """
    out: list[str] = []
    begin_line = None
    for number, line in enumerate(source.split("\n"), start=1):
        kind = _marker(line)
        if kind == BEGIN:
            if begin_line is not None:
                raise NotebookError(
                    f"{where}: '{BEGIN}' on line {number} is nested inside the region opened on "
                    f"line {begin_line}; close that one with '{END}' first")
            begin_line = number
            indent = line[: len(line) - len(line.lstrip())]
            stub = CODE_STUB if cell_type == "code" else (MARKDOWN_STUB,)
            out.extend(indent + s for s in stub)
        elif kind == END:
            if begin_line is None:
                raise NotebookError(
                    f"{where}: '{END}' on line {number} has no '{BEGIN}' before it")
            begin_line = None
        elif begin_line is None:
            out.append(line)
    if begin_line is not None:
        raise NotebookError(
            f"{where}: '{BEGIN}' on line {begin_line} is never closed; add '{END}' after the "
            "solution")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    """True when a cell's source holds a ``### BEGIN SOLUTION`` marker."""
    return any(_marker(line) == BEGIN for line in source.split("\n"))


def is_solution_cell(source: str) -> bool:
    """A cell the learner fills in: an nbgrader region (solutions/) or its stub (lessons/)."""
    return has_solution(source) or any(ln.strip() == CODE_STUB[0] for ln in source.split("\n"))
