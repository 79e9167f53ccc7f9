# nbgrader configuration of the course (nbgrader 0.9). nbgrader reads this file from the folder
# it is run in, so run `nbgrader ...` from the repository root (see docs/instructors.md).
#
# The notebooks in solutions/ are nbgrader source notebooks: their cell metadata (solution cells,
# locked test cells with points, grade_ids) is computed from the solution regions by
# mnist_course/grading.py and written by `python -m mnist_course.notebooks clean|execute`.
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

# ---- The course and where its files live --------------------------------------------------
c.CourseDirectory.course_id = "mnist-course"
# All of nbgrader's files live in course/ next to this file (ignored by git: it will hold
# student submissions and the gradebook). Override with --CourseDirectory.root=DIR.
c.CourseDirectory.root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "course")
# One assignment per lesson: course/source/02_numpy_layers/02_numpy_layers.ipynb, written by
# `python -m mnist_course.grading source course`. The other steps follow nbgrader's default
# layout {step}/{student_id}/{assignment_id}: release/, submitted/, autograded/, feedback/.
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"

# ---- The student version must equal lessons/ ------------------------------------------------
# The same stubs as mnist_course.regions.strip_solutions (nbgrader indents them like the
# marker, as the course does).
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# nbgrader matches a delimiter anywhere in a line; the course's markers are the whole line.
# Matching the full marker (not nbgrader's default "BEGIN SOLUTION") keeps the two closer, and
# tests/test_nbgrader.py checks that no other line of a solution contains one.
c.ClearSolutions.begin_solution_delimeter = "### BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "### END SOLUTION"
# A solution region in a cell that is not a solution cell is an error, not silently stripped.
c.ClearSolutions.enforce_metadata = True

# ---- Autograding -----------------------------------------------------------------------------
# nbgrader's default is 30 s per cell. The lessons train real networks on all of MNIST: on a
# 2-core CPU the training cell of lesson 03 takes 2-4 minutes, lesson 06's and 07's a few
# minutes too, and a learner's slower (still correct) code may take several times as long.
# 30 minutes per cell leaves room for that and still stops a submission that never ends.
c.Execute.timeout = 1800
# A kernel that dies (for example out of memory) is reported, not retried.
c.Execute.execute_retries = 0
