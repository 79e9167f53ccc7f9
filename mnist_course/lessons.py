"""Lessons from solutions: ``lessons/NN_x.ipynb`` is generated from ``solutions/NN_x.ipynb``.

The solution is the source of truth. Its solution regions become stubs (see ``regions``),
outputs and execution counts are cleared and the metadata normalised (:func:`normalise_metadata`,
which also writes the nbgrader metadata of ``grading``), so the same solution always gives the
same bytes (``mnist-course lessons``; ``--check`` only compares).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat

from mnist_course.grading import annotate
from mnist_course.notebook_io import NotebookError, read_notebook, render, write_text
from mnist_course.regions import strip_solutions

__all__ = ["KERNELSPEC", "LANGUAGE_INFO", "lesson_text", "lessons_command", "make_lesson",
           "normalise_metadata"]

NBFORMAT_MINOR = 5
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}
# Cell metadata worth keeping (nbval and nbclient read tags such as "raises-exception").
KEEP_CELL_METADATA = ("tags", "jupyter")


def _cell_id(name: str, index: int, taken: set[str]) -> str:
    """A deterministic id for a cell that has none (derived from notebook name and index)."""
    digest = hashlib.sha1(f"{name}:{index}".encode()).hexdigest()
    cid, n = digest[:8], 8
    while cid in taken:
        n += 1
        cid = digest[:n]
    return cid


def normalise_metadata(nb: nbformat.NotebookNode, name: str) -> None:
    """Fixed nbformat version, python3 kernel, deterministic cell ids, no volatile metadata."""
    nb.nbformat, nb.nbformat_minor = 4, NBFORMAT_MINOR
    nb.metadata = nbformat.from_dict({"kernelspec": dict(KERNELSPEC),
                                      "language_info": dict(LANGUAGE_INFO)})
    taken = {c.get("id") for c in nb.cells if c.get("id")}
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        if not cell.get("id") or cell["id"] in seen:  # missing, or a duplicate (invalid)
            cell["id"] = _cell_id(Path(name).name, index, taken)
            taken.add(cell["id"])
        seen.add(cell["id"])
        cell.metadata = nbformat.from_dict(
            {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA and v})
    annotate(nb, name)  # nbgrader metadata, computed from the sources


def make_lesson(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The lesson for one solution notebook (a new notebook; ``solution`` is not changed).

    Solution regions become stubs, outputs and execution counts are cleared, metadata is
    normalised and every cell keeps the id it has in the solution. ``name`` is used in errors.
    """
    lesson = nbformat.from_dict(_deepcopy(solution))
    for index, cell in enumerate(lesson.cells):
        cell.source = strip_solutions(cell.source, cell.cell_type,
                                      where=f"{name}, cell {index} ({cell.cell_type}, counting from 0)")
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    normalise_metadata(lesson, name)
    return lesson


def _deepcopy(node):
    if isinstance(node, dict):
        return {k: _deepcopy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deepcopy(v) for v in node]
    return node


def lesson_text(solution_path: Path) -> str:
    """The exact text of the lesson generated from one solution file."""
    solution = read_notebook(solution_path)
    return render(make_lesson(solution, name=str(solution_path)))


def lessons_command(check: bool, solutions: str = "solutions", lessons: str = "lessons") -> int:
    """``mnist-course lessons [--check]``: regenerate ``lessons/`` from ``solutions/``.

    Without ``check`` it writes the lessons that changed and removes those whose solution is
    gone, then prints one summary line and returns 0. With ``check`` it changes nothing: it
    prints every lesson that differs, is missing or has no solution, and returns 1 if there is
    any (0 when all are in sync). Paths are relative to the current directory.
    """
    sol_dir, les_dir = Path(solutions), Path(lessons)
    if not sol_dir.is_dir():
        raise NotebookError(
            f"there is no '{solutions}' folder here ({Path.cwd().name}/): run "
            "`mnist-course lessons` from the repository root, where solutions/ and lessons/ are")
    expected = {p.name: lesson_text(p) for p in sorted(sol_dir.glob("*.ipynb"))}
    existing = {p.name: p for p in sorted(les_dir.glob("*.ipynb"))} if les_dir.is_dir() else {}
    missing = [n for n in expected if n not in existing]
    extra = [n for n in existing if n not in expected]
    differ = [n for n in expected if n in existing
              and existing[n].read_bytes() != expected[n].encode("utf-8")]

    if check:
        for n in missing:
            print(f"{les_dir / n}: missing (generate it from {sol_dir / n})")
        for n in differ:
            print(f"{les_dir / n}: differs from what {sol_dir / n} generates")
        for n in extra:
            print(f"{les_dir / n}: has no solution in {sol_dir}/ (it would be removed)")
        bad = len(missing) + len(differ) + len(extra)
        if bad:
            print(f"{bad} lesson notebook(s) out of sync: run `mnist-course lessons` and commit "
                  f"{les_dir}/")
            return 1
        print(f"{les_dir}/ is in sync with {sol_dir}/ ({len(expected)} notebooks)")
        return 0

    les_dir.mkdir(parents=True, exist_ok=True)
    for n in missing + differ:
        write_text(les_dir / n, expected[n])
    for n in extra:
        existing[n].unlink()
    unchanged = len(expected) - len(missing) - len(differ)
    print(f"{les_dir}/: {len(missing) + len(differ)} written, {unchanged} unchanged, "
          f"{len(extra)} removed (from {len(expected)} solutions in {sol_dir}/)")
    return 0
