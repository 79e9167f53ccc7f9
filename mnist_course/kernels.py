"""Kernel runs: a notebook's cells executed in order in a fresh kernel of the current environment.

:func:`execute_cells` is the one runner: it stops at the first failing cell, or (``keep_going``)
runs every cell, interrupting one that runs past its timeout and noting a dead kernel, which
``mnist-course check`` needs to grade every exercise. The kernel is always the ``python3`` of
this environment, so a stray user-level kernelspec is never used, and it runs without
``MPLBACKEND`` so figures render inline as in Jupyter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat

from mnist_course import live_progress
from mnist_course.notebook_io import read_notebook

__all__ = ["EXECUTE_TIMEOUT", "execute_cells", "first_error", "kernel_env", "run_cells"]

EXECUTE_TIMEOUT = 3600  # seconds per cell: training cells on a small CPU are slow


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


def execute_cells(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int, stop_at: int | None = None,
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
    failures, _ = execute_cells(nb, cwd, timeout=timeout, stop_at=stop_at, progress=progress)
    for index, (ename, evalue) in failures.items():
        return index, ename, evalue
    return None


def first_error(path: str | Path, *, timeout: int = 600):
    """Run a notebook (a copy in memory; the file is not changed) in its own folder until its
    first error. Returns ``(cell_index, ename, evalue)``, or None when every cell ran."""
    path = Path(path)
    return run_cells(read_notebook(path), path.parent.resolve(), timeout=timeout)
