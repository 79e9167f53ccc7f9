"""Optimisers in NumPy, with exactly the update rules of the ``torch.optim`` class of the same name.

Each one is a small class: ``opt = Adam(lr=1e-3)``, then ``opt.step(params, grads)`` once per
batch, which updates the arrays of ``params`` (a dict name -> ndarray) IN PLACE from ``grads`` (a
dict with the same keys). The optimiser keeps its state (velocities, running averages, the step
count) per key. :mod:`mnist_course.numpy_cnn` re-exports them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SGD", "Adam"]



class SGD:
    """Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``:
    v = momentum * v + g (v = g on the first step); p -= lr * v."""

    def __init__(self, lr: float, momentum: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr, self.momentum = lr, momentum
        self.velocity: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        """Update params in place from grads (same keys)."""
        for k, g in grads.items():
            if self.momentum:
                v = self.velocity.get(k)
                if v is None:
                    v = self.velocity[k] = np.array(g, dtype=params[k].dtype)
                else:
                    v *= self.momentum
                    v += g
                g = v
            params[k] -= self.lr * g


class Adam:
    """Adam (Kingma & Ba, 2015), the same arithmetic as ``torch.optim.Adam``:

    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g²;
    p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
    """

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        """Update params in place from grads (same keys)."""
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        root_bc2 = math.sqrt(1 - b2 ** self.t)
        for k, g in grads.items():
            p = params[k]
            if k not in self.m:
                self.m[k] = np.zeros_like(p)
                self.v[k] = np.zeros_like(p)
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            denom = np.sqrt(v)
            denom /= root_bc2
            denom += self.eps
            p -= step_size * (m / denom)
