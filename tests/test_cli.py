"""The ``mnist-course`` command: help, version, ``lessons`` and ``check``.

Each sub-command's own behaviour (data, train, demo, bench) is tested next to its module; here the
commands run as a learner runs them, in a subprocess, and errors must never show a traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mnist_course import __version__, notebooks
from mnist_course.cli import main
from mnist_course.notebooks import render

SCRIPT = str(Path(sys.executable).with_name("mnist-course"))


def run(*args: str, cwd: Path | None = None, module: bool = False):
    cmd = [sys.executable, "-m", "mnist_course", *args] if module else [SCRIPT, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
                          encoding="utf-8")


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("data", "train", "demo", "bench", "lessons", "check"):
        assert command in result.stdout


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mnist-course {__version__}"


def test_python_m_mnist_course_is_the_same_command():
    result = run("--help", module=True)
    assert result.returncode == 0, result.stderr
    assert "lessons" in result.stdout and "check" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def _write(path: Path, *cells) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=list(cells))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    path.write_text(render(nb), encoding="utf-8")
    return path


def _exercise():
    return new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
                         "    ### END SOLUTION")


def test_lessons_check_names_the_notebook_that_is_out_of_sync(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "solutions" / "01_one.ipynb", new_markdown_cell("# One"), _exercise())
    _write(tmp_path / "solutions" / "02_two.ipynb", new_markdown_cell("# Two"), _exercise())
    assert main(["lessons"]) == 0
    assert main(["lessons", "--check"]) == 0
    capsys.readouterr()

    _write(tmp_path / "solutions" / "02_two.ipynb", new_markdown_cell("# Two, edited"),
           _exercise())
    lesson = (tmp_path / "lessons" / "02_two.ipynb").read_bytes()
    assert main(["lessons", "--check"]) == 1
    out = capsys.readouterr().out
    assert "lessons/02_two.ipynb" in out and "01_one" not in out
    assert (tmp_path / "lessons" / "02_two.ipynb").read_bytes() == lesson, "--check wrote"


def test_unbalanced_markers_exit_1_without_traceback(tmp_path):
    _write(tmp_path / "solutions" / "05_bad.ipynb", new_markdown_cell("# Bad"),
           new_code_cell("### BEGIN SOLUTION\nx = 1\n"))
    result = run("lessons", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "mnist-course: error:" in result.stderr
    assert "05_bad.ipynb" in result.stderr and "cell 1" in result.stderr
    assert not (tmp_path / "lessons" / "05_bad.ipynb").exists()


def test_lessons_outside_the_repo_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["lessons"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnist-course: error:") and "repository root" in err


def test_check_a_missing_notebook(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "lessons/99_nope.ipynb"]) == 1
    assert "99_nope.ipynb: no such notebook" in capsys.readouterr().err


def test_failure_report_parsing():
    report = ("Notebook cell execution failed\nCell 1: Cell execution caused an exception\n\n"
              "Input:\nassert x == 3\n\nTraceback:\n#x1B[31m---------#x1B[39m\n"
              "#x1B[31mAssertionError#x1B[39m: x should be 3:\ncheck the cell above\n")
    last, key = notebooks._failure_details(report)
    assert last == "AssertionError: x should be 3:\n  check the cell above"
    assert key == "AssertionError"
    last, key = notebooks._failure_details("...Traceback:\nValueError\n")
    assert (last, key) == ("ValueError", "ValueError")


@pytest.mark.parametrize("cells, code, expected", [
    (["x = 2", "assert x * 2 == 4"], 0, ["✓", "all 2 cells ran"]),
    (["x = 2", "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()", "f()", "x"],
     1, ["✗", "code cell 3 of 4 failed", "cell starts: f()", "NotImplementedError",
         "hint: an exercise is still a stub"]),
], ids=["passing", "stub"])
def test_check_prints_a_short_verdict(tmp_path, cells, code, expected):
    path = _write(tmp_path / "lessons" / "01_tiny.ipynb", new_markdown_cell("# Tiny"),
                  *[new_code_cell(s) for s in cells])
    result = run("check", "lessons/01_tiny.ipynb", cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    for text in expected:
        assert text in result.stdout, result.stdout
    assert "Traceback" not in result.stdout
    assert path.exists() and not (tmp_path / "lessons" / ".pytest_cache").exists()
