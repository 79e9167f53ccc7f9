"""Lessons are generated from the solutions, stay in sync, and stop at their first exercise.

Also covers the cleaning that ``python -m mnist_course.notebooks execute`` applies to solutions.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from mnist_course import kernels, lessons, notebook_io, notebooks, outputs, regions, scoreboard
from mnist_course.lessons import make_lesson
from mnist_course.notebook_io import NotebookError, render
from mnist_course.regions import strip_solutions

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=list(cells))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    return nb


# ------------------------------------------------------------------ the transformation itself

def test_code_region_becomes_stub_indented_like_the_marker():
    source = ("def relu_forward(x):\n"
              "    ### BEGIN SOLUTION\n"
              "    out = np.maximum(0, x)\n"
              "    ### END SOLUTION\n"
              "    return out, x")
    assert strip_solutions(source) == ("def relu_forward(x):\n"
                                       "    # YOUR CODE HERE\n"
                                       "    raise NotImplementedError()\n"
                                       "    return out, x")


def test_top_level_region_and_deeper_indentation():
    source = "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\nfor i in r:\n" \
             "    if i:\n        ### BEGIN SOLUTION\n        y = i\n        ### END SOLUTION"
    assert strip_solutions(source) == (
        STUB + "\nfor i in r:\n    if i:\n"
        "        # YOUR CODE HERE\n        raise NotImplementedError()")


def test_several_regions_in_one_cell_keep_the_code_between_them():
    source = ("a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\nc = 3\n"
              "def f():\n\t### BEGIN SOLUTION\n\treturn 4\n\t### END SOLUTION\nd = 5")
    out = strip_solutions(source)
    assert out == ("a = 1\n" + STUB + "\nc = 3\ndef f():\n\t# YOUR CODE HERE\n"
                   "\traise NotImplementedError()\nd = 5")
    assert out.count("raise NotImplementedError()") == 2
    assert "b = 2" not in out and "return 4" not in out


def test_markdown_region_becomes_your_answer_here():
    source = ("**Question.** Why is the numerical gradient slow?\n\n"
              "### BEGIN SOLUTION\nOne forward pass per parameter.\n### END SOLUTION\n")
    assert strip_solutions(source, "markdown") == (
        "**Question.** Why is the numerical gradient slow?\n\nYOUR ANSWER HERE\n")


def test_source_without_markers_is_unchanged():
    source = "x = 1  # ### BEGIN SOLUTION is only special on its own line\n\nprint(x)\n"
    assert strip_solutions(source) == source


@pytest.mark.parametrize("source, words", [
    ("x = 1\n### END SOLUTION", ["line 2", "has no"]),
    ("### BEGIN SOLUTION\nx = 1", ["line 1", "never closed"]),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx\n### END SOLUTION\n### END SOLUTION",
     ["line 2", "nested"]),
])
def test_unbalanced_markers_name_the_notebook_and_the_cell(source, words):
    nb = _notebook(new_markdown_cell("# Title"), new_code_cell("import numpy"),
                   new_code_cell(source))
    with pytest.raises(NotebookError) as info:
        make_lesson(nb, name="solutions/07_broken.ipynb")
    message = str(info.value)
    assert "solutions/07_broken.ipynb" in message and "cell 2" in message
    for word in words:
        assert word in message


def _solution() -> nbformat.NotebookNode:
    nb = _notebook(
        new_markdown_cell("# Lesson\n### BEGIN SOLUTION\nanswer\n### END SOLUTION"),
        new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                      execution_count=3,
                      outputs=[new_output("stream", name="stdout", text="hi\n")],
                      metadata={"tags": ["exercise"], "execution": {"iopub.status.idle": "t"},
                                "scrolled": True}),
        new_code_cell("assert f(2) == 4", execution_count=4,
                      outputs=[new_output("execute_result", data={"text/plain": "4"},
                                          execution_count=4)]),
    )
    nb.metadata = {"kernelspec": {"name": "mykernel", "display_name": "My env"},
                   "language_info": {"name": "python", "version": "3.11.7"},
                   "widgets": {"state": {}}}
    return nb


def test_lesson_has_no_outputs_and_normalised_metadata():
    solution = _solution()
    before = render(solution)
    lesson = make_lesson(solution, name="s.ipynb")
    assert render(solution) == before, "make_lesson must not modify the solution"
    assert lesson.nbformat == 4 and lesson.nbformat_minor == 5
    assert lesson.metadata.kernelspec == {"display_name": "Python 3", "language": "python",
                                          "name": "python3"}
    assert lesson.metadata.language_info.name == "python"
    assert "version" not in lesson.metadata.language_info and "widgets" not in lesson.metadata
    code = [c for c in lesson.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    # Volatile metadata is dropped; tags stay, and nbgrader's is computed (mnist_course.grading).
    assert code[0].metadata == {"tags": ["exercise"], "nbgrader": {
        "grade": False, "solution": True, "locked": False, "grade_id": "ex2_f",
        "schema_version": 3}}
    assert code[1].metadata.nbgrader.grade_id == "ex2_check"
    assert [c.id for c in lesson.cells] == [c.id for c in solution.cells]
    assert lesson.cells[0].source == "# Lesson\nYOUR ANSWER HERE"
    nbformat.validate(lesson)


def test_generation_is_deterministic_and_idempotent():
    lesson = make_lesson(_solution(), name="s.ipynb")
    text = render(lesson)
    assert text.endswith("}\n") and text.startswith('{\n "cells": [\n  {')
    assert render(make_lesson(_solution(), name="s.ipynb")) == text
    again = make_lesson(nbformat.reads(text, as_version=4), name="s.ipynb")
    assert render(again) == text, "a lesson of a lesson must be the same lesson"


def test_cells_without_ids_get_deterministic_ones():
    nb = _solution()
    for cell in nb.cells:
        del cell["id"]
    nb.nbformat_minor = 4
    ids = [c.id for c in make_lesson(nb, name="s.ipynb").cells]
    assert ids == [c.id for c in make_lesson(nb, name="s.ipynb").cells]
    assert len(set(ids)) == len(ids)


# ------------------------------------------------------------------ lessons_command on disk

def _write(path: Path, nb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(nb), encoding="utf-8")


def test_lessons_command_writes_checks_and_removes(tmp_path, capsys):
    sol, les = tmp_path / "solutions", tmp_path / "lessons"
    _write(sol / "01_a.ipynb", _solution())
    _write(sol / "02_b.ipynb", _solution())
    _write(les / "09_gone.ipynb", _solution())
    args = {"solutions": str(sol), "lessons": str(les)}

    assert lessons.lessons_command(check=True, **args) == 1
    out = capsys.readouterr().out
    assert "01_a.ipynb: missing" in out and "09_gone.ipynb: has no solution" in out
    assert (les / "09_gone.ipynb").exists() and not (les / "01_a.ipynb").exists()

    assert lessons.lessons_command(check=False, **args) == 0
    assert sorted(p.name for p in les.iterdir()) == ["01_a.ipynb", "02_b.ipynb"]
    first = {p.name: p.read_bytes() for p in les.iterdir()}
    assert b"NotImplementedError" in first["01_a.ipynb"] and b"2 * x" not in first["01_a.ipynb"]
    assert "2 written, 0 unchanged, 1 removed" in capsys.readouterr().out

    assert lessons.lessons_command(check=False, **args) == 0
    assert {p.name: p.read_bytes() for p in les.iterdir()} == first
    assert "0 written, 2 unchanged" in capsys.readouterr().out
    assert lessons.lessons_command(check=True, **args) == 0

    changed = _solution()
    changed.cells[2].source = "assert f(3) == 6"
    _write(sol / "02_b.ipynb", changed)
    assert lessons.lessons_command(check=True, **args) == 1
    out = capsys.readouterr().out
    assert "02_b.ipynb: differs" in out and "01_a.ipynb" not in out


def test_missing_solutions_folder_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotebookError, match="repository root"):
        lessons.lessons_command(check=True)


# ------------------------------------------------------------------ the committed notebooks

def test_every_solution_has_a_lesson_and_no_lesson_lacks_a_solution():
    assert [p.name for p in SOLUTIONS] == [p.name for p in LESSONS]
    for path in SOLUTIONS + LESSONS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: name it NN_x"


def test_committed_lessons_equal_freshly_generated_ones(tmp_path, capsys):
    assert lessons.lessons_command(check=False, solutions=str(ROOT / "solutions"),
                                     lessons=str(tmp_path)) == 0
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    committed = {p.name: p.read_bytes() for p in LESSONS}
    assert sorted(fresh) == sorted(committed), "run `mnist-course lessons` and commit lessons/"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"lessons out of date: {stale}; run `mnist-course lessons`"


_CHECK_CALL = re.compile(r"^\s*(assert\b|\w*check\w*\()", re.MULTILINE)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_has_exercises_each_followed_by_a_check_cell(path):
    nb = nbformat.read(path, as_version=4)
    found = [i for i, c in enumerate(nb.cells) if regions.has_solution(c.source)]
    assert found, f"{path.name} has no '### BEGIN SOLUTION' exercise region"
    code_regions = [i for i in found if nb.cells[i].cell_type == "code"]
    assert code_regions, f"{path.name} has no code exercise"
    for i in code_regions:
        later = [j for j, c in enumerate(nb.cells) if j > i and c.cell_type == "code"
                 and not regions.has_solution(c.source) and _CHECK_CALL.search(c.source)]
        assert later, f"{path.name}: exercise in cell {i} has no check cell after it"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_check_finds_the_same_exercises_in_solution_and_lesson(path):
    """What `mnist-course check` grades: every check call ends an exercise, each exercise has a
    name, and the lesson has exactly the solution's exercises (no notebook is run here)."""
    solution = nbformat.read(path, as_version=4)
    lesson = make_lesson(solution, name=path.name)
    found = scoreboard.find_exercises(solution)
    assert [(e.name, e.cells) for e in found] == \
        [(e.name, e.cells) for e in scoreboard.find_exercises(lesson)]
    calls = [i for i, c in enumerate(solution.cells) if c.cell_type == "code"
             and re.search(r"\bchecks\.check_\w+\(", c.source)]
    assert calls and set(calls) <= {e.cells[-1] for e in found}
    for e in found:
        assert e.name and "code cell" not in e.name, e
        assert all(regions.is_solution_cell(solution.cells[i].source) for i in e.cells[:-1])
        assert all(regions.is_solution_cell(lesson.cells[i].source) for i in e.cells[:-1])
    if path.name == "01_numpy_mlp.ipynb":  # checked by an assert cell, not a check call
        assert "mlp_loss_and_grads" in [e.name for e in found]


def test_exercise_names_and_grouping():
    nb = _notebook(
        new_markdown_cell("## 1. Exercise: `one_hot` and **more**"),
        new_code_cell("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"),
        new_code_cell("def g(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"),
        new_code_cell("checks.check_one_hot(f)\nprint('ok')"),
        new_markdown_cell("## 2. Backprop"),
        new_code_cell("def h(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"),
        new_code_cell("y = h(1)"),
        new_code_cell("assert y == 1"),
        new_code_cell("class K:\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION"),
        new_code_cell("checks.check_adam(\n    K, weight_decay=True)"),
        new_code_cell("checks.check_relu(relu_forward, relu_backward)"),
    )
    found = [(e.name, e.cells) for e in scoreboard.find_exercises(nb)]
    # nbgrader's rule (grading.roles): the first code cell after the solution cells is their
    # test cell; a check call that follows no exercise is not an exercise of its own.
    assert found == [("Exercise: one_hot and more", [1, 2, 3]), ("h", [5, 6]),
                     ("check_adam(K, weight_decay=True)", [8, 9])]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_runs_until_its_first_exercise(path, mnist_raw):
    nb = nbformat.read(path, as_version=4)
    stubs = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert stubs, f"{path.name} has no exercise stub"
    result = kernels.first_error(path, timeout=600)
    assert result is not None, f"{path.name} ran to the end: no exercise raised"
    index, ename, evalue = result
    assert ename == "NotImplementedError", (
        f"{path.name}: cell {index} raised {ename}: {evalue} before the first exercise")
    assert index >= stubs[0], (
        f"{path.name}: NotImplementedError in cell {index}, before the first stub (cell "
        f"{stubs[0]})")


# ------------------------------------------------------------------ cleaning executed outputs

def test_progress_bar_keeps_only_its_final_state():
    text = ("\r  0%|     | 0/3 [00:00<?, ?it/s]\r 33%|#    | 1/3\r100%|#####| 3/3 [00:01]\n"
            "\rEpoch 2:  50%|##  | 1/2\x1b[A\rEpoch 2: 100%|####| 2/2   \n"
            "plain line\n")
    assert outputs.clean_stream_text(text) == (
        "100%|#####| 3/3 [00:01]\nEpoch 2: 100%|####| 2/2\nplain line\n")


def test_clean_outputs_merges_streams_and_drops_widgets():
    nb = _notebook(new_code_cell("x", outputs=[
        new_output("stream", name="stderr", text="\r 50%|#  |"),
        new_output("stream", name="stderr", text="\r100%|###|"),
        new_output("stream", name="stderr", text="\n"),
        new_output("stream", name="stdout", text="a\n"),
        new_output("stream", name="stdout", text="b\n"),
        new_output("stream", name="stderr", text="\r"),
        new_output("display_data", data={outputs.WIDGET_MIME: {"model_id": "1"}}),
        new_output("display_data", data={"text/plain": "fig", outputs.WIDGET_MIME: {}}),
    ]))
    outs = outputs.clean_outputs(nb).cells[0].outputs
    assert [(o.output_type, o.get("name")) for o in outs] == [
        ("stream", "stderr"), ("stream", "stdout"), ("display_data", None)]
    assert outs[0].text == "100%|###|\n" and outs[1].text == "a\nb\n"
    assert list(outs[2].data) == ["text/plain"]


def test_machine_paths_in_outputs_are_found():
    nb = _notebook(
        new_code_cell("a", outputs=[new_output("stream", name="stdout", text="ok\n")]),
        new_code_cell("b", outputs=[new_output("execute_result", execution_count=1,
                                               data={"text/plain": "PosixPath('/home/x/d')"})]),
        new_code_cell("c", outputs=[new_output("stream", name="stdout",
                                               text="data in ../shared/data\n")]),
    )
    found = outputs.find_machine_paths(nb)
    assert [f.split(":")[0] for f in found] == ["cell 1", "cell 2"]


def _tiny(tmp_path: Path, *sources: str) -> Path:
    path = tmp_path / "nb" / "demo.ipynb"
    _write(path, new_notebook(cells=[new_code_cell(s) for s in sources]))
    return path


def test_execute_runs_in_the_notebook_folder_and_cleans(tmp_path):
    path = _tiny(tmp_path,
                 "from pathlib import Path\nprint(sorted(p.name for p in Path('.').iterdir()))",
                 "import sys, time\nfor i in range(3):\n"
                 "    sys.stderr.write(f'\\r{i + 1}/3'); sys.stderr.flush(); time.sleep(0.02)\n"
                 "sys.stderr.write('\\n')",
                 "import warnings\nwarnings.warn('careful')")
    notebooks.execute_notebook(path, timeout=120, progress=False)
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].outputs[0].text == "['demo.ipynb']\n"
    assert nb.cells[1].outputs[0].text == "3/3\n"
    assert "UserWarning: careful" in nb.cells[2].outputs[0].text
    assert outputs.find_machine_paths(nb) == []
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert path.read_text(encoding="utf-8") == render(nb)


def test_execute_refuses_machine_paths_and_errors(tmp_path):
    path = _tiny(tmp_path, "print('cache: /home/learner/.cache/mnist_course')")
    before = path.read_bytes()
    with pytest.raises(NotebookError, match="absolute machine path"):
        notebooks.execute_notebook(path, timeout=120, progress=False)
    assert path.read_bytes() == before
    path = _tiny(tmp_path, "x = 1", "1 / 0")
    with pytest.raises(NotebookError, match="cell 1 raised ZeroDivisionError"):
        notebooks.execute_notebook(path, timeout=120, progress=False)


def test_ids_do_not_depend_on_the_folder_and_duplicates_are_fixed():
    nb = _solution()
    del nb.cells[0]["id"]
    nb.cells[2]["id"] = nb.cells[1]["id"]
    a = make_lesson(nb, name="solutions/01_x.ipynb")
    b = make_lesson(nb, name="/elsewhere/solutions/01_x.ipynb")
    assert render(a) == render(b)
    assert len({c.id for c in a.cells}) == 3


# ------------------------------------------------------------------ a learner's edited lesson
# (no kernel here: which cells `mnist-course check` grades; tests/test_cli.py runs it)

def _graded(nb, name):
    exercises, notes = scoreboard.exercises_to_grade(nb, Path("somewhere") / name)
    return [(e.name, e.cells, e.problem) for e in exercises], notes


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_untouched_lesson_is_graded_by_its_own_metadata(path):
    lesson = notebook_io.read_notebook(path)
    graded, notes = _graded(lesson, path.name)
    assert graded == [(e.name, e.cells, None) for e in scoreboard.find_exercises(lesson)]
    assert notes == []


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_without_any_metadata_is_recognised_from_the_course_copy(path):
    lesson = notebook_io.read_notebook(path)
    expected = [(e.name, e.cells, None) for e in scoreboard.find_exercises(lesson)]
    for cell in lesson.cells:
        cell.metadata = {}
        if cell.cell_type == "code":  # every stub answered, so no marker is left either
            cell.source = cell.source.replace(regions.CODE_STUB[0], "# my answer").replace(
                regions.CODE_STUB[1], "pass")
    graded, notes = _graded(lesson, path.name)
    assert graded == expected
    assert len(notes) == 1 and notes[0].startswith("this notebook has no nbgrader metadata")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_exercise_is_listed_when_its_check_cell_is_deleted_or_edited(path):
    lesson = notebook_io.read_notebook(path)
    exercises = scoreboard.find_exercises(lesson)
    checks = [e.cells[-1] for e in exercises]
    lesson.cells[checks[0]].source += "\nprint('and one more thing')"
    for index in reversed(checks[1:]):
        del lesson.cells[index]
    graded, notes = _graded(lesson, path.name)
    assert [g[0] for g in graded] == [e.name for e in exercises]
    assert graded[0][1] == exercises[0].cells and "was changed" in graded[0][2]
    for name, cells, problem in graded[1:]:
        assert "is missing" in problem, (name, problem)
        assert len(cells) == len(exercises[graded.index((name, cells, problem))].cells) - 1
    assert notes == []


def test_code_pasted_into_a_new_cell_and_scratch_cells_are_recognised():
    """Lesson 00: the one-hot cell replaced by a new cell (no metadata) after a scratch cell
    that also defines one_hot; the last definition before the check is the answer."""
    path = ROOT / "lessons" / "00_data.ipynb"
    lesson = notebook_io.read_notebook(path)
    first, second = scoreboard.find_exercises(lesson)
    answer = lesson.cells[first.cells[0]].source.replace(
        "    # YOUR CODE HERE\n    raise NotImplementedError()", "    return np.eye(10)[y]")
    del lesson.cells[first.cells[0]]   # the check cell is now at first.cells[0]
    lesson.cells.insert(first.cells[0], new_code_cell(answer))
    lesson.cells.insert(first.cells[0], new_code_cell("def one_hot(y):\n    return y"))
    lesson.cells.insert(first.cells[0], new_code_cell("print('scratch')"))
    graded, notes = _graded(lesson, path.name)
    check = first.cells[0] + 3
    assert graded == [(first.name, [check - 1, check], None),
                      (second.name, [i + 2 for i in second.cells], None)]
    assert notes == [(f"{first.name}: a solution cell has lost its nbgrader metadata; took code "
                     "cell 20 (it defines one_hot)")]


def test_a_notebook_the_course_lacks_is_graded_by_its_metadata_or_markers():
    lesson = notebook_io.read_notebook(ROOT / "lessons" / "00_data.ipynb")
    graded, notes = _graded(lesson, "99_mine.ipynb")
    assert [g[0] for g in graded] == ["Exercise: one-hot labels", "Exercise: a validation split"]
    assert notes == [("the course has no lesson named 99_mine.ipynb (in solutions/); exercises "
                     "found by this notebook's nbgrader metadata, its check cells not compared "
                     "with the course's")]
