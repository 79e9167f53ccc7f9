"""Shared fixtures. Tests that need the real MNIST ask for ``mnist_raw`` (or ``mnist``).

No test reaches the internet: the real data comes from the cache, or from the local mirror named
by ``MNIST_COURSE_MIRRORS``. Without either the fixture FAILS with a message saying how to set
the variable; it never skips silently.
"""

from __future__ import annotations

import os

import pytest

from mnist_course import data

HOW_TO = (
    "MNIST is not in the cache ({where}) and MNIST_COURSE_MIRRORS is not set. The tests never "
    "download from the internet; point them at a local copy of the four .gz files, e.g.\n"
    '    export MNIST_COURSE_MIRRORS="file://$(cd ../shared/data/mnist && pwd)"\n'
    "(or set MNIST_COURSE_DATA to a folder whose MNIST/raw/ holds the uncompressed files)."
)


def mnist_problem() -> str | None:
    """Fetch MNIST from the cache or the local mirror; return a message if that is impossible."""
    if data.is_cached():
        return None
    if not os.environ.get("MNIST_COURSE_MIRRORS", "").strip():
        return HOW_TO.format(where=data.display_path(data.raw_dir()))
    try:
        data.fetch_mnist()
    except data.DataError as exc:
        return f"could not fetch MNIST from MNIST_COURSE_MIRRORS for the tests:\n{exc}"
    return None


@pytest.fixture(scope="session")
def mnist_raw():
    """Path of the real ``<root>/MNIST/raw`` folder (fetched from the local mirror if needed)."""
    problem = mnist_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return data.raw_dir()


@pytest.fixture(scope="session")
def mnist(mnist_raw):
    """The real MNIST arrays: ``(x_train, y_train), (x_test, y_test)`` (do not modify them)."""
    return data.load_mnist(mnist_raw.parent.parent, download=False)
