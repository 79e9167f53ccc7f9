"""The ``check`` scoreboard: ``mnist-course check NOTEBOOK`` grades a learner's lesson.

The notebook runs in a fresh kernel in its own folder (the file is not changed), past any
failing cell, and the scoreboard lists every exercise of the lesson, in order, by name, ✓ or ✗
with the first line of the error, then ``score: K/N exercises pass``; exit 0 only when all N
pass. A file that is not a notebook of this course exits with 2.

What an exercise is comes from what survives a learner's editing: the nbgrader cell metadata
the lessons carry (``solution``, ``grade``, ``grade_id``: the rule ``nbgrader autograde``
uses), compared with the course's own copy of the lesson, generated from ``solutions/``
(:func:`reference_lesson`). A check cell deleted or changed fails its exercise; a cell that has
lost its metadata is recognised by its source or the names it defines, and a ``note:`` line says
what was assumed (:func:`match_exercises`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat

from mnist_course.grading import metadata_roles, roles
from mnist_course.kernels import execute_cells
from mnist_course.lessons import make_lesson
from mnist_course.notebook_io import NotebookError, read_notebook

__all__ = ["CHECK_TIMEOUT", "HINTS", "Exercise", "NotGradableError", "check_command",
           "course_solutions_dir", "exercises_to_grade", "find_exercises", "grade",
           "match_exercises", "read_gradable", "reference_lesson"]

CHECK_TIMEOUT = 3600


class NotGradableError(NotebookError):
    """The file cannot be graded: missing, not a notebook, or not one of this course's. The CLI
    prints the one-line message and exits with status 2."""

    exit_code = 2


# A call of one of this course's checks, e.g. `checks.check_relu(relu_forward, relu_backward)`.
_CHECK_CALL = re.compile(r"\bchecks\.(check_\w+)\s*\(")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_DEFINES = re.compile(r"^(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)", re.MULTILINE)
_SECTION_NUMBER = re.compile(r"^\d+(\.\d+)*\.?[ \t]+")
HINTS = {
    "NotImplementedError": "an exercise is still a stub: replace `raise NotImplementedError()` "
                           "with your code",
    "AssertionError": "a check did not pass: read its message, fix the exercise above it, and "
                      "run the cells again",
    "NameError": "a name is not defined: an exercise it comes from failed, or a cell was "
                 "renamed; keep the names the lesson uses",
    "ModuleNotFoundError": "a package is missing: use the course environment (make test, or "
                           "pip install -e '.[dev]')",
    "ImportError": "an import failed: use the course environment (pip install -e '.[dev]')",
    "Timeout": "a cell ran for too long: look for an endless loop, or a very slow version of a "
               "vectorised exercise",
    "DeadKernelError": "the kernel died: look for an array far too large for memory",
    "SyntaxError": "a cell is not valid Python: look at the line the error names (a missing "
                   "colon or bracket?)",
    "IndentationError": "a cell is not indented consistently: line up the lines of each block",
    "CheckCell": "the check cells are the course's: keep them as they are, below your code (a "
                 "fresh copy of the lesson shows the original)",
}


class Exercise:
    """One graded exercise of a notebook: its solution cells and the cell that checks them.

    ``cells`` are indices into the graded notebook's cells, the solution cells first and the
    check cell last. ``problem`` (None when there is none) says why the exercise fails whatever
    its code does: its check cell is missing or is not the course's.
    """

    def __init__(self, name: str, cells: list[int], problem: str | None = None):
        self.name = name
        self.cells = cells
        self.problem = problem

    def __repr__(self) -> str:
        extra = f", problem={self.problem!r}" if self.problem else ""
        return f"Exercise({self.name!r}, cells={self.cells}{extra})"


def _clean_heading(text: str) -> str:
    """``7. Exercise: `one_hot` `` -> ``Exercise: one_hot``: no section number, code or bold."""
    return _SECTION_NUMBER.sub("", text.strip()).replace("`", "").replace("**", "")


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_call_name(source: str) -> str:
    """``check_relu(relu_forward, relu_backward)``: the first check call of a cell, as written."""
    match = _CHECK_CALL.search(source)
    start, depth = match.end(), 1
    for end in range(start, len(source)):
        depth += {"(": 1, ")": -1}.get(source[end], 0)
        if depth == 0:
            args = " ".join(source[start:end].split())
            return _short(f"{match.group(1)}({args})")
    return f"{match.group(1)}(...)"


def find_exercises(nb: nbformat.NotebookNode, cell_roles: list | None = None) -> list[Exercise]:
    """The exercises of a notebook, in order, from the nbgrader role of each cell.

    An exercise is one or more solution cells and the code cell that checks them (their
    autograded test cell). ``cell_roles`` (one :class:`mnist_course.grading.Role` or None per
    cell) defaults to the roles computed from the sources by :func:`mnist_course.grading.roles`:
    a ``### BEGIN SOLUTION`` region or its ``# YOUR CODE HERE`` stub makes a solution cell and
    the first code cell after them is their test cell. That is right for the course's own
    notebooks (solutions/, and lessons/ as generated); a learner's notebook is read by
    :func:`exercises_to_grade`. Written answers (markdown) are graded by a person and are not
    listed.

    An exercise is named by the last markdown heading that says "Exercise" since the previous
    exercise (section numbers and markup removed), else by its check call, else by the names
    its solution cells define.
    """
    if cell_roles is None:
        cell_roles = roles(nb)
    exercises: list[Exercise] = []
    pending: list[int] = []      # solution cells waiting for their test cell
    heading = None               # the latest "Exercise" heading since the last exercise
    for index, (cell, role) in enumerate(zip(nb.cells, cell_roles)):
        if cell.cell_type == "markdown":
            for text in _HEADING.findall(cell.source):
                if "exercise" in text.lower():
                    heading = _clean_heading(text)
        elif cell.cell_type != "code" or role is None:
            continue
        elif role.kind == "solution":
            pending.append(index)
        elif role.kind == "test":
            name = heading
            if name is None and _CHECK_CALL.search(cell.source):
                name = _check_call_name(cell.source)
            if name is None:
                defined = [m for i in pending for m in _DEFINES.findall(nb.cells[i].source)]
                name = ", ".join(defined) or f"the exercise before code cell {index}"
            exercises.append(Exercise(name, [*pending, index]))
            pending, heading = [], None
    return exercises


# --------------------------------------------------------------------------------------------
# A learner's notebook against the course's copy of the lesson
# --------------------------------------------------------------------------------------------

def course_solutions_dir() -> Path | None:
    """The ``solutions/`` folder of the course this package belongs to (a clone of the course:
    the folder beside ``mnist_course/``), or None where there is none (an installed package)."""
    folder = Path(__file__).resolve().parent.parent / "solutions"
    return folder if folder.is_dir() else None


def reference_lesson(path: str | Path) -> tuple[nbformat.NotebookNode | None, str]:
    """The course's own copy of the lesson ``path`` is a version of, generated from its solution
    (so a learner who edits ``lessons/`` in place still has an untouched reference).

    The solution is ``solutions/<same file name>``, else the one whose name begins the
    notebook's (``00_data-Copy1.ipynb`` is lesson ``00_data.ipynb``). Returns ``(lesson,
    where)``, where ``where`` names the solution file it came from, or ``(None, why)`` saying
    why there is none.
    """
    path = Path(path)
    folder = course_solutions_dir()
    if folder is None:
        return None, ("the course's copy of the lessons was not found (no solutions/ folder "
                      "beside the mnist_course package: run check from a clone of the course)")
    solution = folder / path.name
    if not solution.is_file():
        near = [p for p in folder.glob("*.ipynb") if path.stem.startswith(p.stem)]
        if not near:
            return None, f"the course has no lesson named {path.name} (in solutions/)"
        solution = max(near, key=lambda p: len(p.stem))
    try:
        lesson = make_lesson(read_notebook(solution), name=solution.name)
    except NotebookError as exc:
        return None, f"the course's copy of {solution.name} cannot be read: {_one_line(str(exc))}"
    return lesson, f"solutions/{solution.name}"


def _same_source(a: str, b: str) -> bool:
    """Equal sources up to trailing spaces and blank lines at either end."""
    def norm(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").rstrip().split("\n")]
    return norm(a) == norm(b)


def _code_label(nb: nbformat.NotebookNode, index: int) -> str:
    """``code cell 7``: a cell as a learner finds it, counting code cells from 1."""
    number = sum(c.cell_type == "code" for c in nb.cells[: index + 1])
    return f"code cell {number}"


def _first_line(source: str) -> str:
    """The first line of code of a cell (comment lines skipped), `` ...`` when more follow."""
    lines = [ln for ln in source.strip().split("\n")
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return "(empty)"
    return _short(lines[0], 60) + (" ..." if len(lines) > 1 else "")


def match_exercises(nb: nbformat.NotebookNode, reference: nbformat.NotebookNode
                    ) -> tuple[list[Exercise], list[str]]:
    """Find the reference lesson's exercises in a learner's version of it.

    ``reference`` is the course's lesson, with its nbgrader metadata. Every one of its exercises
    is returned, in its order and with its name, whatever the learner did to the cells; the
    cells are those of ``nb``:

    - a check cell is the cell with its ``grade_id``; its source must be the reference's, else
      the exercise's ``problem`` says it was changed. Without the metadata, a cell with exactly
      the reference's source is taken. With neither, the check cell is missing: ``problem``
      says so and the exercise has no check cell (it fails);
    - a solution cell is every cell with its ``grade_id`` (the learner's code replaced the stub;
      the metadata stayed). Without the metadata, the last cell before the check cell, and after
      the previous exercise's, that defines the same function or class is taken (or, for a
      solution that defines nothing, one with the reference's very source, else the last cell
      there whose source is in no code cell of the reference: the learner's own).

    Returns ``(exercises, notes)``: each note is one line saying what was assumed.
    """
    ref_roles = metadata_roles(reference)
    mine = metadata_roles(nb)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    by_id: dict[str, list[int]] = {}
    for i in code:
        if mine[i] is not None:
            by_id.setdefault(mine[i].grade_id, []).append(i)
    untagged = [i for i in code if mine[i] is None]
    used: set[int] = set()
    exercises, notes = [], []
    recognised = []  # the notes on cells found without their metadata
    after = -1  # the check cell of the previous exercise found
    for ref in find_exercises(reference, ref_roles):
        name = ref.name
        check_src = reference.cells[ref.cells[-1]].source
        check_id = ref_roles[ref.cells[-1]].grade_id
        problem = None
        tagged = [i for i in by_id.get(check_id, []) if i not in used]
        same = [i for i in tagged if _same_source(nb.cells[i].source, check_src)]
        if same:
            check = same[0]
        elif tagged:
            check = tagged[0]
            problem = (f"its check cell ({_code_label(nb, check)}) was changed: restore it to "
                       f"`{_first_line(check_src)}` as in the course's lesson")
        else:
            found = [i for i in untagged if i not in used
                     and _same_source(nb.cells[i].source, check_src)]
            check = next((i for i in found if i > after), found[0] if found else None)
            if check is not None:
                recognised.append(f"{name}: its check cell has lost its nbgrader metadata; "
                                  f"took {_code_label(nb, check)}, which has the check's source")
                notes.append(recognised[-1])
            else:
                problem = (f"its check cell `{_first_line(check_src)}` is missing: put it back "
                           "after your code, as in the course's lesson")
        end = check if check is not None else len(nb.cells)
        solutions: list[int] = []
        for ref_index in ref.cells[:-1]:
            ref_src = reference.cells[ref_index].source
            tagged = [i for i in by_id.get(ref_roles[ref_index].grade_id, []) if i not in used]
            if tagged:
                solutions += tagged
                used.update(tagged)
                continue
            names = set(_DEFINES.findall(ref_src))
            candidates = [i for i in untagged if after < i < end and i not in used and (
                names & set(_DEFINES.findall(nb.cells[i].source)) if names
                else _same_source(nb.cells[i].source, ref_src))]
            how = f"it defines {', '.join(sorted(names))}" if names else "it has the stub's source"
            if not candidates and not names:
                # An answer that defines nothing (an open exercise): the learner's own code
                # before the check, a cell whose source is none of the lesson's.
                ref_code = [c.source for c in reference.cells if c.cell_type == "code"]
                candidates = [i for i in untagged if after < i < end and i not in used and not
                              any(_same_source(nb.cells[i].source, src) for src in ref_code)]
                how = "it is your code before the check, found in no cell of the lesson"
            what = ", ".join(sorted(names)) or "its code"
            if candidates:
                solutions.append(candidates[-1])
                used.add(candidates[-1])
                recognised.append(f"{name}: a solution cell has lost its nbgrader metadata; "
                                  f"took {_code_label(nb, candidates[-1])} ({how})")
                notes.append(recognised[-1])
            else:
                notes.append(f"{name}: no cell holds the solution cell that defines {what} "
                             "(its nbgrader metadata is gone); graded by its check cell alone")
        if check is not None:
            used.add(check)
            after = check
        exercises.append(Exercise(name, sorted(solutions) + ([check] if check is not None
                                                              else []), problem))
    if not any(mine) and recognised:
        # A notebook re-saved without any cell metadata: one line rather than one per cell.
        notes = [n for n in notes if n not in recognised]
        notes.insert(0, f"this notebook has no nbgrader metadata (saved by a tool that drops it?): "
                        f"its exercises were found by comparing with the course's lesson, "
                        f"{len(recognised)} cells by their source or the names they define")
    return exercises, notes


def exercises_to_grade(nb: nbformat.NotebookNode, path: str | Path
                       ) -> tuple[list[Exercise], list[str]]:
    """The exercises ``mnist-course check`` grades in the notebook ``nb`` read from ``path``,
    and one-line notes on what was assumed.

    The course's copy of the lesson (:func:`reference_lesson`) decides what the exercises are,
    their order and names (:func:`match_exercises`), so the scoreboard lists all of them however
    the learner edited the cells. Without that copy, or when ``nb`` shares no exercise cell with
    it, the notebook's own nbgrader metadata is read (what ``nbgrader autograde`` reads), and
    only where it has none the ``### BEGIN SOLUTION`` / ``# YOUR CODE HERE`` markers.
    """
    path = Path(path)
    reference, where = reference_lesson(path)
    if reference is not None:
        ref_roles = metadata_roles(reference)
        ids = {r.grade_id for r in ref_roles if r is not None}
        checks = [reference.cells[e.cells[-1]].source
                  for e in find_exercises(reference, ref_roles)]
        related = any(r is not None and r.grade_id in ids for r in metadata_roles(nb)) or any(
            _same_source(c.source, s) for c in nb.cells if c.cell_type == "code" for s in checks)
        if related:
            exercises, notes = match_exercises(nb, reference)
            if Path(where).name != path.name:
                notes.insert(0, f"graded as the course's lesson {Path(where).name} ({where})")
            return exercises, notes
        where = (f"{path.name} has none of the exercise cells of the course's lesson "
                 f"{Path(where).name}")
    own = metadata_roles(nb)
    if any(r is not None for r in own):
        note = (f"{where}; exercises found by this notebook's nbgrader metadata, its check "
                "cells not compared with the course's")
        return find_exercises(nb, own), [note]
    note = (f"{where}, and this notebook has no nbgrader metadata; exercises found by their "
            "`### BEGIN SOLUTION` or `# YOUR CODE HERE` markers (one whose markers were "
            "replaced is not counted)")
    return find_exercises(nb), [note]


def _one_line(text: str) -> str:
    return _short(text.strip().splitlines()[0] if text.strip() else "", 200)


def read_gradable(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook to grade. Raises :class:`NotGradableError`, with a one-line message, for a
    missing file, a folder, a file that is not a notebook (or is malformed JSON), and a notebook
    of another course (no code cell uses ``mnist_course``, or none calls ``checks.check_...``
    and no cell has nbgrader's ``grade`` metadata)."""
    path = Path(path)
    example = "give the path of a lesson, for example lessons/00_data.ipynb"
    if not path.exists():
        raise NotGradableError(f"{path}: no such notebook; {example}")
    if path.is_dir():
        raise NotGradableError(f"{path} is a folder; {example}")
    if path.suffix != ".ipynb":
        raise NotGradableError(f"{path} is not a Jupyter notebook (.ipynb); {example}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise NotGradableError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise NotGradableError(f"{path} is not a Jupyter notebook: it is not text (a notebook "
                               "is JSON in UTF-8)") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotGradableError(f"{path} is not a Jupyter notebook: its JSON is malformed at line "
                               f"{exc.lineno}, column {exc.colno} ({exc.msg}); was it damaged? "
                               "Restore it, or copy the lesson again") from None
    if not isinstance(content, dict) or "nbformat" not in content:
        raise NotGradableError(f"{path} is JSON but not a Jupyter notebook (it has no nbformat "
                               "version)")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001 (nbformat and jsonschema raise many kinds)
        raise NotGradableError(f"{path} is not a valid Jupyter notebook: "
                               f"{_one_line(str(exc)) or type(exc).__name__}") from None
    code = [c.get("source", "") for c in nb.cells if c.get("cell_type") == "code"]
    graded = any(_CHECK_CALL.search(src) for src in code) or any(  # or all its checks deleted
        c.get("metadata", {}).get("nbgrader", {}).get("grade") for c in nb.cells)
    if not graded or not any("mnist_course" in src for src in code):
        raise NotGradableError(f"{path} is not a notebook of this course: no code cell calls "
                               "mnist_course's checks.check_..., so it has no exercises to "
                               "grade")
    return nb


def _failure_text(ename: str, evalue: str) -> str:
    """``ename: first line of evalue`` (a stub's empty NotImplementedError gets words)."""
    first = re.sub(r"\((?:\S+[/\\])?\d+\.py, (line \d+)\)", r"(\1)", _one_line(evalue))
    if not first and ename == "NotImplementedError":
        first = "still a stub: replace `raise NotImplementedError()` with your code"
    return f"{ename}: {first}" if first else ename


def grade(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int = CHECK_TIMEOUT,
          progress: str | None = None, exercises: list[Exercise] | None = None) -> dict:
    """Run every cell of ``nb`` (in place) in a fresh kernel in ``cwd``, past failures, and grade
    its exercises (default: :func:`find_exercises` of ``nb``).

    Returns ``{"exercises": [(name, failure), ...], "others": [(cell index, failure), ...]}``:
    a failure is None (passed) or ``(ename, "ename: first line of the error")``, for an exercise
    its ``problem`` (ename ``CheckCell``) or else the error of its first failing cell; "others"
    are the failing cells outside any exercise.
    """
    if exercises is None:
        exercises = find_exercises(nb)
    failures, stopped = execute_cells(nb, cwd, timeout=timeout, progress=progress, keep_going=True)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    results = []
    in_exercise = set()
    for ex in exercises:
        in_exercise.update(ex.cells)
        failed = [i for i in ex.cells if i in failures]
        if ex.problem:
            results.append((ex.name, ("CheckCell", ex.problem)))
        elif failed:
            ename, evalue = failures[failed[0]]
            results.append((ex.name, (ename, _failure_text(ename, evalue))))
        elif stopped is not None and ex.cells and ex.cells[-1] > stopped:
            died = code_cells.index(stopped) + 1
            results.append((ex.name, ("", f"not run: the kernel died in code cell {died}")))
        else:
            results.append((ex.name, None))
    others = [(i, (ename, _failure_text(ename, evalue)))
              for i, (ename, evalue) in failures.items() if i not in in_exercise]
    return {"exercises": results, "others": others}


def check_command(notebook: str, timeout: int = CHECK_TIMEOUT) -> int:
    """``mnist-course check NOTEBOOK``: run a learner's notebook in a fresh kernel (in its own
    folder; the file is not changed), past any failing cell, and print one line per exercise of
    the lesson, ``✓ name`` or ``✗ name — error``, then ``score: K/N exercises pass``.

    N is the number of exercises of the course's lesson, whatever the learner did to the cells
    (see :func:`exercises_to_grade`); what had to be assumed to find them is printed as
    ``note:`` lines. Cells outside the exercises that fail are listed but do not count. Returns
    0 when all N exercises pass, else 1. Raises :class:`NotGradableError` (exit status 2) for a
    file that cannot be graded, or in which no exercise can be found.
    """
    import importlib.util

    path = Path(notebook)
    nb = read_gradable(path)
    missing = [m for m in ("nbclient", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        raise NotebookError(f"grading needs {' and '.join(missing)}: install the course with its "
                            "dev extras (pip install -e '.[dev]', or make test)")
    exercises, notes = exercises_to_grade(nb, path)
    if not exercises:
        raise NotGradableError(f"{path}: no exercise found in it ({notes[-1]})")
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    number = {index: n for n, index in enumerate(code_cells, start=1)}
    print(f"checking {path}: {len(exercises)} exercises, {len(code_cells)} code cells, run in a "
          "fresh kernel (a failing cell does not stop the others)", flush=True)
    for note in notes:
        print(f"note: {note}", flush=True)
    report = grade(nb, path.parent.resolve(), timeout=timeout, progress=path.name,
                   exercises=exercises)

    passed = 0
    shown = set()  # the exception names shown, for the hints
    for name, failure in report["exercises"]:
        if failure is None:
            passed += 1
            print(f"✓ {name}")
        else:
            shown.add(failure[0])
            print(f"✗ {name} — {failure[1]}")
    others = report["others"]
    if others:
        print(f"other cells that failed ({len(others)}; not scored, but read them):")
        for index, failure in others[:3]:
            lines = [ln for ln in nb.cells[index].source.split("\n")
                     if ln.strip() and not ln.lstrip().startswith("#")]
            source = _short(lines[0] if lines else "", 50)
            shown.add(failure[0])
            print(f"  code cell {number[index]} of {len(code_cells)} ({source}) — {failure[1]}")
        if len(others) > 3:
            print(f"  ... and {len(others) - 3} more")
    for ename in sorted(shown):
        if ename in HINTS:
            print(f"hint: {HINTS[ename]}")
    total = len(report["exercises"])
    print(f"score: {passed}/{total} exercises pass")
    return 0 if passed == total else 1
