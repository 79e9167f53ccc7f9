"""Two things for pytest: MNIST before the solution notebooks, and units of work for xdist.

- Before any of them runs, make sure MNIST is available, once. Without the data every notebook
  would fail on its own; this turns that into one clear message. The check runs only when
  notebooks were collected (``pytest tests/...`` is not affected).
- Under pytest-xdist with ``--dist loadgroup`` (``make test``), tests are handed out in units of
  work (:func:`work_unit`), those with the most tests first. Each notebook is one unit, so its cells run in order
  in one kernel on one worker while the other worker runs another notebook or the unit tests.
  Lessons 01, 03 and 06 are one unit, in that order: lesson 03 reads the MLP that lesson 01
  saves, and lesson 06 the CNN that lesson 03 saves. A test file whose tests share an expensive
  session fixture (:data:`_TOGETHER`) is one unit too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HOW_TO = (
    "MNIST is not in the cache ({where}) and MNIST_COURSE_MIRRORS is not set, so the solution "
    "notebooks cannot run. The tests never download from the internet; point them at a local "
    "copy of the four .gz files, e.g.\n"
    '    export MNIST_COURSE_MIRRORS="file://$(cd ../shared/data/mnist && pwd)"\n'
    "(or set MNIST_COURSE_DATA to a folder whose MNIST/raw/ holds the uncompressed files)."
)


def _notebooks_collected(items) -> bool:
    return any(str(getattr(item, "path", item.fspath)).endswith(".ipynb") for item in items)


#: Notebooks that read what an earlier one wrote: one work unit, run in this order.
_CHAINED = ("01_", "03_", "06_")
#: Test files whose tests share an expensive session fixture: one work unit each.
_TOGETHER = ("tests/test_draw.py",)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to under ``make test``'s two pytest-xdist workers: a
    whole notebook (its cells share one kernel), lessons 01, 03 and 06 together, a file of
    :data:`_TOGETHER`, or else the test alone."""
    path = nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        return "notebooks 01, 03, 06" if path.rsplit("/", 1)[-1].startswith(_CHAINED) else path
    return path if path.endswith(_TOGETHER) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` groups by :func:`work_unit`. (pytest-xdist's own loadgroup reads
    ``xdist_group`` marks from node ids it rewrites, which pytest 9.2 no longer allows: its
    issue 1386. Units with the most tests are taken first, so the notebooks start at once and the
    unit tests fill the gaps.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return CourseScheduling(config, log)


def _runs_solutions(config) -> bool:
    """Whether this run may collect notebooks of solutions/ (its own folder, a notebook in it,
    the repository root, or no path at all, which means the testpaths)."""
    here = Path(__file__).parent.resolve()
    solutions = here / "solutions"
    for arg in config.args or ["."]:
        path = (Path(config.invocation_params.dir) / arg.split("::", 1)[0]).resolve()
        if path == here or path == solutions or solutions in path.parents:
            return True
    return False


def pytest_configure(config):
    """Before any worker starts: make ``solutions/mine`` (the learner's package as the solution
    notebooks save it) from the solutions' own save cells, in seconds, so that every notebook can
    run alone, on either worker, in any order (see :func:`mnist_course.keep.build`)."""
    if hasattr(config, "workerinput") or not _runs_solutions(config):
        return
    from mnist_course import keep

    if keep.main(["build", str(Path(__file__).parent / "solutions")]) != 0:
        raise pytest.UsageError("could not build solutions/mine from the solution notebooks")


def pytest_collection_finish(session):
    if session.config.option.collectonly or not _notebooks_collected(session.items):
        return
    from mnist_course import data

    if data.is_cached():
        return
    if not os.environ.get("MNIST_COURSE_MIRRORS", "").strip():
        pytest.exit(_HOW_TO.format(where=data.display_path(data.raw_dir())), returncode=1)
    try:
        data.fetch_mnist(progress=False)
    except data.DataError as exc:
        pytest.exit(f"could not fetch MNIST for the solution notebooks:\n{exc}", returncode=1)
