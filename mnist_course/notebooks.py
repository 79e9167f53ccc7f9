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
- **Grading.** ``mnist-course check NOTEBOOK`` runs nbval on one notebook in a pytest subprocess
  and prints a short verdict: every cell ran, or which cell failed, its error and a hint.
- **Executing solutions for the web.** ``python -m mnist_course.notebooks execute PATH...`` runs
  each notebook in place with nbclient, then cleans the outputs so they read well on GitHub:
  a progress bar keeps only its final state, consecutive stream outputs are merged, volatile
  metadata is dropped. A notebook whose outputs show an absolute machine path is not saved.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat

from mnist_course import CourseError

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
    path.write_bytes(text.encode("utf-8"))


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


def run_cells(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int = EXECUTE_TIMEOUT,
              stop_at: int | None = None, progress: str | None = None):
    """Execute the cells of ``nb`` in order, in place, in a fresh python3 kernel run in ``cwd``.

    Stops at the first cell that raises (cells tagged ``raises-exception`` may raise) and
    returns ``(index, ename, evalue)`` for it; returns None when every cell ran. ``stop_at``
    ends the run before that cell index. ``progress`` is a tqdm label (None: no bar).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    cells = list(enumerate(nb.cells))[:stop_at]
    bar = None
    if progress:
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
                    return index, exc.ename, exc.evalue
                finally:
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
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
# Grading one notebook with nbval
# --------------------------------------------------------------------------------------------

_EXC_LINE = re.compile(r"([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit))\b:?")
# Escape codes of coloured tracebacks (the JUnit XML writes ESC as "#x1B").
_ANSI = re.compile(r"(\x1b|#x1B)\[[0-9;?]*[A-Za-z]")
HINTS = {
    "NotImplementedError": "an exercise is still a stub: replace `raise NotImplementedError()` "
                           "with your code",
    "AssertionError": "a check did not pass: read its message, fix the exercise above it, and "
                      "run the cells again",
    "NameError": "a name is not defined: run the cells above in order (Kernel > Restart & Run "
                 "All), and keep the names the lesson uses",
    "ModuleNotFoundError": "a package is missing: use the course environment (make test, or "
                           "pip install -e '.[dev]')",
    "ImportError": "an import failed: use the course environment (pip install -e '.[dev]')",
    "Timeout": "a cell ran for too long: look for an endless loop, or a very slow version of a "
               "vectorised exercise",
    "outputs differ": "the cell printed something other than what your saved notebook shows: "
                      "restart the kernel, run all cells, save, and check again",
}


def _failure_details(text: str) -> tuple[str, str]:
    """(last line of the error, hint key) from nbval's failure report."""
    text = _ANSI.sub("", text)
    if "Cell outputs differ" in text:
        return "the cell's output differs from the one saved in the notebook", "outputs differ"
    if "Timeout of" in text:
        line = next(ln for ln in text.splitlines() if "Timeout of" in ln)
        return line.strip(), "Timeout"
    lines = [ln.rstrip() for ln in text.split("Traceback:", 1)[-1].splitlines() if ln.strip()]
    if not lines:
        return "the cell raised an error", ""
    start = len(lines) - 1
    for i in range(len(lines) - 1, -1, -1):
        if _EXC_LINE.match(lines[i].strip()):
            start = i
            break
    message = "\n  ".join(ln.strip() for ln in lines[start:start + 6])
    match = _EXC_LINE.match(lines[start].strip())
    key = match.group(1).rsplit(".", 1)[-1] if match else ""
    return message.rstrip(":").strip(), key


def _short_source(source: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip()]
    first = lines[0].strip() if lines else "(empty)"
    return first if len(first) <= 70 else first[:67] + "..."


def check_command(notebook: str) -> int:
    """``mnist-course check NOTEBOOK``: run nbval (lax, current env) on one notebook, in a pytest
    subprocess, and print a short verdict. Returns 0 when every cell ran, else 1."""
    import importlib.util

    path = Path(notebook)
    missing = [m for m in ("pytest", "nbval") if importlib.util.find_spec(m) is None]
    if missing:
        raise NotebookError(f"grading needs {' and '.join(missing)}: install the course with its "
                            "dev extras (pip install -e '.[dev]', or make test)")
    if not path.is_file():
        raise NotebookError(f"{notebook}: no such notebook; give the path of a lesson, for "
                            "example lessons/00_data.ipynb")
    if path.suffix != ".ipynb":
        raise NotebookError(f"{notebook} is not a Jupyter notebook (.ipynb)")
    nb = read_notebook(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    print(f"checking {path}: {len(code)} code cells, run with nbval in a fresh kernel "
          "(stops at the first failure)")

    with tempfile.TemporaryDirectory(prefix="mnist-course-check-") as tmp:
        ini, junit = Path(tmp) / "pytest.ini", Path(tmp) / "report.xml"
        ini.write_text("[pytest]\n")
        cmd = [sys.executable, "-m", "pytest", str(path.resolve()),
               "-c", str(ini), "--rootdir", str(path.parent.resolve()), "--noconftest",
               "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               f"--nbval-cell-timeout={CHECK_TIMEOUT}", "-x", "-v", "--tb=no", "--color=no",
               "-W", "ignore::DeprecationWarning", f"--junitxml={junit}"]
        env = kernel_env()
        env["PYTHONUNBUFFERED"] = "1"
        lines = _run_with_progress(cmd, env, total=len(code), label=path.name)
        results = _read_junit(junit)

    if not results:
        tail = "\n".join(lines[-15:])
        raise NotebookError(f"nbval could not run {path}:\n{tail}")
    failed = [r for r in results if r["status"] == "failed"]
    skipped = sum(r["status"] == "skipped" for r in results)
    ran = sum(r["status"] == "passed" for r in results)
    if not failed:
        extra = f" ({skipped} skipped)" if skipped else ""
        print(f"✓ {path}: all {ran} cells ran{extra}")
        return 0
    fail = failed[0]
    number = fail["cell"]
    last, key = _failure_details(fail["text"])
    source = _short_source(code[number].source) if number < len(code) else ""
    print(f"✗ {path}: code cell {number + 1} of {len(code)} failed "
          f"({ran} cell(s) before it ran)")
    if source:
        print(f"  cell starts: {source}")
    print(f"  {last}")
    if key in HINTS:
        print(f"  hint: {HINTS[key]}")
    return 1


def _run_with_progress(cmd: list[str], env: dict, total: int, label: str) -> list[str]:
    """Run pytest -v, show a progress bar of finished cells, return its output lines."""
    from tqdm import tqdm

    lines = []
    bar = tqdm(total=total, desc=label, unit="cell", leave=True, ncols=80, mininterval=0.5,
               file=sys.stderr)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, encoding="utf-8", errors="replace") as proc:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if re.search(r"::Cell \d+ (PASSED|FAILED|SKIPPED|ERROR)", line):
                bar.update()
    bar.close()
    return lines


def _read_junit(junit: Path) -> list[dict]:
    """Per-cell results from pytest's JUnit XML: cell number, status and failure text."""
    if not junit.is_file():
        return []
    results = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        match = re.search(r"Cell (\d+)$", case.get("name", ""))
        if not match:
            continue
        status, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
                text = (child.get("message") or "") + "\n" + (child.text or "")
                break
            if child.tag == "skipped":
                status = "skipped"
        results.append({"cell": int(match.group(1)), "status": status, "text": text})
    return results


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
