"""Optimisers in NumPy, with exactly the update rules of the ``torch.optim`` class of the same name.

Each one is a small class: ``opt = Adam(lr=1e-3)``, then ``opt.step(params, grads)`` once per
batch, which updates the arrays of ``params`` (a dict name -> ndarray) IN PLACE from ``grads`` (a
dict with the same keys and shapes; it is never modified). The optimiser keeps its state
(velocities, running averages, the step count) per key. :mod:`mnist_course.numpy_cnn` re-exports
them.

Weight decay is the L2 penalty ``wd/2 * ||p||²`` added to the loss, i.e. ``g = g + wd * p`` before
the rest of the update, as in torch's SGD, RMSprop and Adam (not AdamW's decoupled decay).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SGD", "RMSprop", "Adam"]  # noqa: RUF022 (in reading order)


# --------------------------------------------------------------------------------------------
# Argument checks shared by the optimisers
# --------------------------------------------------------------------------------------------

def _check_lr(lr) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be a positive learning rate (e.g. 1e-3), got {lr!r}")


def _check_unit(name: str, value, hint: str) -> None:
    """value must be in [0, 1)."""
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}: {hint}")


def _check_non_negative(name: str, value, hint: str) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}: {hint}")


def _gradient(params: dict, key, g, weight_decay: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, g + weight_decay * p) after checking that key and shape match; grads stay unchanged."""
    try:
        p = params[key]
    except KeyError:
        raise KeyError(f"grads has the key {key!r}, which params lacks: params and grads must "
                       f"have the same keys (params has {sorted(params)})") from None
    if not isinstance(p, np.ndarray):
        raise TypeError(f"params[{key!r}] must be a NumPy array (it is updated in place), got "
                        f"{type(p).__name__}")
    if np.shape(g) != p.shape:
        raise ValueError(f"grads[{key!r}] has shape {np.shape(g)}; expected {p.shape}, the shape "
                         f"of params[{key!r}]")
    if weight_decay:
        g = g + weight_decay * p          # a new array: grads[key] is left alone
    return p, g


# --------------------------------------------------------------------------------------------
# The optimisers
# --------------------------------------------------------------------------------------------

class SGD:
    """Stochastic gradient descent with optional momentum and weight decay, as ``torch.optim.SGD``
    (no dampening, no Nesterov)::

        g = g + weight_decay * p
        v = momentum * v + g        (v = g on the first step)
        p -= lr * v                 (p -= lr * g without momentum)
    """

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        _check_lr(lr)
        _check_unit("momentum", momentum, "0 is plain SGD, 0.9 a common choice")
        _check_non_negative("weight_decay", weight_decay, "it is the L2 factor, e.g. 5e-4")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        """Update the arrays of params in place from grads (same keys and shapes)."""
        for k, g in grads.items():
            p, g = _gradient(params, k, g, self.weight_decay)
            if self.momentum:
                v = self.velocity.get(k)
                if v is None:
                    v = self.velocity[k] = np.array(g, dtype=p.dtype)
                else:
                    v *= self.momentum
                    v += g
                g = v
            p -= self.lr * g


class RMSprop:
    """RMSprop (Hinton, 2012), as ``torch.optim.RMSprop`` (not centred, no momentum)::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g²          (v starts at 0)
        p -= lr * g / (sqrt(v) + eps)
    """

    def __init__(self, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check_lr(lr)
        _check_unit("alpha", alpha, "it is the decay of the running mean of g², e.g. 0.99")
        _check_non_negative("eps", eps, "it keeps the division finite, e.g. 1e-8")
        _check_non_negative("weight_decay", weight_decay, "it is the L2 factor, e.g. 5e-4")
        self.lr, self.alpha, self.eps, self.weight_decay = lr, alpha, eps, weight_decay
        self.square_avg: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        """Update the arrays of params in place from grads (same keys and shapes)."""
        a = self.alpha
        for k, g in grads.items():
            p, g = _gradient(params, k, g, self.weight_decay)
            v = self.square_avg.get(k)
            if v is None:
                v = self.square_avg[k] = np.zeros_like(p)
            v *= a
            v += (1 - a) * (g * g)
            denom = np.sqrt(v)
            denom += self.eps
            p -= self.lr * (g / denom)


class Adam:
    """Adam (Kingma & Ba, 2015), the same arithmetic as ``torch.optim.Adam`` (L2 weight decay,
    not AdamW)::

        g = g + weight_decay * p
        m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g²        (both start at 0; t counts step calls)
        p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
    """

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check_lr(lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), e.g. (0.9, 0.999), got "
                             f"{betas!r}") from None
        _check_unit("betas[0]", b1, "the decay of the mean of g, e.g. 0.9")
        _check_unit("betas[1]", b2, "the decay of the mean of g², e.g. 0.999")
        _check_non_negative("eps", eps, "it keeps the division finite, e.g. 1e-8")
        _check_non_negative("weight_decay", weight_decay, "it is the L2 factor, e.g. 5e-4")
        self.lr, self.betas, self.eps, self.weight_decay = lr, (b1, b2), eps, weight_decay
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        """Update the arrays of params in place from grads (same keys and shapes)."""
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        root_bc2 = math.sqrt(1 - b2 ** self.t)
        for k, g in grads.items():
            p, g = _gradient(params, k, g, self.weight_decay)
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
