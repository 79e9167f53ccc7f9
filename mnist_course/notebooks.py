"""Executing the solution notebooks for the web (``python -m mnist_course.notebooks``).

``execute PATH...`` runs each notebook in place in a fresh kernel in its own folder
(``kernels``), then cleans the outputs (``outputs``: a progress bar keeps only its final state,
consecutive stream outputs are merged, volatile metadata is dropped) and normalises the metadata
as lesson generation does (``lessons``). A notebook whose outputs show an absolute machine path,
or in which a cell raised, is not saved. ``clean PATH...`` does the cleaning alone.

The other notebook jobs have a module each: ``notebook_io`` (read, render, atomic write),
``regions`` (solution markers and stubs), ``grading`` (nbgrader metadata), ``lessons`` (lessons
from solutions), ``kernels`` (kernel runs), ``outputs`` (cleaning) and ``scoreboard``
(``mnist-course check``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mnist_course import CourseError
from mnist_course.kernels import EXECUTE_TIMEOUT, run_cells
from mnist_course.lessons import normalise_metadata
from mnist_course.notebook_io import NotebookError, read_notebook, render, write_text
from mnist_course.outputs import clean_outputs, find_machine_paths, path_shortener

__all__ = ["clean_notebook", "execute_notebook", "main"]


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
    clean_outputs(nb, path_shortener(path.parent))
    normalise_metadata(nb, path.name)
    found = find_machine_paths(nb)
    if found:
        listing = "\n  ".join(found[:10])
        raise NotebookError(
            f"{path}: the outputs show an absolute machine path, which must not be committed:\n"
            f"  {listing}\nPrint paths relative to the home folder (~/...) or to the notebook. "
            "The notebook was not saved.")
    write_text(path, render(nb))
    return seconds


def clean_notebook(path: str | Path) -> None:
    """Clean the outputs and metadata of an already executed notebook, in place."""
    path = Path(path)
    nb = read_notebook(path)
    clean_outputs(nb, path_shortener(path.parent))
    normalise_metadata(nb, path.name)
    found = find_machine_paths(nb)
    if found:
        listing = "\n  ".join(found[:10])
        raise NotebookError(f"{path}: the outputs show an absolute machine path:\n  {listing}\n"
                            "Print paths relative to ~ instead. The notebook was not saved.")
    write_text(path, render(nb))


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
