"""The learning-rate schedule that ``mnist-course train`` uses in NumPy and in torch alike.

:func:`cosine_factor` is the multiplier of the base learning rate at each step; torch applies it
with ``LambdaLR`` and a NumPy optimiser with :class:`CosineDecay`, so both implementations (and
each rank of ``train --nproc``, see ``distributed``) decay the same way. Imports nothing heavy.
"""

from __future__ import annotations

import math

__all__ = ["CosineDecay", "cosine_factor"]


def cosine_factor(step: int, total_steps: int) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``total_steps``: 1 -> 0 along a cosine.

    Small steps at the end let Adam settle in a minimum instead of bouncing around it; with a
    constant 1e-3 the test accuracy after 3 epochs wobbles around 0.985, with the decay it ends
    near 0.99.
    """
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


class CosineDecay:
    """Wraps a NumPy optimiser (anything with ``.lr`` and ``.step(params, grads)``) so that its
    learning rate follows :func:`cosine_factor`, exactly like ``LambdaLR`` does for torch."""

    def __init__(self, optimizer, total_steps: int) -> None:
        self.optimizer, self.total_steps, self.t = optimizer, total_steps, 0
        self.base_lr = optimizer.lr

    def step(self, params: dict, grads: dict) -> None:
        self.optimizer.lr = self.base_lr * cosine_factor(self.t, self.total_steps)
        self.optimizer.step(params, grads)
        self.t += 1
