"""Regularisation layers in NumPy: batch normalisation (2-d, per channel) and inverted dropout.

Same style as :mod:`mnist_course.numpy_cnn` (which re-exports them): ``*_forward(...) -> (out,
cache)`` and ``*_backward(dout, cache)``, images NCHW, the conventions of torch:

- ``batchnorm2d_forward`` normalises each channel with the mean and the BIASED variance of its
  N*H*W values in training mode, and updates the running statistics in place by
  ``running = (1 - momentum) * running + momentum * batch`` with the UNBIASED variance for
  ``running_var`` (as ``torch.nn.BatchNorm2d``); in evaluation mode it normalises with the running
  statistics and leaves them alone.
- ``dropout_forward`` zeroes each value with probability p and scales the kept ones by 1/(1-p)
  in training mode, so that nothing changes at evaluation time, where it is the identity.
"""

from __future__ import annotations

import numpy as np

__all__ = [  # noqa: RUF022 (in reading order)
    "batchnorm2d_forward", "batchnorm2d_backward", "dropout_forward", "dropout_backward",
]


# --------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------

def _check_channel_vector(name: str, a, c: int) -> None:
    if not isinstance(a, np.ndarray) or a.shape != (c,):
        got = a.shape if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{name} must be a NumPy array of shape ({c},), one value per channel of "
                         f"x, got {got}")


def _check_batchnorm_args(x, gamma, beta, state, momentum, eps) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"x must be a NumPy array of shape (N, C, H, W), got {got}")
    c = x.shape[1]
    _check_channel_vector("gamma", gamma, c)
    _check_channel_vector("beta", beta, c)
    if not isinstance(state, dict) or not {"running_mean", "running_var"} <= set(state):
        raise ValueError("state must be a dict with the arrays 'running_mean' and 'running_var', "
                         "e.g. {'running_mean': np.zeros(C), 'running_var': np.ones(C)}")
    for key in ("running_mean", "running_var"):
        _check_channel_vector(f"state[{key!r}]", state[key], c)
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1] (torch's default is 0.1), got {momentum!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive (torch's default is 1e-5), got {eps!r}")


def batchnorm2d_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, state: dict,
                        train: bool = True, momentum: float = 0.1, eps: float = 1e-5):
    """Batch normalisation per channel, as ``torch.nn.functional.batch_norm``.

    Inputs:
        x: (N, C, H, W)
        gamma, beta: (C,), the learned scale and shift
        state: dict with ``running_mean`` and ``running_var``, arrays of shape (C,). In training
            mode they are updated IN PLACE: running = (1 - momentum) * running + momentum * stat,
            with the unbiased variance (divided by N*H*W - 1) for running_var. Evaluation mode
            only reads them.
        train: True normalises with the statistics of this batch, False with the running ones.
        momentum: weight of the new batch in the running statistics.
        eps: added to the variance inside the square root.
    Returns:
        out: (N, C, H, W), gamma * (x - mean) / sqrt(var + eps) + beta (per channel)
        cache: for batchnorm2d_backward
    """
    _check_batchnorm_args(x, gamma, beta, state, momentum, eps)
    axes = (0, 2, 3)
    if train:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        if m < 2:
            raise ValueError(f"training mode needs more than one value per channel to estimate "
                             f"a variance; x has shape {x.shape} (N*H*W = {m})")
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)                      # biased: used to normalise
        for key, stat in (("running_mean", mean), ("running_var", var * (m / (m - 1)))):
            running = state[key]
            running *= 1 - momentum
            running += momentum * stat
    else:
        mean, var = state["running_mean"], state["running_var"]
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    out = gamma[None, :, None, None] * x_hat + beta[None, :, None, None]
    return out, (x_hat, gamma, inv_std, bool(train))


def batchnorm2d_backward(dout: np.ndarray, cache):
    """Gradients of batchnorm2d_forward.

    Inputs:
        dout: (N, C, H, W), upstream gradient
        cache: from batchnorm2d_forward
    Returns:
        dx: (N, C, H, W). In training mode the mean and the variance depend on x, which adds two
            terms; in evaluation mode they are constants and dx = dout * gamma / sqrt(var + eps).
        dgamma, dbeta: (C,)
    """
    x_hat, gamma, inv_std, train = cache
    if np.shape(dout) != x_hat.shape:
        raise ValueError(f"dout must have shape {x_hat.shape} (the shape of out), got "
                         f"{np.shape(dout)}")
    axes = (0, 2, 3)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * x_hat).sum(axis=axes)
    scale = (gamma * inv_std)[None, :, None, None]
    if not train:
        return dout * scale, dgamma, dbeta
    m = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    # dx = gamma/std * (dout - mean(dout) - x_hat * mean(dout * x_hat)), means per channel
    dx = dout - (dbeta / m)[None, :, None, None] - x_hat * (dgamma / m)[None, :, None, None]
    dx *= scale
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------

def dropout_forward(x: np.ndarray, p: float, train: bool = True,
                    rng: np.random.Generator | None = None):
    """Inverted dropout, as ``torch.nn.functional.dropout``.

    Inputs:
        x: array of any shape
        p: probability of ZEROING each value, 0 <= p <= 1 (p = 1 zeroes everything, as torch).
        train: False (evaluation) returns x unchanged (a copy), and so does p = 0.
        rng: a ``np.random.Generator`` that draws the mask, so that a seeded generator gives a
            reproducible mask; None uses a fresh ``np.random.default_rng()``.
    Returns:
        out: x's shape; in training mode x * mask / (1 - p), the mask keeping each value with
            probability 1 - p
        cache: for dropout_backward (the scaled mask, or None for the identity)
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array, got {type(x).__name__}")
    if isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"p is the probability of dropping a value and must be in [0, 1], got "
                         f"{p!r}")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator (np.random.default_rng(seed)) or "
                        f"None, got {type(rng).__name__}")
    if not train or p == 0:
        return x.copy(), None
    if rng is None:
        rng = np.random.default_rng()
    keep = rng.random(x.shape) >= p               # True with probability 1 - p
    mask = keep.astype(x.dtype if x.dtype.kind == "f" else np.float64)
    mask *= 0.0 if p == 1 else 1.0 / (1.0 - p)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Gradient of dropout_forward: dout through the same (scaled) mask.

    Inputs:
        dout: upstream gradient, the shape of out
        cache: from dropout_forward
    Returns:
        dx: dout's shape, dout * mask / (1 - p) (a copy of dout for the identity)
    """
    mask = cache
    if mask is None:
        return np.array(dout, copy=True)
    if np.shape(dout) != mask.shape:
        raise ValueError(f"dout must have shape {mask.shape} (the shape of out), got "
                         f"{np.shape(dout)}")
    return dout * mask
