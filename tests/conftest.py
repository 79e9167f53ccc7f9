"""Shared fixtures. Tests that need the real MNIST ask for ``mnist_raw`` (or ``mnist``), those
that need the real Fashion-MNIST for ``fashion_raw``.

No test reaches the internet: the real data comes from the cache, or from the local mirror named
by ``MNIST_COURSE_MIRRORS`` (Fashion-MNIST: ``MNIST_COURSE_FASHION_MIRRORS``). Without either
the fixture FAILS with a message saying how to set the variable; it never skips silently.
"""

from __future__ import annotations

import os

import pytest

from mnist_course import data

HOW_TO = (
    "{title} is not in the cache ({where}) and {variable} is not set. The tests never "
    "download from the internet; point them at a local copy of the four .gz files, e.g.\n"
    '    export {variable}="file://$(cd ../shared/data/{name} && pwd)"\n'
    "(or set MNIST_COURSE_DATA to a folder whose {folder}/raw/ holds the uncompressed files)."
)


def mnist_problem(dataset: str = "mnist") -> str | None:
    """Fetch MNIST (or ``dataset``) from the cache or the local mirror; return a message if that
    is impossible."""
    ds = data.get_dataset(dataset)
    if data.is_cached(dataset=ds.name):
        return None
    if not os.environ.get(ds.mirrors_variable, "").strip():
        return HOW_TO.format(title=ds.title, variable=ds.mirrors_variable, name=ds.name,
                             folder=ds.folder,
                             where=data.display_path(data.raw_dir(dataset=ds.name)))
    try:
        data.fetch_mnist(dataset=ds.name)
    except data.DataError as exc:
        return (f"could not fetch {ds.title} from {ds.mirrors_variable} for the tests:\n"
                f"{exc}")
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


@pytest.fixture(scope="session")
def fashion_raw():
    """Path of the real ``<root>/FashionMNIST/raw`` folder (fetched from the local mirror
    ``MNIST_COURSE_FASHION_MIRRORS`` if needed)."""
    problem = mnist_problem("fashion-mnist")
    if problem:
        pytest.fail(problem, pytrace=False)
    return data.raw_dir(dataset="fashion-mnist")
