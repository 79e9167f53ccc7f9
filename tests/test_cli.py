"""The ``mnist-course`` command: help, version, ``lessons`` and ``check``.

Each sub-command's own behaviour (data, train, demo, bench) is tested next to its module; here the
commands run as a learner runs them, in a subprocess, and errors must never show a traceback.
``check`` runs small notebooks written here (real checks, a few seconds each) and learner
versions of lessons 00 and 04 (about 10 s each); never a long lesson.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mnist_course import __version__, notebook_io, regions, scoreboard
from mnist_course.cli import main
from mnist_course.notebook_io import render

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = str(Path(sys.executable).with_name("mnist-course"))


def run(*args: str, cwd: Path | None = None, module: bool = False):
    cmd = [sys.executable, "-m", "mnist_course", *args] if module else [SCRIPT, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
                          encoding="utf-8")


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("data", "train", "demo", "bench", "lessons", "check", "draw"):
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


# ------------------------------------------------------------------ check: every exercise

ONE_HOT = """def one_hot(y, num_classes=10):
    y = np.asarray(y)
    ### BEGIN SOLUTION
    out = np.zeros((len(y), num_classes), dtype=np.float32)
    out[np.arange(len(y)), y] = 1.0
    ### END SOLUTION
    return out"""

RELU = """def relu_forward(x):
    ### BEGIN SOLUTION
    out = np.maximum(x, 0)
    ### END SOLUTION
    return out, x


def relu_backward(dout, cache):
    x = cache
    ### BEGIN SOLUTION
    dx = dout * (x > 0)
    ### END SOLUTION
    return dx"""

SPLIT = """def train_val_split(x, y, n_val=5000, seed=0):
    ### BEGIN SOLUTION
    order = np.random.default_rng(seed).permutation(len(x))
    val, tr = order[:n_val], order[n_val:]
    ### END SOLUTION
    return x[tr], y[tr], x[val], y[val]"""

RELU_CHECK = "check_relu(relu_forward, relu_backward)"


def _course_notebook(path: Path, relu: str = RELU, extra=()) -> Path:
    """A small notebook of this course: three exercises, each a solution cell and a check cell
    (the second one named by its check call: it has no "Exercise" heading)."""
    return _write(
        path,
        new_markdown_cell("# A tiny lesson"),
        new_code_cell("import numpy as np\nfrom mnist_course import checks"),
        new_markdown_cell("## 1. Exercise: `one_hot`\n\nEncode the labels."),
        new_code_cell(ONE_HOT),
        new_code_cell("checks.check_one_hot(one_hot)"),
        new_markdown_cell("## 2. ReLU"),
        new_code_cell(relu),
        new_code_cell("checks.check_relu(relu_forward, relu_backward)"),
        new_code_cell("assert one_hot([2], 3).tolist() == [[0, 0, 1]]  # uses exercise 1"),
        new_markdown_cell("## 3. Exercise: a validation split"),
        new_code_cell(SPLIT),
        new_code_cell("checks.check_train_val_split(train_val_split)"),
        *extra,
    )


def _check(path: Path, *args: str):
    """Run ``mnist-course check`` on ``path`` in its folder: the result and the output lines,
    without the ``note:`` lines (what was assumed; the tests that care read result.stdout)."""
    result = run("check", path.name, *args, cwd=path.parent)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    lines = result.stdout.rstrip("\n").split("\n")
    return result, [ln for ln in lines if not ln.startswith("note: ")]


def test_check_says_how_it_found_the_exercises_of_a_notebook_the_course_lacks(tmp_path):
    """No copy of this notebook in the course and no nbgrader metadata: the markers are all
    there is to go by, and the output says so."""
    result, _ = _check(_course_notebook(tmp_path / "01_tiny.ipynb"))
    notes = [ln for ln in result.stdout.split("\n") if ln.startswith("note: ")]
    assert notes == [("note: the course has no lesson named 01_tiny.ipynb (in solutions/), and "
                     "this notebook has no nbgrader metadata; exercises found by their `### "
                     "BEGIN SOLUTION` or `# YOUR CODE HERE` markers (one whose markers were "
                     "replaced is not counted)")]


def test_check_complete_notebook_scores_full_marks(tmp_path):
    result, lines = _check(_course_notebook(tmp_path / "01_tiny.ipynb"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[0].startswith("checking 01_tiny.ipynb: 3 exercises")
    assert lines[1:] == ["✓ Exercise: one_hot", f"✓ {RELU_CHECK}",
                         "✓ Exercise: a validation split", "score: 3/3 exercises pass"]


def test_check_reports_every_broken_exercise_and_goes_on(tmp_path):
    """A stub, then a wrong gradient: each gets its own ✗ line, and the exercise after them is
    still checked."""
    stub = ONE_HOT.split("    ### BEGIN")[0] + "    # YOUR CODE HERE\n    raise NotImplementedError()"
    path = _write(
        tmp_path / "01_tiny.ipynb",
        new_code_cell("import numpy as np\nfrom mnist_course import checks"),
        new_markdown_cell("## 1. Exercise: `one_hot`"),
        new_code_cell(stub),
        new_code_cell("checks.check_one_hot(one_hot)"),
        new_code_cell(RELU.replace("    dx = dout * (x > 0)", "    dx = dout")),
        new_code_cell("checks.check_relu(relu_forward, relu_backward)"),
        new_markdown_cell("## 3. Exercise: a validation split"),
        new_code_cell(SPLIT),
        new_code_cell("checks.check_train_val_split(train_val_split)"),
    )
    result, lines = _check(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1].startswith("✗ Exercise: one_hot — NotImplementedError: still a stub"), lines[1]
    assert lines[2].startswith(f"✗ {RELU_CHECK} — AssertionError: check_relu: case 1 of"), lines[2]
    assert lines[3] == "✓ Exercise: a validation split"  # checked after the failures
    assert len([ln for ln in lines if ln.startswith("✗")]) == 2
    assert lines[-1] == "score: 1/3 exercises pass"


def test_check_survives_an_endless_loop_and_a_syntax_error(tmp_path):
    """The endless cell is interrupted after --timeout seconds; the kernel and what it holds
    survive, so the next exercises are still checked. (No heavy import here: every cell but the
    loop must finish well within the short timeout, even on a busy machine.)"""
    path = _write(
        tmp_path / "02_spin.ipynb",
        new_code_cell("import mnist_course\nx = 0"),
        new_markdown_cell("## 1. Exercise: spin"),
        new_code_cell("### BEGIN SOLUTION\nwhile True:\n    pass\n### END SOLUTION"),
        new_code_cell("checks.check_spin()"),
        new_markdown_cell("## 2. Exercise: after the loop"),
        new_code_cell("### BEGIN SOLUTION\nx += 1\n### END SOLUTION"),
        new_code_cell("assert x == 1, 'the kernel lost its state'"),
        new_markdown_cell("## 3. Exercise: a typo"),
        new_code_cell("### BEGIN SOLUTION\ny = x *\n### END SOLUTION"),
        new_code_cell("assert y == 2"),
    )
    result, lines = _check(path, "--timeout", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1] == ("✗ Exercise: spin — Timeout: the cell ran for more than 2 s and was "
                        "interrupted")
    assert lines[2] == "✓ Exercise: after the loop"
    assert lines[3].startswith("✗ Exercise: a typo — SyntaxError: invalid syntax"), lines[3]
    assert f"hint: {scoreboard.HINTS['Timeout']}" in lines
    assert f"hint: {scoreboard.HINTS['SyntaxError']}" in lines
    assert lines[-1] == "score: 1/3 exercises pass"


@pytest.mark.parametrize("name, content, words", [
    ("99_nope.ipynb", None, "no such notebook"),
    ("folder.ipynb", "dir", "is a folder"),
    ("notes.txt", "just some notes\n", "is not a Jupyter notebook (.ipynb)"),
    ("broken.ipynb", '{"cells": [{"cell_type": "code",', "JSON is malformed at line 1"),
    ("image.ipynb", b"\x89PNG\r\n\x1a\n\x00\xff", "it is not text"),
    ("list.ipynb", "[1, 2, 3]", "JSON but not a Jupyter notebook"),
    ("other.ipynb", "other", "not a notebook of this course"),
    ("other_checks.ipynb", "other_checks", "not a notebook of this course"),
], ids=["missing", "folder", "not ipynb", "malformed JSON", "binary", "JSON list",
        "another course", "another course's checks"])
def test_check_refuses_what_it_cannot_grade_with_exit_2(tmp_path, monkeypatch, capsys, name,
                                                         content, words):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content == "other":
        _write(path, new_markdown_cell("# Pandas 101"),
               new_code_cell("import pandas as pd"), new_code_cell("assert 1 + 1 == 2"))
    elif content == "other_checks":
        _write(path, new_code_cell("import checks"), new_code_cell("checks.check_answer(42)"))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.chdir(tmp_path)
    assert main(["check", name]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"mnist-course: error: {name}") and words in err, err
    assert err.count("\n") == 1, f"not one line: {err!r}"


def test_check_exit_2_in_a_subprocess_without_traceback(tmp_path):
    (tmp_path / "broken.ipynb").write_text('{"cells": [')
    result = run("check", "broken.ipynb", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("mnist-course: error: broken.ipynb is not a Jupyter notebook")


# ------------------------------------------------------------------ check: a learner's lesson
#
# Learner versions of real lessons, made the way learners edit them: the two stub lines
# (`# YOUR CODE HERE`, `raise NotImplementedError()`) replaced by code, scratch cells inserted,
# a check cell deleted or edited, code pasted into a new cell (no nbgrader metadata). Each test
# runs `check` once on one such version, written to a folder of its own under the lesson's name.

STUB = tuple(regions.CODE_STUB)


def _answer(lesson_source: str, solution_source: str, wrong: tuple[str, str] | None = None
            ) -> str:
    """``lesson_source`` with each stub (its two lines) replaced by the code of the matching
    region of ``solution_source``, as a learner types it; ``wrong`` = (old, new) then edits the
    code to make a mistake."""
    blocks, region = [], None
    for line in solution_source.split("\n"):
        if line.strip() == regions.BEGIN:
            region = []
        elif line.strip() == regions.END:
            blocks.append(region)
            region = None
        elif region is not None:
            region.append(line)
    lines, out = lesson_source.split("\n"), []
    i = 0
    while i < len(lines):
        if lines[i].strip() == STUB[0] and i + 1 < len(lines) and lines[i + 1].strip() == STUB[1]:
            out += blocks.pop(0)
            i += 2
        else:
            out.append(lines[i])
            i += 1
    assert not blocks, "a region of the solution found no stub"
    code = "\n".join(out)
    if wrong is not None:
        assert wrong[0] in code, wrong
        code = code.replace(*wrong)
    return code


class Learner:
    """A learner's copy of ``lessons/NAME``: cells found by their grade_id in the untouched
    lesson, edited in place, written to ``folder/NAME``."""

    def __init__(self, name: str):
        self.name = name
        self.nb = notebook_io.read_notebook(ROOT / "lessons" / name)
        self.solution = notebook_io.read_notebook(ROOT / "solutions" / name)

    def cell(self, grade_id: str):
        found = [c for c in self.nb.cells
                 if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
        assert len(found) == 1, grade_id
        return found[0]

    def index(self, grade_id: str) -> int:
        return self.nb.cells.index(self.cell(grade_id))

    def solve(self, grade_id: str, wrong: tuple[str, str] | None = None) -> Learner:
        """Write the answer into the solution cell ``grade_id`` (kept where it is)."""
        cell = self.cell(grade_id)
        original = self.solution.cells[self.index(grade_id)]
        assert original.id == cell.id
        cell.source = _answer(cell.source, original.source, wrong)
        return self

    def insert(self, before: str, source: str) -> Learner:
        """A scratch cell before the cell ``before`` (a new cell has no nbgrader metadata)."""
        self.nb.cells.insert(self.index(before), new_code_cell(source))
        return self

    def write(self, folder: Path) -> Path:
        for i, cell in enumerate(self.nb.cells):
            cell.setdefault("id", f"learner{i}")
        path = folder / self.name
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(render(self.nb), encoding="utf-8")
        return path


def _notes(result) -> list[str]:
    return [ln[len("note: "):] for ln in result.stdout.split("\n") if ln.startswith("note: ")]


DATA = "00_data.ipynb"
ONE_HOT_NAME, SPLIT_NAME = "Exercise: one-hot labels", "Exercise: a validation split"
WRONG_ONE_HOT = ("out[np.arange(len(y)), y] = 1.0",
                 "out[np.arange(len(y)), (y + 1) % num_classes] = 1.0")


def test_check_lesson_00_both_exercises_done(tmp_path, mnist_raw):
    path = Learner(DATA).solve("ex1_one_hot").solve("ex2_train_val_split").write(tmp_path)
    result, lines = _check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[0].startswith(f"checking {DATA}: 2 exercises")
    assert lines[1:] == [f"✓ {ONE_HOT_NAME}", f"✓ {SPLIT_NAME}", "score: 2/2 exercises pass"]
    assert _notes(result) == []


def test_check_lesson_00_one_done_one_stub(tmp_path, mnist_raw):
    path = Learner(DATA).solve("ex1_one_hot").write(tmp_path)
    result, lines = _check(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1:3] == [f"✓ {ONE_HOT_NAME}",
                          (f"✗ {SPLIT_NAME} — NotImplementedError: still a stub: replace "
                          "`raise NotImplementedError()` with your code")]
    assert lines[-1] == "score: 1/2 exercises pass"


def test_check_lesson_00_one_wrong_one_right(tmp_path, mnist_raw):
    path = (Learner(DATA).solve("ex1_one_hot", wrong=WRONG_ONE_HOT).solve("ex2_train_val_split")
            .write(tmp_path))
    result, lines = _check(path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1].startswith(f"✗ {ONE_HOT_NAME} — AssertionError: check_one_hot: case 1 of 3 "
                               "failed"), lines[1]
    assert lines[2] == f"✓ {SPLIT_NAME}"
    assert lines[-1] == "score: 1/2 exercises pass"


def test_check_lesson_00_scratch_cells_and_code_pasted_into_a_new_cell(tmp_path, mnist_raw):
    """Scratch cells between each exercise and its check (one of them fails: shown, not scored);
    the one-hot answer pasted into a new cell in place of the lesson's (no metadata there)."""
    learner = Learner(DATA).solve("ex1_one_hot").solve("ex2_train_val_split")
    answer = learner.cell("ex1_one_hot").source
    del learner.nb.cells[learner.index("ex1_one_hot")]
    learner.insert("ex1_check", answer)
    learner.insert("ex1_check", "print(one_hot([1, 2], 3))")
    learner.insert("ex2_check", "x_tr, y_tr, x_val, y_val = train_val_split(x_train, y_train)")
    learner.insert("ex2_check", "print(undefined_name)")
    result, lines = _check(learner.write(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[1:3] == [f"✓ {ONE_HOT_NAME}", f"✓ {SPLIT_NAME}"]
    assert lines[3] == "other cells that failed (1; not scored, but read them):"
    assert "print(undefined_name)" in lines[4] and "NameError" in lines[4]
    assert lines[-1] == "score: 2/2 exercises pass"
    assert len(_notes(result)) == 1
    assert _notes(result)[0].startswith(
        f"{ONE_HOT_NAME}: a solution cell has lost its nbgrader metadata; took code cell ")
    assert _notes(result)[0].endswith("(it defines one_hot)")


def test_check_lesson_00_check_cells_deleted_or_edited(tmp_path, mnist_raw):
    learner = Learner(DATA).solve("ex1_one_hot").solve("ex2_train_val_split")
    del learner.nb.cells[learner.index("ex1_check")]
    learner.cell("ex2_check").source = "print('looks fine to me')"
    result, lines = _check(learner.write(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1:3] == [
        (f"✗ {ONE_HOT_NAME} — its check cell `checks.check_one_hot(one_hot)` is missing: put it "
        "back after your code, as in the course's lesson"),
        (f"✗ {SPLIT_NAME} — its check cell (code cell 21) was changed: restore it to "
        "`checks.check_train_val_split(train_val_split)` as in the course's lesson")]
    assert f"hint: {scoreboard.HINTS['CheckCell']}" in lines
    assert lines[-1] == "score: 0/2 exercises pass"


REGULARIZATION = "04_numpy_regularization.ipynb"
REGULARIZATION_NAMES = [
    "batchnorm2d_forward", "check_batchnorm2d(batchnorm2d_forward, batchnorm2d_backward)",
    "check_dropout(dropout_forward, dropout_backward)", "check_sgd(SGD)",
    "check_rmsprop(RMSprop)", "check_adam(Adam, weight_decay=True)"]
REGULARIZATION_IDS = ["ex1_batchnorm2d_forward", "ex2_batchnorm2d_backward",
                      "ex3_dropout_forward", "ex4_SGD", "ex5_RMSprop", "ex6_Adam"]


def test_check_lesson_04_done_and_saved_without_any_metadata(tmp_path):
    """Every exercise done, a scratch cell inserted, then the notebook saved by a tool that
    drops all cell metadata: all six found by comparing with the course's lesson."""
    learner = Learner(REGULARIZATION)
    for grade_id in REGULARIZATION_IDS:
        learner.solve(grade_id)
    learner.insert("ex4_check", "opt = SGD(lr=0.1)")
    for cell in learner.nb.cells:
        cell.metadata = {}
    result, lines = _check(learner.write(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[1:] == [f"✓ {name}" for name in REGULARIZATION_NAMES] + [
        "score: 6/6 exercises pass"]
    assert _notes(result) == [
        ("this notebook has no nbgrader metadata (saved by a tool that drops it?): its exercises "
        "were found by comparing with the course's lesson, 12 cells by their source or the "
        "names they define")]


def test_check_lesson_04_a_mixture(tmp_path):
    """Done, stub, wrong, done, check deleted, done with a scratch cell: 3/6."""
    learner = Learner(REGULARIZATION).solve("ex1_batchnorm2d_forward")
    learner.solve("ex3_dropout_forward", wrong=("scale = 1 / (1 - p) if p < 1 else 0.0",
                                                "scale = 1.0"))
    learner.solve("ex4_SGD").solve("ex5_RMSprop").solve("ex6_Adam")
    del learner.nb.cells[learner.index("ex5_check")]
    learner.insert("ex6_check", "print(Adam(lr=0.1).t)")
    result, lines = _check(learner.write(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"checking {REGULARIZATION}: 6 exercises")
    marks = [ln[:1] for ln in lines[1:7]]
    assert marks == ["✓", "✗", "✗", "✓", "✗", "✓"], lines
    assert [ln[2:].split(" — ")[0] for ln in lines[1:7]] == REGULARIZATION_NAMES
    assert "NotImplementedError: still a stub" in lines[2]
    assert "— AssertionError: check_dropout" in lines[3], lines[3]
    assert "its check cell `checks.check_rmsprop(RMSprop)` is missing" in lines[5]
    assert lines[-1] == "score: 3/6 exercises pass"
