"""The notebook machinery: lessons generated from solutions, grading, executing solutions.

Three jobs, one idea each:

- **Lessons from solutions.** ``solutions/NN_x.ipynb`` is the source of truth. Its nbgrader regions
  (``### BEGIN SOLUTION`` ... ``### END SOLUTION``) become a stub in ``lessons/NN_x.ipynb``::

      def relu_forward(x):                      def relu_forward(x):
          ### BEGIN SOLUTION                        # YOUR CODE HERE
          out = np.maximum(0, x)         -->        raise NotImplementedError()
          ### END SOLUTION                        return out, x
          return out, x

  In a markdown cell the region becomes ``YOUR ANSWER HERE``. Outputs and execution counts are
  cleared and the metadata normalised, so the same solution always gives the same bytes
  (``mnist-course lessons``; ``--check`` only compares).
- **Grading.** ``mnist-course check NOTEBOOK`` runs a learner's notebook in a fresh kernel, past
  any failing cell, and prints one line per exercise (a solution cell and the cell that checks
  it: see :func:`find_exercises`), ✓ or ✗ with the first line of the error, then
  ``score: K/N exercises pass``. A file that is not a notebook of this course exits with 2.
- **Executing solutions for the web.** ``python -m mnist_course.notebooks execute PATH...`` runs
  each notebook in place with nbclient, then cleans the outputs so they read well on GitHub:
  a progress bar keeps only its final state, consecutive stream outputs are merged, volatile
  metadata is dropped. A notebook whose outputs show an absolute machine path is not saved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat

from mnist_course import CourseError, live_progress
from mnist_course._atomic import atomic_write

__all__ = [
    "Exercise", "NotGradableError", "NotebookError", "check_command", "clean_notebook",
    "clean_outputs", "clean_stream_text", "execute_notebook", "find_exercises",
    "find_machine_paths", "first_error", "grade", "has_solution", "is_solution_cell", "kernel_env",
    "lesson_text", "lessons_command", "main", "make_lesson", "read_gradable", "read_notebook",
    "render", "run_cells", "strip_solutions"
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"

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
# Output strings that must never reach a committed notebook.
MACHINE_PATHS = ("/work/", "/root/", "/tmp/", "/home/", "../shared")
TEXT_MIME_PREFIXES = ("text/", "application/json", "application/javascript")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
EXECUTE_TIMEOUT = 3600  # seconds per cell: training cells on a small CPU are slow
CHECK_TIMEOUT = 3600


class NotebookError(CourseError):
    """A notebook cannot be turned into a lesson, graded or executed; the message says why."""


# --------------------------------------------------------------------------------------------
# Lessons from solutions
# --------------------------------------------------------------------------------------------

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


def _cell_id(name: str, index: int, taken: set[str]) -> str:
    """A deterministic id for a cell that has none (derived from notebook name and index)."""
    digest = hashlib.sha1(f"{name}:{index}".encode()).hexdigest()
    cid, n = digest[:8], 8
    while cid in taken:
        n += 1
        cid = digest[:n]
    return cid


def _normalise_metadata(nb: nbformat.NotebookNode, name: str) -> None:
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
    from mnist_course import grading  # here: grading imports this module

    grading.annotate(nb, name)  # nbgrader metadata, computed from the sources


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
    _normalise_metadata(lesson, name)
    return lesson


def _deepcopy(node):
    if isinstance(node, dict):
        return {k: _deepcopy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deepcopy(v) for v in node]
    return node


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


def lesson_text(solution_path: Path) -> str:
    """The exact text of the lesson generated from one solution file."""
    solution = read_notebook(solution_path)
    return render(make_lesson(solution, name=str(solution_path)))


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:   # an interrupted save never leaves half a notebook
        f.write(text.encode("utf-8"))


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
        _write_text(les_dir / n, expected[n])
    for n in extra:
        existing[n].unlink()
    unchanged = len(expected) - len(missing) - len(differ)
    print(f"{les_dir}/: {len(missing) + len(differ)} written, {unchanged} unchanged, "
          f"{len(extra)} removed (from {len(expected)} solutions in {sol_dir}/)")
    return 0


# --------------------------------------------------------------------------------------------
# Kernels of the current environment (so a stray user-level "python3" kernelspec is not used)
# --------------------------------------------------------------------------------------------

def _kernel_manager():
    import ipykernel.kernelspec
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class _CurrentEnv(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES,
                              **ipykernel.kernelspec.get_kernel_dict())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_CurrentEnv())


def kernel_env() -> dict[str, str]:
    """Environment for notebook kernels: ours, without MPLBACKEND (so figures render inline, as
    in Jupyter, even where a test run or CI sets MPLBACKEND=Agg)."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    return env


_DEAD_KERNEL = "the kernel died in this cell (out of memory, or a crash in compiled code)"


def _execute(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int, stop_at: int | None = None,
             progress: str | None = None, keep_going: bool = False):
    """Run the cells of ``nb`` in order, in place, in a fresh python3 kernel run in ``cwd``.

    Returns ``(failures, stopped)``: ``failures`` maps the index of each cell that raised to
    ``(ename, evalue)`` (cells tagged ``raises-exception`` may raise). Without ``keep_going``
    the run stops at the first failure. With it, every cell runs; a cell that runs past
    ``timeout`` is interrupted and fails as ``Timeout``, and a dead kernel ends the run:
    ``stopped`` is then the index of the cell it died in (else None).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    options = {}
    if keep_going:
        options = {"interrupt_on_timeout": True,
                   "error_on_timeout": {"ename": "Timeout", "traceback": [],
                                        "evalue": f"the cell ran for more than {timeout} s "
                                                  "and was interrupted"}}
    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"], **options)
    cells = list(enumerate(nb.cells))[:stop_at]
    failures: dict[int, tuple[str, str]] = {}
    stopped = None
    bar = None
    if progress and live_progress():
        from tqdm import tqdm
        bar = tqdm(total=len(cells), desc=progress, unit="cell", leave=True, ncols=80,
                   mininterval=0.5, file=sys.stderr)
    try:
        # cleanup_kc: shut the kernel down afterwards, although we made its manager.
        with client.setup_kernel(env=kernel_env(), cleanup_kc=True):
            for index, cell in cells:
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as exc:
                    failures[index] = (exc.ename, exc.evalue)
                    if not keep_going:
                        break
                except DeadKernelError:
                    if not keep_going:
                        raise
                    failures[index] = ("DeadKernelError", _DEAD_KERNEL)
                    stopped = index
                    break
                finally:
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
    return failures, stopped


def run_cells(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int = EXECUTE_TIMEOUT,
              stop_at: int | None = None, progress: str | None = None):
    """Execute the cells of ``nb`` in order, in place, in a fresh python3 kernel run in ``cwd``.

    Stops at the first cell that raises (cells tagged ``raises-exception`` may raise) and
    returns ``(index, ename, evalue)`` for it; returns None when every cell ran. ``stop_at``
    ends the run before that cell index. ``progress`` is a tqdm label (None: no bar).
    """
    failures, _ = _execute(nb, cwd, timeout=timeout, stop_at=stop_at, progress=progress)
    for index, (ename, evalue) in failures.items():
        return index, ename, evalue
    return None


def first_error(path: str | Path, *, timeout: int = 600):
    """Run a notebook (a copy in memory; the file is not changed) in its own folder until its
    first error. Returns ``(cell_index, ename, evalue)``, or None when every cell ran."""
    path = Path(path)
    return run_cells(read_notebook(path), path.parent.resolve(), timeout=timeout)


# --------------------------------------------------------------------------------------------
# Cleaning executed outputs for the web
# --------------------------------------------------------------------------------------------

_CURSOR_CODES = re.compile(r"\x1b\[[0-9;?]*[ABCDEFGHJKSTfhlsu]")


def clean_stream_text(text: str) -> str:
    """Terminal text as it finally looks: what a ``\\r`` overwrote is dropped, so a progress bar
    keeps one line, its final state. Cursor-movement escape codes are removed."""
    text = _CURSOR_CODES.sub("", text.replace("\r\n", "\n"))
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            states = [s for s in line.split("\r") if s.strip()]
            if not states:
                continue
            line = states[-1].rstrip()
        lines.append(line)
    return "\n".join(lines)


_CELL_FILE = re.compile(r"\S*ipykernel_\d+[/\\]\d+\.py")


def _path_shortener(notebook_dir: Path):
    """Rewrite absolute paths in warnings and tracebacks: the repository becomes relative, the
    home folder ``~``. (Only stderr and error outputs; elsewhere a machine path is an error.)"""
    repo = notebook_dir.resolve().parent
    pairs = [(str(repo) + os.sep, ""), (str(Path(sys.prefix).resolve()) + os.sep, "<env>/"),
             (str(Path.home()) + os.sep, "~/")]
    pairs = sorted({a: b for a, b in pairs if len(a) > 1}.items(), key=lambda p: -len(p[0]))

    def shorten(text: str) -> str:
        text = _CELL_FILE.sub("<cell>", text)
        for long, short in pairs:
            text = text.replace(long, short)
        return text
    return shorten


def clean_outputs(nb: nbformat.NotebookNode, shorten=None) -> nbformat.NotebookNode:
    """Make executed outputs fit for the web, in place: consecutive stream outputs of the same
    name are merged, ``\\r`` progress bars keep their final line, empty streams and widget
    views are dropped. ``shorten`` (optional) rewrites stderr and tracebacks."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.outputs:
            if (out.output_type == "stream" and merged
                    and merged[-1].output_type == "stream" and merged[-1].name == out.name):
                merged[-1].text += out.text
            else:
                merged.append(out)
        outputs = []
        for out in merged:
            if out.output_type == "stream":
                out.text = clean_stream_text(out.text)
                if shorten and out.name == "stderr":
                    out.text = shorten(out.text)
                if not out.text.strip():
                    continue
            elif out.output_type in ("display_data", "execute_result"):
                out.data.pop(WIDGET_MIME, None)
                out.metadata = nbformat.from_dict(
                    {k: v for k, v in out.get("metadata", {}).items() if k != "widgets"})
                if not out.data:
                    continue
            elif out.output_type == "error" and shorten:
                out.evalue = shorten(out.evalue)
                out.traceback = [shorten(t) for t in out.traceback]
            outputs.append(out)
        cell.outputs = outputs
    return nb


def _output_texts(out):
    if out.output_type == "stream":
        yield out.text
    elif out.output_type == "error":
        yield out.evalue
        yield from out.traceback
    else:
        for mime, value in out.get("data", {}).items():
            if mime.startswith(TEXT_MIME_PREFIXES) or mime.endswith(("+json", "+xml")):
                yield value if isinstance(value, str) else str(value)


def find_machine_paths(nb: nbformat.NotebookNode) -> list[str]:
    """Where a notebook's outputs show an absolute machine path: ``["cell 3: ...", ...]``."""
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            for text in _output_texts(out):
                for line in text.split("\n"):
                    if any(p in line for p in MACHINE_PATHS):
                        found.append(f"cell {index}: {line.strip()[:160]}")
    return found


def execute_notebook(path: str | Path, *, timeout: int = EXECUTE_TIMEOUT,
                     progress: bool = True) -> float:
    """Execute a notebook in place (kernel python3, cwd = its folder) and save it cleaned.

    Raises NotebookError, and leaves the file untouched, when a cell raises or when the
    outputs show an absolute machine path. Returns the seconds the run took.
    """
    path = Path(path)
    nb = read_notebook(path)
    start = time.perf_counter()
    failure = run_cells(nb, path.parent.resolve(), timeout=timeout,
                        progress=path.name if progress else None)
    seconds = time.perf_counter() - start
    if failure:
        index, ename, evalue = failure
        raise NotebookError(f"{path}: cell {index} raised {ename}: {evalue}\n"
                            "The notebook was not saved; fix the cell and run it again.")
    clean_outputs(nb, _path_shortener(path.parent))
    _normalise_metadata(nb, path.name)
    found = find_machine_paths(nb)
    if found:
        listing = "\n  ".join(found[:10])
        raise NotebookError(
            f"{path}: the outputs show an absolute machine path, which must not be committed:\n"
            f"  {listing}\nPrint paths relative to the home folder (~/...) or to the notebook. "
            "The notebook was not saved.")
    _write_text(path, render(nb))
    return seconds


def clean_notebook(path: str | Path) -> None:
    """Clean the outputs and metadata of an already executed notebook, in place."""
    path = Path(path)
    nb = read_notebook(path)
    clean_outputs(nb, _path_shortener(path.parent))
    _normalise_metadata(nb, path.name)
    found = find_machine_paths(nb)
    if found:
        listing = "\n  ".join(found[:10])
        raise NotebookError(f"{path}: the outputs show an absolute machine path:\n  {listing}\n"
                            "Print paths relative to ~ instead. The notebook was not saved.")
    _write_text(path, render(nb))


# --------------------------------------------------------------------------------------------
# Grading one notebook: every exercise, run past failures
# --------------------------------------------------------------------------------------------

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
}


class Exercise:
    """One graded exercise of a notebook: its solution cells and the cell that checks them."""

    def __init__(self, name: str, cells: list[int]):
        self.name = name
        self.cells = cells  # indices into nb.cells: the solution cells, then the check cell

    def __repr__(self) -> str:
        return f"Exercise({self.name!r}, cells={self.cells})"


def is_solution_cell(source: str) -> bool:
    """A cell the learner fills in: an nbgrader region (solutions/) or its stub (lessons/)."""
    return has_solution(source) or any(ln.strip() == CODE_STUB[0] for ln in source.split("\n"))


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


def find_exercises(nb: nbformat.NotebookNode) -> list[Exercise]:
    """The exercises of a lesson or solution notebook, in order.

    An exercise is one or more solution cells (a ``### BEGIN SOLUTION`` region, or its
    ``# YOUR CODE HERE`` stub) and the code cell that checks them: the cells nbgrader sees as
    solution cells and their autograded test cell, by the one rule of
    :func:`mnist_course.grading.roles`. Written answers (markdown) are graded by a person and
    are not listed.

    An exercise is named by the last markdown heading that says "Exercise" since the previous
    exercise (section numbers and markup removed), else by its check call, else by the names
    its solution cells define.
    """
    from mnist_course.grading import roles  # grading imports this module

    exercises: list[Exercise] = []
    pending: list[int] = []      # solution cells waiting for their test cell
    heading = None               # the latest "Exercise" heading since the last exercise
    for index, (cell, role) in enumerate(zip(nb.cells, roles(nb))):
        if cell.cell_type == "markdown":
            for text in _HEADING.findall(cell.source):
                if "exercise" in text.lower():
                    heading = _clean_heading(text)
        elif role is not None and role.kind == "solution":
            pending.append(index)
        elif role is not None and role.kind == "test":
            name = heading
            if name is None and _CHECK_CALL.search(cell.source):
                name = _check_call_name(cell.source)
            if name is None:
                defined = [m for i in pending for m in _DEFINES.findall(nb.cells[i].source)]
                name = ", ".join(defined) or f"the exercise before code cell {index}"
            exercises.append(Exercise(name, [*pending, index]))
            pending, heading = [], None
    return exercises


def _one_line(text: str) -> str:
    return _short(text.strip().splitlines()[0] if text.strip() else "", 200)


def read_gradable(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook to grade. Raises :class:`NotGradableError`, with a one-line message, for a
    missing file, a folder, a file that is not a notebook (or is malformed JSON), and a notebook
    of another course (no code cell calls ``checks.check_...``)."""
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
    if not any(_CHECK_CALL.search(src) for src in code) or not any(
            "mnist_course" in src for src in code):
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
          progress: str | None = None) -> dict:
    """Run every cell of ``nb`` (in place) in a fresh kernel in ``cwd``, past failures, and grade
    its exercises.

    Returns ``{"exercises": [(name, failure), ...], "others": [(cell index, failure), ...]}``:
    a failure is None (passed) or ``(ename, "ename: first line of the error")``, for an exercise
    the error of its first failing cell; "others" are the failing cells outside any exercise.
    """
    exercises = find_exercises(nb)
    failures, stopped = _execute(nb, cwd, timeout=timeout, progress=progress, keep_going=True)
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    results = []
    in_exercise = set()
    for ex in exercises:
        in_exercise.update(ex.cells)
        failed = [i for i in ex.cells if i in failures]
        if failed:
            ename, evalue = failures[failed[0]]
            results.append((ex.name, (ename, _failure_text(ename, evalue))))
        elif stopped is not None and ex.cells[-1] > stopped:
            died = code_cells.index(stopped) + 1
            results.append((ex.name, ("", f"not run: the kernel died in code cell {died}")))
        else:
            results.append((ex.name, None))
    others = [(i, (ename, _failure_text(ename, evalue)))
              for i, (ename, evalue) in failures.items() if i not in in_exercise]
    return {"exercises": results, "others": others}


def check_command(notebook: str, timeout: int = CHECK_TIMEOUT) -> int:
    """``mnist-course check NOTEBOOK``: run a learner's notebook in a fresh kernel (in its own
    folder; the file is not changed), past any failing cell, and print one line per exercise,
    ``✓ name`` or ``✗ name — error``, then ``score: K/N exercises pass``.

    Returns 0 when every exercise passes and no other cell failed, else 1. Raises
    :class:`NotGradableError` (exit status 2) for a file that cannot be graded.
    """
    import importlib.util

    path = Path(notebook)
    nb = read_gradable(path)
    missing = [m for m in ("nbclient", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        raise NotebookError(f"grading needs {' and '.join(missing)}: install the course with its "
                            "dev extras (pip install -e '.[dev]', or make test)")
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    number = {index: n for n, index in enumerate(code_cells, start=1)}
    n_exercises = len(find_exercises(nb))
    print(f"checking {path}: {n_exercises} exercises, {len(code_cells)} code cells, run in a "
          "fresh kernel (a failing cell does not stop the others)", flush=True)
    report = grade(nb, path.parent.resolve(), timeout=timeout, progress=path.name)

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
        print(f"other cells that failed ({len(others)}):")
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
    return 0 if passed == total and not others else 1


# --------------------------------------------------------------------------------------------
# python -m mnist_course.notebooks
# --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mnist_course.notebooks",
        description="Execute solution notebooks in place and clean their outputs for the web.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    e = sub.add_parser("execute", help="run notebooks in place (cwd = their folder), clean, save")
    e.add_argument("paths", nargs="+", metavar="PATH")
    e.add_argument("--timeout", type=int, default=EXECUTE_TIMEOUT, help="seconds per cell")
    c = sub.add_parser("clean", help="clean outputs and metadata of executed notebooks, save")
    c.add_argument("paths", nargs="+", metavar="PATH")
    args = p.parse_args(argv)
    try:
        for name in args.paths:
            if args.command == "execute":
                seconds = execute_notebook(name, timeout=args.timeout)
                print(f"✓ {name}: executed in {seconds:.1f} s and saved", flush=True)
            else:
                clean_notebook(name)
                print(f"✓ {name}: cleaned", flush=True)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
