"""The Keras-style summary table of the course CNN, shared by ``numpy_cnn`` and ``torch_cnn``.

Each implementation lists its layers as rows (layer, output shape without the batch axis,
parameter count); this module turns them into the one table lessons 03 and 06 both print::

    Layer (type)              Output shape                 Param #
    ==============================================================
    conv1 (Conv2d 3x3)        (None, 32, 26, 26)               320
    ...
    ==============================================================
    Total params: 93,322
    --------------------------------------------------------------

Plain Python: it imports neither NumPy nor torch.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["format_summary"]

_WIDTH = 62


def format_summary(rows: Iterable[tuple[str, tuple[int, ...], int]], total: int) -> str:
    """The summary table as text (no trailing newline).

    rows: (layer, output shape without the batch axis, parameter count) triples, e.g.
    ``("conv1 (Conv2d 3x3)", (32, 26, 26), 320)``; total: the parameter count of the model.
    """
    lines = [f"{'Layer (type)':<26}{'Output shape':<22}{'Param #':>14}", "=" * _WIDTH]
    for name, shape, n in rows:
        lines.append(f"{name:<26}{(None,) + tuple(shape)!s:<22}{n:>14,}")
    lines += ["=" * _WIDTH, f"Total params: {total:,}", "-" * _WIDTH]
    return "\n".join(lines)
