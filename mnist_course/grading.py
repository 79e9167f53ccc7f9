"""nbgrader cell metadata for the course notebooks, computed from their sources.

``solutions/`` is an nbgrader *source* notebook set: real ``nbgrader generate_assignment`` turns
it into the student version (which equals ``lessons/``) and ``nbgrader autograde`` scores
submissions. The cell metadata that nbgrader needs is never written by hand; it follows from the
course's solution regions (``### BEGIN SOLUTION`` ... ``### END SOLUTION``):

- a code cell with a solution region is a **solution cell** (the learner's code, not graded by
  itself);
- the first code cell after a run of such cells, when it has no region itself, is its **test
  cell**: autograded, locked, worth one point per solution cell it checks. In this course it calls
  ``checks.check_...``, runs a gradient check or shows a checked output;
- a markdown cell with a solution region is a **manually graded answer** worth one point;
- every other cell gets no nbgrader metadata.

The classification reads the sources *after* the regions are replaced by their stubs, so a
solution and the lesson generated from it get the same metadata (a lesson is what nbgrader's
student version is, and nbgrader keeps the metadata there too). ``grade_id``\\ s are readable and
stable: ``ex3_softmax_cross_entropy`` for a solution cell (the exercise number counts exercises
from the top, the name is the first function or class the cell defines), ``ex3_check`` for its
test cell, ``ex5_answer`` for a written answer.

``python -m mnist_course.grading summary solutions/*.ipynb`` prints what each notebook is worth;
``python -m mnist_course.grading source COURSE_DIR`` lays the solutions out as nbgrader's
``source/<lesson>/<lesson>.ipynb`` (see docs/instructors.md).
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from mnist_course import CourseError
from mnist_course.notebook_io import NotebookError, read_notebook, render
from mnist_course.regions import BEGIN, CODE_STUB, END, MARKDOWN_STUB, strip_solutions

__all__ = ["Role", "annotate", "main", "metadata_roles", "roles", "stray_markers", "summary",
           "write_source"]

SCHEMA_VERSION = 3
KEY = "nbgrader"
# Files a lesson reads that an earlier lesson writes next to its notebook. nbgrader gives every
# assignment its own folder, so these travel inside the assignment (source -> release, and
# autograde copies them beside each submission).
LESSON_INPUTS = {
    "03_numpy_cnn": ("numpy_mlp.npz",),       # lesson 01's trained MLP (CNN against MLP)
    "06_torch_autograd": ("numpy_cnn.npz",),  # lesson 03's trained CNN (optional there)
}
_NAME = re.compile(r"^(\s*)(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.MULTILINE)
_INVALID_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Role:
    """What one cell is to nbgrader."""
    kind: str          # "solution", "test" or "answer"
    grade_id: str
    points: int = 0    # test and answer cells only

    def metadata(self) -> dict:
        meta = {"grade_id": self.grade_id, "schema_version": SCHEMA_VERSION}
        if self.kind == "solution":
            meta.update(grade=False, solution=True, locked=False)
        elif self.kind == "test":
            meta.update(grade=True, solution=False, locked=True, points=self.points)
        else:
            meta.update(grade=True, solution=True, locked=False, points=self.points)
        return meta


def _has_stub(stripped: str, cell_type: str) -> bool:
    """True when a cell's source (after strip_solutions) holds the stub of a solution region."""
    lines = [line.strip() for line in stripped.split("\n")]
    if cell_type == "markdown":
        return MARKDOWN_STUB in lines
    if cell_type != "code":
        return False
    return any(a == CODE_STUB[0] and b == CODE_STUB[1] for a, b in itertools.pairwise(lines))


def _exercise_name(stripped: str) -> str:
    """The first top-level function or class a cell defines (else the first nested one)."""
    found = [(len(m.group(1)), m.group(2)) for m in _NAME.finditer(stripped)]
    if not found:
        return "solution"
    top = [name for indent, name in found if indent == 0]
    return top[0] if top else found[0][1]


def _unique(grade_id: str, taken: set[str]) -> str:
    grade_id = _INVALID_ID_CHARS.sub("_", grade_id)
    candidate, n = grade_id, 1
    while candidate in taken:
        n += 1
        candidate = f"{grade_id}_{n}"
    taken.add(candidate)
    return candidate


def roles(nb: nbformat.NotebookNode, name: str = "notebook") -> list[Role | None]:
    """The nbgrader role of every cell of ``nb`` (None: no metadata), from the sources alone.

    Raises NotebookError (naming ``name`` and the cell) when a solution region is unbalanced.
    """
    stripped = [strip_solutions(c.source, c.cell_type,
                                where=f"{name}, cell {i} ({c.cell_type}, counting from 0)")
                if c.cell_type in ("code", "markdown") else c.source
                for i, c in enumerate(nb.cells)]
    exercise = [_has_stub(s, c.cell_type) for s, c in zip(stripped, nb.cells)]
    result: list[Role | None] = [None] * len(nb.cells)
    taken: set[str] = set()
    number = 0           # exercises so far: runs of solution code cells and written answers
    run: list[int] = []  # solution code cells waiting for their test cell
    run_number = 0       # the exercise number of that run
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and exercise[index]:
            number += 1
            result[index] = Role("answer", _unique(f"ex{number}_answer", taken), points=1)
        elif cell.cell_type == "code" and exercise[index]:
            if not run:
                number += 1
                run_number = number
            run.append(index)
            cell_name = _exercise_name(stripped[index])
            result[index] = Role("solution", _unique(f"ex{run_number}_{cell_name}", taken))
        elif cell.cell_type == "code" and run:
            result[index] = Role("test", _unique(f"ex{run_number}_check", taken),
                                 points=len(run))
            run = []
    return result


def metadata_roles(nb: nbformat.NotebookNode) -> list[Role | None]:
    """The nbgrader role of every cell of ``nb`` as its cell metadata says (None: no metadata).

    This is what ``nbgrader autograde`` reads, and what survives a learner's editing: Jupyter
    keeps a cell's metadata when its source is rewritten. A cell with ``solution`` and not
    ``grade`` is a solution cell, ``grade`` and not ``solution`` a test cell, both a written
    answer; a cell without a ``grade_id``, or with neither flag, has no role.
    """
    result: list[Role | None] = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get(KEY) or {}
        solution, grade = bool(meta.get("solution")), bool(meta.get("grade"))
        grade_id = meta.get("grade_id")
        if not grade_id or not isinstance(grade_id, str) or not (solution or grade):
            result.append(None)
            continue
        kind = "answer" if solution and grade else "solution" if solution else "test"
        points = meta.get("points", 0) if kind != "solution" else 0
        result.append(Role(kind, grade_id, points if isinstance(points, int) else 0))
    return result


def annotate(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Set the nbgrader metadata of every cell of ``nb`` in place (and return ``nb``).

    Existing nbgrader metadata is replaced, or removed from cells that have no role, so the
    result depends on the sources alone. See ``roles`` for the rules.
    """
    for cell, role in zip(nb.cells, roles(nb, name)):
        cell.metadata.pop(KEY, None)
        if role is not None:
            cell.metadata[KEY] = nbformat.from_dict(role.metadata())
    return nb


def stray_markers(nb: nbformat.NotebookNode) -> list[str]:
    """Lines that nbgrader would read as a solution delimiter but the course does not.

    nbgrader looks for the delimiter anywhere in a line; the course only where a line starts
    with it. Prose such as "a cell with `### BEGIN SOLUTION` ..." therefore breaks
    ``nbgrader generate_assignment``. Returns ``["cell 3, line 2: ...", ...]``.
    """
    found = []
    for index, cell in enumerate(nb.cells):
        for number, line in enumerate(cell.source.split("\n"), start=1):
            stripped = line.strip()
            if ((BEGIN in line and not stripped.startswith(BEGIN))
                    or (END in line and not stripped.startswith(END))):
                found.append(f"cell {index}, line {number}: {stripped[:100]}")
    return found


def summary(nb: nbformat.NotebookNode, name: str = "notebook") -> dict:
    """Counts of solution, test and answer cells and the points a notebook is worth."""
    cell_roles = [r for r in roles(nb, name) if r is not None]
    return {
        "solution": sum(r.kind == "solution" for r in cell_roles),
        "test": sum(r.kind == "test" for r in cell_roles),
        "answer": sum(r.kind == "answer" for r in cell_roles),
        "points": sum(r.points for r in cell_roles),
        "autograded_points": sum(r.points for r in cell_roles if r.kind == "test"),
    }


def write_source(course: str | Path, solutions: str | Path = "solutions") -> list[str]:
    """Lay out ``solutions/*.ipynb`` as nbgrader's ``COURSE/source/<lesson>/<lesson>.ipynb``.

    Each notebook is written annotated, together with the files it reads from an earlier lesson
    (``LESSON_INPUTS``) when ``solutions/`` has them. Returns warnings for inputs not found.
    """
    sol_dir, course = Path(solutions), Path(course)
    paths = sorted(sol_dir.glob("*.ipynb"))
    if not paths:
        raise NotebookError(f"no notebooks in '{solutions}': run this from the repository root")
    warnings = []
    for path in paths:
        lesson = path.stem
        nb = read_notebook(path)
        problems = stray_markers(nb)
        if problems:
            raise NotebookError(f"{path}: nbgrader would read these lines as solution "
                                "delimiters; rephrase them:\n  " + "\n  ".join(problems))
        annotate(nb, str(path))
        folder = course / "source" / lesson
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(render(nb).encode("utf-8"))
        for extra in LESSON_INPUTS.get(lesson, ()):
            if (sol_dir / extra).is_file():
                shutil.copy2(sol_dir / extra, folder / extra)
            else:
                warnings.append(f"{lesson} reads {extra}, which is not in {sol_dir}/ (run the "
                                "earlier lesson's solution first, e.g. make notebooks)")
    return warnings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnist_course.grading",
                                description="nbgrader metadata of the course notebooks.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("summary", help="solution, test and answer cells and points per notebook")
    s.add_argument("paths", nargs="+", metavar="NOTEBOOK")
    w = sub.add_parser("source", help="write COURSE/source/<lesson>/<lesson>.ipynb from solutions/")
    w.add_argument("course", metavar="COURSE", help="nbgrader course directory (e.g. course)")
    w.add_argument("--solutions", default="solutions", help="folder of the solution notebooks")
    args = p.parse_args(argv)
    try:
        if args.command == "summary":
            total = 0
            print(f"{'notebook':<30} {'solution':>8} {'test':>5} {'answer':>6} {'points':>6}")
            for path in args.paths:
                s = summary(read_notebook(Path(path)), path)
                total += s["points"]
                print(f"{Path(path).name:<30} {s['solution']:>8} {s['test']:>5} "
                      f"{s['answer']:>6} {s['points']:>6}")
            print(f"{'total':<30} {'':>8} {'':>5} {'':>6} {total:>6}")
        else:
            for warning in write_source(args.course, args.solutions):
                print(f"warning: {warning}", file=sys.stderr)
            print(f"✓ {args.course}/source/: one assignment per notebook of {args.solutions}/")
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
