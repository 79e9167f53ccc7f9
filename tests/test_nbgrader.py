"""solutions/ is a valid nbgrader source notebook set, proven with real nbgrader.

- the nbgrader cell metadata is computed from the solution regions (mnist_course.grading), and
  the committed solutions carry exactly that metadata;
- ``nbgrader generate_assignment`` accepts every lesson, and its student version is the lesson
  that ``mnist-course lessons`` generates;
- ``nbgrader autograde`` gives a complete submission full marks and an untouched one less.

nbgrader runs through its Python API, configured by the repository's nbgrader_config.py, on a
course directory laid out as docs/instructors.md says (``python -m mnist_course.grading
source``). One generate_assignment call makes all lessons; autograde runs on lesson 04 only,
which needs no data and no file from another lesson.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from mnist_course import grading
from mnist_course.lessons import make_lesson
from mnist_course.notebook_io import read_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LESSON_NAMES = [p.stem for p in SOLUTIONS]
AUTOGRADED = "04_numpy_regularization"  # ~10 s to run, no MNIST, no file of another lesson
HAS_NBGRADER = importlib.util.find_spec("nbgrader") is not None
needs_nbgrader = pytest.mark.skipif(
    not HAS_NBGRADER, reason="nbgrader is not installed (a dev dependency: pip install -e '.[dev]')")
GRADE_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # nbgrader's schema allows these characters
# What nbgrader adds to the metadata of the student version.
STUDENT_ONLY_KEYS = ("checksum", "cell_type")


def _nbgrader_meta(cell) -> dict | None:
    meta = cell.metadata.get("nbgrader")
    return None if meta is None else {k: v for k, v in meta.items() if k not in STUDENT_ONLY_KEYS}


def _annotated(path: Path) -> nbformat.NotebookNode:
    return grading.annotate(read_notebook(path), str(path))


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=list(cells))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i}"
    return nb


def _exercise(name: str, body: str = "return x") -> str:
    return f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"


# ------------------------------------------------------------------ the classification rules

def test_solution_test_and_answer_cells():
    nb = _notebook(
        new_markdown_cell("# Title"),
        new_code_cell("import numpy as np"),
        new_code_cell(_exercise("relu_forward")),
        new_markdown_cell("The check compares with PyTorch."),   # prose between: still its check
        new_code_cell("checks.check_relu(relu_forward)"),
        new_code_cell("print('not graded')"),
        new_markdown_cell("**Question.** Why?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
        new_code_cell("class Adam:\n    def step(self):\n        ### BEGIN SOLUTION\n"
                      "        pass\n        ### END SOLUTION"),
        new_code_cell(_exercise("helper")),                        # a run of two solution cells
        new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(helper(1))"),   # any code cell can be a check
    )
    meta = [c.metadata.get("nbgrader") for c in grading.annotate(nb).cells]
    assert meta[0] is meta[1] is meta[3] is meta[5] is None
    assert meta[2] == {"grade": False, "solution": True, "locked": False,
                       "grade_id": "ex1_relu_forward", "schema_version": 3}
    assert meta[4] == {"grade": True, "solution": False, "locked": True, "points": 1,
                       "grade_id": "ex1_check", "schema_version": 3}
    assert meta[6] == {"grade": True, "solution": True, "locked": False, "points": 1,
                       "grade_id": "ex2_answer", "schema_version": 3}
    assert meta[7]["grade_id"] == "ex3_Adam" and meta[8]["grade_id"] == "ex3_helper"
    assert meta[9]["grade_id"] == "ex3_check" and meta[9]["points"] == 2
    assert grading.summary(nb) == {"solution": 3, "test": 2, "answer": 1, "points": 4,
                                   "autograded_points": 3}


def test_annotation_is_a_function_of_the_sources():
    nb = _notebook(new_code_cell(_exercise("f"), metadata={
                       "nbgrader": {"grade": True, "grade_id": "stale", "points": 9},
                       "tags": ["keep"]}),
                   new_code_cell("check(f)"),
                   new_code_cell("x = 1", metadata={"nbgrader": {"grade": False, "locked": True}}))
    grading.annotate(nb)
    assert nb.cells[0].metadata.nbgrader.grade_id == "ex1_f"
    assert nb.cells[0].metadata.tags == ["keep"]
    assert "nbgrader" not in nb.cells[2].metadata, "a cell without a role loses stale metadata"
    before = nbformat.writes(nb)
    assert nbformat.writes(grading.annotate(nb)) == before, "annotating twice changes nothing"


def test_grade_ids_are_unique_valid_and_readable():
    nb = _notebook(new_code_cell(_exercise("f") + "\n" + _exercise("g")),
                   new_code_cell(_exercise("f")),                  # same name in the same run
                   new_code_cell("check(f)"),
                   new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION"),  # no def
                   new_code_cell("check(y)"))
    ids = [c.metadata.nbgrader.grade_id for c in grading.annotate(nb).cells]
    assert ids == ["ex1_f", "ex1_f_2", "ex1_check", "ex2_solution", "ex2_check"]


def test_an_answer_inside_a_run_does_not_renumber_it():
    nb = _notebook(new_code_cell(_exercise("f")),
                   new_markdown_cell("### BEGIN SOLUTION\nanswer\n### END SOLUTION"),
                   new_code_cell(_exercise("g")), new_code_cell("check(f, g)"))
    ids = [c.metadata.nbgrader.grade_id for c in grading.annotate(nb).cells]
    assert ids == ["ex1_f", "ex2_answer", "ex1_g", "ex1_check"]


def test_a_lesson_gets_the_metadata_of_its_solution():
    nb = _notebook(new_code_cell(_exercise("f")), new_code_cell("check(f)"),
                   new_markdown_cell("### BEGIN SOLUTION\nanswer\n### END SOLUTION"))
    lesson = make_lesson(nb, name="s.ipynb")
    assert "BEGIN" not in lesson.cells[0].source
    assert ([c.metadata.nbgrader for c in lesson.cells]
            == [c.metadata.nbgrader for c in grading.annotate(nb).cells])


@pytest.mark.parametrize("path", SOLUTIONS, ids=LESSON_NAMES)
def test_metadata_roles_read_back_what_annotate_wrote(path):
    """What `mnist-course check` reads from a learner's notebook (its cell metadata, which
    survives the learner's editing) is what the sources say, cell by cell."""
    nb = _annotated(path)
    assert grading.metadata_roles(nb) == grading.roles(nb, str(path))
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
    assert grading.metadata_roles(nb) == [None] * len(nb.cells)


def test_stray_markers_are_found():
    nb = _notebook(new_markdown_cell("A cell with `### BEGIN SOLUTION` … `### END SOLUTION`."),
                   new_code_cell(_exercise("f")))
    assert grading.stray_markers(nb) == [
        "cell 0, line 1: A cell with `### BEGIN SOLUTION` … `### END SOLUTION`."]


# ------------------------------------------------------------------ the committed solutions

@pytest.mark.parametrize("path", SOLUTIONS, ids=LESSON_NAMES)
def test_committed_solution_is_a_valid_nbgrader_source(path):
    committed = read_notebook(path)
    assert not grading.stray_markers(committed), (
        "nbgrader reads these lines as solution delimiters; rephrase them (COURSE.md: never "
        f"write the markers in prose): {grading.stray_markers(committed)}")
    expected = _annotated(path)
    stale = [i for i, (a, b) in enumerate(zip(committed.cells, expected.cells))
             if a.metadata.get("nbgrader") != b.metadata.get("nbgrader")]
    assert not stale, (f"cells {stale} lack the nbgrader metadata mnist_course.grading computes: "
                       f"run `python -m mnist_course.notebooks clean {path.relative_to(ROOT)}`")
    roles = [c.metadata.nbgrader for c in expected.cells if "nbgrader" in c.metadata]
    assert all(GRADE_ID.match(r["grade_id"]) for r in roles)
    assert any(r["grade"] for r in roles), "every lesson has at least one graded cell"
    if HAS_NBGRADER:
        from nbgrader.nbgraderformat import MetadataValidator
        MetadataValidator().validate_nb(expected)


# ------------------------------------------------------------------ real nbgrader

def _nbgrader_api(top: Path):
    """nbgrader's Python API configured by the repository's nbgrader_config.py (copied to
    ``top``), the file ``nbgrader`` reads on the command line. In-process, this saves two
    start-ups of nbgrader (seconds each) over ``python -m nbgrader``."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(top)).load_config()
    return NbGraderAPI(config=config)


def _check(result: dict, what: str) -> None:
    assert result["success"], f"nbgrader {what} failed:\n{result.get('error', '')}\n" \
                              f"{result.get('log', '')[-4000:]}"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course directory as docs/instructors.md describes it, every lesson generated; yields it
    and the API that made it."""
    top = tmp_path_factory.mktemp("nbgrader")
    shutil.copy(ROOT / "nbgrader_config.py", top)
    grading.write_source(top / "course", ROOT / "solutions")
    with pytest.MonkeyPatch.context() as mp:
        # nbgrader runs the `alembic` script when it creates a gradebook: it must be on PATH.
        mp.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
        mp.delenv("MPLBACKEND", raising=False)  # kernels plot as in Jupyter
        api = _nbgrader_api(top)
        assert api.coursedir.root == str(top / "course")
        _check(api.generate_assignment("*"), "generate_assignment")  # all lessons at once
        yield top / "course", api


@needs_nbgrader
def test_student_version_is_the_lesson(course):
    course, _ = course
    for path in SOLUTIONS:
        name = path.stem
        student = read_notebook(course / "release" / name / path.name)
        lesson = make_lesson(read_notebook(path), name=str(path))
        assert [c.cell_type for c in student.cells] == [c.cell_type for c in lesson.cells], name
        for index, (ours, theirs) in enumerate(zip(lesson.cells, student.cells)):
            assert theirs.source == ours.source, f"{name}, cell {index}: nbgrader's stub differs"
            assert _nbgrader_meta(theirs) == _nbgrader_meta(ours), f"{name}, cell {index}"
        committed = ROOT / "lessons" / path.name
        if committed.is_file():
            sources = [c.source for c in read_notebook(committed).cells]
            assert sources == [c.source for c in student.cells], (
                f"lessons/{path.name} differs from nbgrader's student version: run "
                "`mnist-course lessons`")


@needs_nbgrader
# nbgrader 0.9 with SQLAlchemy 2.x warns about its own session handling; the scores are right.
@pytest.mark.filterwarnings("ignore:Object of type <.*> not in session")
def test_autograde_full_marks_for_the_solution_and_less_for_the_stubs(course):
    from nbgrader.api import Gradebook

    course, api = course
    name = AUTOGRADED
    for student, notebook in (("complete", course / "source" / name / f"{name}.ipynb"),
                              ("untouched", course / "release" / name / f"{name}.ipynb")):
        folder = course / "submitted" / student / name
        folder.mkdir(parents=True)
        shutil.copy(notebook, folder)
    _check(api.autograde(name, "*"), "autograde")  # both students at once

    expected = grading.summary(read_notebook(ROOT / "solutions" / f"{name}.ipynb"))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "mnist-course") as gb:
        complete = gb.find_submission(name, "complete")
        untouched = gb.find_submission(name, "untouched")
        assert complete.max_score == expected["points"] > 0
        assert complete.score == complete.max_score, [
            (g.name, g.score) for g in gb.find_submission_notebook(name, name, "complete").grades]
        assert untouched.score < untouched.max_score == complete.max_score
        assert untouched.code_score == 0, "every check fails while the exercises are stubs"
    assert (course / "autograded" / "complete" / name / f"{name}.ipynb").is_file()


def test_grading_source_never_copies_the_learners_package(tmp_path):
    """solutions/mine holds the solutions' own code (keep.save): an assignment must not ship it."""
    sol = tmp_path / "solutions"
    sol.mkdir()
    shutil.copy(ROOT / "solutions" / "00_data.ipynb", sol)
    (sol / "mine").mkdir()
    (sol / "mine" / "train_val_split.py").write_text("def train_val_split(x, y): pass\n")
    (sol / "mine" / "__init__.py").write_text("")
    grading.write_source(tmp_path / "course", sol)
    shipped = [p.relative_to(tmp_path / "course") for p in (tmp_path / "course").rglob("*")]
    assert not [p for p in shipped if "mine" in p.parts], shipped
    assert (tmp_path / "course" / "source" / "00_data" / "00_data.ipynb").is_file()
