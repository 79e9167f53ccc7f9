"""Numerical gradients by central differences, and the relative error used to compare gradients.

The numerical gradient of f at x changes one entry at a time:

    df/dx[i] ≈ (f(x + h e_i) - f(x - h e_i)) / (2h)

That is exact to O(h²) but costs two evaluations of f per entry, which is why it only checks
backprop and never replaces it. Use float64: in float32 the rounding error of f swamps the
difference for h = 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["numerical_gradient", "rel_error"]


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                       h: float = 1e-5) -> np.ndarray:
    """Gradient of the scalar function f at x, by central differences.

    Inputs:
        f: called as f(x), returns a scalar. It is evaluated 2 * x.size times.
        x: float array of any shape. It is perturbed IN PLACE, one entry at a time, and every
            entry is restored afterwards (also when f raises), so f may read x from anywhere,
            e.g. as one of the parameters of a network.
        h: the step.
    Returns:
        grad: array of x's shape and dtype, grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2h).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array (it is perturbed in place), got "
                        f"{type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a float array (float64 is best), got dtype {x.dtype}: "
                         f"an integer array cannot hold x + h")
    if not h > 0:
        raise ValueError(f"h must be positive, got {h}")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i].copy()
        try:
            x[i] = old + h
            f_plus = float(f(x))
            x[i] = old - h
            f_minus = float(f(x))
        finally:
            x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a, b, *, floor: float = 1e-8) -> float:
    """Largest relative error between two arrays: max |a - b| / max(floor, |a| + |b|).

    Inputs:
        a, b: arrays (or numbers) of the same shape; compared in float64.
        floor: the smallest denominator, so that two values both near 0 do not count as far
            apart. The default 1e-8 suits float64 gradients; the exercise checks raise it for
            float32 results (see :mod:`mnist_course.checks`).
    Returns:
        a float. About 1e-7 or less in float64 means a correct backward pass; 1e-2 or more means
        a bug.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare arrays of shapes {a.shape} and {b.shape}")
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))
