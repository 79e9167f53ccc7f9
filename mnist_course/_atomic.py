"""Atomic file writes, the one home of "write a temporary file beside the target, then rename".

Every file the course writes for later use (MNIST files, the cache's stamp, weights, notebooks)
goes through :func:`atomic_write`, so a reader finds the old file or the complete new one, never
a half-written one, even when the writer is interrupted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *,
                 encoding: str | None = None) -> Iterator[IO]:
    """Yield a file opened on a temporary file ``.<name>.*.part`` in ``path``'s folder.

    On a clean exit the file is flushed, synced to disk, made readable (0644) and renamed onto
    ``path`` in one step. On any error the temporary file is removed and the error propagates:
    an ``OSError`` (folder missing or not writable, disk full) is for the caller to word.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
