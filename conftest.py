"""Before any solution notebook runs under nbval, make sure MNIST is available, once.

Without the data every notebook would fail on its own; this turns that into one clear message.
The check runs only when notebooks were collected (``pytest tests/...`` is not affected).
"""

from __future__ import annotations

import os

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
