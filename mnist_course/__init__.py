"""mnist-course: one CNN for handwritten digits, written by hand in NumPy and again with PyTorch.

Submodules (import the one you need; nothing heavy is imported here):

- ``mnist_course.data``       fetch, verify and load MNIST
- ``mnist_course.numpy_cnn``  the reference NumPy layers, the course CNN, optimisers
- ``mnist_course.gradcheck``  numerical gradients and relative errors
- ``mnist_course.checks``     the check functions that lesson exercises call
- ``mnist_course.torch_cnn``  the same CNN in PyTorch, weight transfer, training helper
- ``mnist_course.plots``      figures that several lessons share
- ``mnist_course.cli``        the ``mnist-course`` command
"""

import sys

__version__ = "0.1.0"


def live_progress() -> bool:
    """True where a progress bar can redraw itself: a terminal, or a Jupyter kernel (whose
    outputs the course trims to the bar's final line). In a log file a bar would pile up
    thousands of carriage returns on one line, so the course's bars switch off there and only
    the summary lines remain."""
    return "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class CourseError(Exception):
    """An error with a message meant for a person: the CLI prints it without a traceback."""
