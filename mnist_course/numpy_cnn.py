"""The reference NumPy CNN: layers with hand-written backward passes, the course CNN, optimisers.

Every layer is a pair ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache) -> grads``,
in the style of CS231n, with PyTorch's names and conventions:

- images are NCHW: x has shape (N, C, H, W); conv weights are (F, C, KH, KW);
- a "convolution" is a cross-correlation (no kernel flip), output size
  floor((H + 2*pad - KH) / stride) + 1, exactly like ``torch.nn.functional.conv2d``;
- linear weights are (D_in, D_out), so ``out = x @ w + b`` (torch stores the transpose);
- max pooling sends the gradient to ONE maximal element per window, the first in row-major order.

Layers compute in the dtype they are given: float32 for training, float64 for gradient checks.
Nothing here loops over the batch or over pixels: the convolution is one matrix product over
receptive fields (im2col), computed channels-last internally (see :mod:`mnist_course._nhwc`),
and pooling loops only over the 4 offsets of a 2×2 window.

The course CNN (93,322 parameters)::

    Conv(1→32, 3×3) → ReLU → MaxPool 2 → Conv(32→64, 3×3) → ReLU → MaxPool 2
    → Conv(64→64, 3×3) → ReLU → Flatten (C, H, W) = 576 → Dense 64 → ReLU → Dense 10
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np

from mnist_course import _nhwc
from mnist_course.optim import SGD, Adam

__all__ = [  # noqa: RUF022 (in reading order)
    "conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
    "relu_forward", "relu_backward", "linear_forward", "linear_backward",
    "softmax_cross_entropy", "PARAM_NAMES", "PARAM_SHAPES", "init_cnn", "cnn_forward",
    "cnn_loss_and_grads", "predict", "summary", "SGD", "Adam", "fit",
]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def _check_ndim(name: str, a, ndim: int, layout: str) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {a.shape}")


def _check_positive_int(name: str, v, minimum: int) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------

def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    """2-D convolution (cross-correlation, as in PyTorch), vectorised with im2col.

    Inputs:
        x: (N, C, H, W) images.
        w: (F, C, KH, KW) filters.
        b: (F,) biases.
        stride: step of the window (>= 1). A stride that does not divide the padded size
            cleanly is fine: the last partial window is dropped (floor), like torch.
        pad: zeros added on each side of H and W (>= 0).
    Returns:
        out: (N, F, OH, OW) with OH = (H + 2*pad - KH) // stride + 1 (same for OW).
        cache: what :func:`conv2d_backward` needs.
    """
    _check_ndim("x", x, 4, "(N, C, H, W)")
    _check_ndim("w", w, 4, "(F, C, KH, KW)")
    _check_positive_int("stride", stride, 1)
    _check_positive_int("pad", pad, 0)
    f, c, kh, kw = w.shape
    if x.shape[1] != c:
        raise ValueError(f"x has {x.shape[1]} channels but w expects {c}: x shape {x.shape} "
                         f"(N, C, H, W), w shape {w.shape} (F, C, KH, KW)")
    if np.shape(b) != (f,):
        raise ValueError(f"b must have shape ({f},) (one bias per filter), got {np.shape(b)}")
    hp, wp = x.shape[2] + 2 * pad, x.shape[3] + 2 * pad
    if kh > hp or kw > wp:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {hp}x{wp} "
                         f"(x shape {x.shape}, pad {pad})")
    out, cache = _nhwc.conv_forward(x.transpose(0, 2, 3, 1), w, b, stride, pad)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), cache


def conv2d_backward(dout: np.ndarray, cache):
    """Backward pass of :func:`conv2d_forward`.

    Inputs:
        dout: (N, F, OH, OW) upstream gradient.
        cache: from :func:`conv2d_forward`.
    Returns:
        dx: (N, C, H, W), dw: (F, C, KH, KW), db: (F,).
    """
    _check_ndim("dout", dout, 4, "(N, F, OH, OW)")
    _, w_, x_shape, xp_shape, stride, _, _ = cache
    w_shape = w_.shape
    n = x_shape[0]
    oh = _nhwc.out_size(xp_shape[1], w_shape[2], stride, 0)
    ow = _nhwc.out_size(xp_shape[2], w_shape[3], stride, 0)
    if dout.shape != (n, w_shape[0], oh, ow):
        raise ValueError(f"dout must have the forward output's shape {(n, w_shape[0], oh, ow)}, "
                         f"got {dout.shape}")
    dx, dw, db = _nhwc.conv_backward(np.ascontiguousarray(dout.transpose(0, 2, 3, 1)), cache)
    return np.ascontiguousarray(dx.transpose(0, 3, 1, 2)), dw, db


# --------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------

def maxpool2d_forward(x: np.ndarray, size: int = 2, stride: int = 2):
    """Max pooling over size×size windows.

    Inputs:
        x: (N, C, H, W).
        size: window side; stride: step (floor for sizes that do not divide, like torch).
    Returns:
        out: (N, C, OH, OW) with OH = (H - size) // stride + 1.
        cache: remembers which element of each window was the maximum (the first one in
            row-major order when several are tied, as in torch).
    """
    _check_ndim("x", x, 4, "(N, C, H, W)")
    _check_positive_int("size", size, 1)
    _check_positive_int("stride", stride, 1)
    if size > x.shape[2] or size > x.shape[3]:
        raise ValueError(f"pooling window {size}x{size} is larger than the input "
                         f"{x.shape[2]}x{x.shape[3]} (x shape {x.shape})")
    out, cache = _nhwc.pool_forward(x.transpose(0, 2, 3, 1), size, stride)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2)), cache


def maxpool2d_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Backward pass of :func:`maxpool2d_forward`.

    Inputs:
        dout: (N, C, OH, OW).
    Returns:
        dx: (N, C, H, W): each window's gradient lands on its (first) maximum, zeros elsewhere.
    """
    _check_ndim("dout", dout, 4, "(N, C, OH, OW)")
    out = cache[1]
    expected = (out.shape[0], out.shape[3], out.shape[1], out.shape[2])
    if dout.shape != expected:
        raise ValueError(f"dout must have the forward output's shape {expected}, "
                         f"got {dout.shape}")
    dx = _nhwc.pool_backward(np.ascontiguousarray(dout.transpose(0, 2, 3, 1)), cache)
    return np.ascontiguousarray(dx.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------------------------
# ReLU and linear
# --------------------------------------------------------------------------------------------

def relu_forward(x: np.ndarray):
    """ReLU: out = max(0, x), any shape. Returns (out, cache)."""
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Backward of ReLU: dx = dout where x > 0, else 0 (the gradient at exactly 0 is 0, as in
    torch). Same shape as dout."""
    x = cache
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the forward input's shape {x.shape}, got {dout.shape}")
    return dout * (x > 0)


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """Fully connected layer: out = x @ w + b.

    Inputs: x (N, D_in), w (D_in, D_out), b (D_out,).
    Returns: out (N, D_out), cache.
    """
    _check_ndim("x", x, 2, "(N, D_in)")
    _check_ndim("w", w, 2, "(D_in, D_out)")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[1]} features but w expects {w.shape[0]}: x shape "
                         f"{x.shape} (N, D_in), w shape {w.shape} (D_in, D_out)")
    if np.shape(b) != (w.shape[1],):
        raise ValueError(f"b must have shape ({w.shape[1]},), got {np.shape(b)}")
    return x @ w + b, (x, w)


def linear_backward(dout: np.ndarray, cache):
    """Backward of :func:`linear_forward`.

    Inputs: dout (N, D_out). Returns dx (N, D_in), dw (D_in, D_out), db (D_out,).
    """
    x, w = cache
    if dout.shape != (x.shape[0], w.shape[1]):
        raise ValueError(f"dout must have shape {(x.shape[0], w.shape[1])}, got {dout.shape}")
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray):
    """Softmax followed by the cross-entropy loss, averaged over the batch.

    Inputs:
        logits: (N, K) raw scores.
        y: (N,) integer labels in [0, K).
    Returns:
        loss: a Python float, mean over the batch of -log softmax(logits)[y].
        dlogits: (N, K) gradient of the loss: (softmax - one_hot(y)) / N.
    Subtracting each row's maximum first keeps exp() from overflowing (logits of ±1e4 are fine).
    """
    _check_ndim("logits", logits, 2, "(N, K)")
    y = np.asarray(y)
    n, k = logits.shape
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one label per row of logits), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values from {y.min()} to {y.max()}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    log_prob_y = shifted[rows, y] - np.log(sum_exp[:, 0])
    loss = float(-log_prob_y.mean())
    dlogits = exp / sum_exp
    dlogits[rows, y] -= 1
    dlogits /= n
    return loss, dlogits


# --------------------------------------------------------------------------------------------
# The course CNN
# --------------------------------------------------------------------------------------------

PARAM_NAMES = ("conv1_w", "conv1_b", "conv2_w", "conv2_b", "conv3_w", "conv3_b",
               "fc1_w", "fc1_b", "fc2_w", "fc2_b")

#: Parameter shapes: conv weights (F, C, KH, KW), linear weights (D_in, D_out), biases (D,).
PARAM_SHAPES = {
    "conv1_w": (32, 1, 3, 3), "conv1_b": (32,),
    "conv2_w": (64, 32, 3, 3), "conv2_b": (64,),
    "conv3_w": (64, 64, 3, 3), "conv3_b": (64,),
    "fc1_w": (576, 64), "fc1_b": (64,),
    "fc2_w": (64, 10), "fc2_b": (10,),
}


def init_cnn(seed: int = 0, scheme: str = "glorot") -> dict:
    """The course CNN's parameters, float32. Same seed, same numbers.

    scheme:
        "glorot" (the default, and Keras's default, as in the network this course comes from):
            weights ~ U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010).
        "he": weights ~ N(0, 2 / fan_in) (He et al., 2015), which keeps the variance of the
            activations steady through ReLU layers.
    fan_in is C*KH*KW for a convolution and D_in for a dense layer; fan_out is F*KH*KW and
    D_out. Biases start at 0. (Measured with the defaults of :func:`fit`: "glorot" reaches
    0.991 test accuracy after 3 epochs, "he" 0.985: its larger first-layer weights train less
    well in so few epochs.)

    Returns a dict with keys conv1_w (32,1,3,3) conv1_b (32,) conv2_w (64,32,3,3) conv2_b (64,)
    conv3_w (64,64,3,3) conv3_b (64,) fc1_w (576,64) fc1_b (64,) fc2_w (64,10) fc2_b (10,).
    """
    if scheme not in ("glorot", "he"):
        raise ValueError(f"scheme must be 'glorot' or 'he', got {scheme!r}")
    rng = np.random.default_rng(seed)
    params = {}
    for name in PARAM_NAMES:
        shape = PARAM_SHAPES[name]
        if name.endswith("_b"):
            params[name] = np.zeros(shape, dtype=np.float32)
            continue
        if name.startswith("conv"):
            fan_in, fan_out = math.prod(shape[1:]), shape[0] * math.prod(shape[2:])
        else:
            fan_in, fan_out = shape
        if scheme == "he":
            w = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, shape)
        params[name] = w.astype(np.float32)
    return params


def _check_params(params: dict) -> None:
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"params is missing {', '.join(missing)}; expected the keys of "
                         f"init_cnn(): {', '.join(PARAM_NAMES)}")
    for name in PARAM_NAMES:
        if np.shape(params[name]) != PARAM_SHAPES[name]:
            raise ValueError(f"params[{name!r}] must have shape {PARAM_SHAPES[name]}, "
                             f"got {np.shape(params[name])}")


def _check_images(x) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"x must have shape (N, 1, 28, 28), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be a float array (normalised images, see "
                         f"mnist_course.data.normalize), got dtype {x.dtype}")


def _forward(params: dict, x: np.ndarray):
    """Forward pass, channels-last inside. Returns logits (N, 10) and the cache.

    Two exact shortcuts for the first two blocks, conv → +bias → ReLU → max pool:
    a per-channel bias and ReLU both commute with the max of a window, so the block pools the
    bare convolution first (one fused kernel, :func:`_nhwc.conv_pool_forward`) and then adds
    the bias and applies ReLU on the 4× smaller map.
    """
    n = x.shape[0]
    p = params
    a0 = x.reshape(n, 28, 28, 1)  # C = 1, so NCHW -> NHWC is a free reshape
    m1, c1 = _nhwc.conv_pool_forward(a0, p["conv1_w"])       # conv (N,26,26,32) + pool
    a1 = m1 + p["conv1_b"]                                    # (N, 13, 13, 32)
    np.maximum(a1, 0, out=a1)
    m2, c2 = _nhwc.conv_pool_forward(a1, p["conv2_w"])       # conv (N,11,11,64) + pool
    a2 = m2 + p["conv2_b"]                                    # (N, 5, 5, 64)
    np.maximum(a2, 0, out=a2)
    z3, c3 = _nhwc.conv_forward(a2, p["conv3_w"], p["conv3_b"])  # (N, 3, 3, 64)
    a3 = np.maximum(z3, 0)
    flat = a3.transpose(0, 3, 1, 2).reshape(n, 576)           # flatten in (C, H, W) order
    h = flat @ p["fc1_w"] + p["fc1_b"]                        # (N, 64)
    a4 = np.maximum(h, 0)
    logits = a4 @ p["fc2_w"] + p["fc2_b"]                     # (N, 10)
    cache = (c1, a1, c2, a2, c3, a3, flat, a4)
    return logits, cache


def _channel_sum(d: np.ndarray) -> np.ndarray:
    """Sum of d (N, H, W, C) over everything but the channels: (C,). (A matrix-vector product,
    much faster than .sum(axis=(0, 1, 2)) for this layout.)"""
    d2 = d.reshape(-1, d.shape[-1])
    return np.ones(d2.shape[0], dtype=d.dtype) @ d2


def _backward(params: dict, dlogits: np.ndarray, cache) -> dict:
    """Backward pass of :func:`_forward`: gradients for every parameter."""
    c1, a1, c2, a2, c3, a3, flat, a4 = cache
    p = params
    n = dlogits.shape[0]
    g = {}
    g["fc2_w"] = a4.T @ dlogits
    g["fc2_b"] = dlogits.sum(axis=0)
    da4 = dlogits @ p["fc2_w"].T
    da4 *= a4 > 0                                        # ReLU
    g["fc1_w"] = flat.T @ da4
    g["fc1_b"] = da4.sum(axis=0)
    dflat = da4 @ p["fc1_w"].T
    da3 = np.ascontiguousarray(dflat.reshape(n, 64, 3, 3).transpose(0, 2, 3, 1))
    da3 *= a3 > 0                                        # ReLU
    da2, g["conv3_w"], g["conv3_b"] = _nhwc.conv_backward(da3, c3)
    da2 *= a2 > 0                                        # ReLU (after pooling)
    g["conv2_b"] = _channel_sum(da2)                     # bias (added after pooling)
    da1, g["conv2_w"] = _nhwc.conv_pool_backward(da2, c2)
    da1 *= a1 > 0                                        # ReLU (after pooling)
    g["conv1_b"] = _channel_sum(da1)                     # bias (added after pooling)
    _, g["conv1_w"] = _nhwc.conv_pool_backward(da1, c1, need_dx=False)
    return {k: g[k] for k in PARAM_NAMES}


def cnn_forward(params: dict, x: np.ndarray):
    """Forward pass of the course CNN.

    Inputs:
        params: dict from :func:`init_cnn`.
        x: (N, 1, 28, 28) normalised images (float32, or float64 for gradient checks).
    Returns:
        logits: (N, 10) class scores; cache: for the backward pass.
    """
    _check_params(params)
    _check_images(x)
    return _forward(params, x)


def _loss_grads_logits(params: dict, x: np.ndarray, y: np.ndarray):
    logits, cache = _forward(params, x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    return loss, _backward(params, dlogits, cache), logits


def cnn_loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray):
    """Mean cross-entropy loss of the course CNN on a batch, and its gradient.

    Inputs:
        params: dict from :func:`init_cnn`.
        x: (N, 1, 28, 28) normalised images; y: (N,) integer labels.
    Returns:
        loss: float; grads: dict with the same keys and shapes as params.
    """
    _check_params(params)
    _check_images(x)
    loss, grads, _ = _loss_grads_logits(params, x, y)
    return loss, grads


def predict(params: dict, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted class (N,) int64 for images x (N, 1, 28, 28), batch_size images at a time."""
    _check_params(params)
    _check_images(x)
    _check_positive_int("batch_size", batch_size, 1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], batch_size):
        logits, _ = _forward(params, x[start:start + batch_size])
        out[start:start + batch_size] = logits.argmax(axis=1)
    return out


def summary(params: dict) -> int:
    """Print a Keras-style table (layer, output shape, parameters) and return the total count."""
    _check_params(params)
    p = {k: np.asarray(v) for k, v in params.items()}
    rows = []
    c, h, w = 1, 28, 28

    def count(*names):
        return sum(int(p[k].size) for k in names)

    for i, pool in ((1, True), (2, True), (3, False)):
        f, _, kh, kw = p[f"conv{i}_w"].shape
        c, h, w = f, h - kh + 1, w - kw + 1
        rows.append((f"conv{i} (Conv2d {kh}x{kw})", (c, h, w), count(f"conv{i}_w", f"conv{i}_b")))
        rows.append((f"relu{i} (ReLU)", (c, h, w), 0))
        if pool:
            h, w = h // 2, w // 2
            rows.append((f"pool{i} (MaxPool2d 2)", (c, h, w), 0))
    rows.append(("flatten (Flatten)", (c * h * w,), 0))
    rows.append(("fc1 (Linear)", (p["fc1_w"].shape[1],), count("fc1_w", "fc1_b")))
    rows.append(("relu4 (ReLU)", (p["fc1_w"].shape[1],), 0))
    rows.append(("fc2 (Linear)", (p["fc2_w"].shape[1],), count("fc2_w", "fc2_b")))
    total = sum(int(v.size) for v in p.values())

    line = "-" * 62
    print(f"{'Layer (type)':<26}{'Output shape':<22}{'Param #':>14}")
    print("=" * 62)
    for name, shape, n in rows:
        print(f"{name:<26}{(None,) + shape!s:<22}{n:>14,}")
    print("=" * 62)
    print(f"Total params: {total:,}")
    print(line)
    return total


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------

def fit(params: dict, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
        y_test: np.ndarray, *, epochs: int = 3, batch_size: int = 64, optimizer=None,
        seed: int = 0, progress: bool = True, on_epoch: Callable | None = None) -> dict:
    """Train the course CNN with minibatches; params are updated in place.

    Inputs:
        x_train (N, 1, 28, 28) and x_test (M, 1, 28, 28): normalised float32 images
        (``mnist_course.data.normalize``); y_train (N,), y_test (M,): integer labels.
        optimizer: anything with ``.step(params, grads)``; None means ``Adam(1e-3)``.
        seed: seeds the shuffling (``np.random.default_rng(seed)``), so a rerun is identical.
        progress: a tqdm bar per epoch (on stderr). on_epoch(row) is called after each epoch.
    Returns:
        history: {"epochs": [{"epoch", "loss", "train_acc", "test_acc", "seconds"}, ...],
        "step_loss": [...], "test_accuracy", "train_seconds", "seconds_per_epoch"}.
        "loss" and "train_acc" are running means over the epoch's batches; "seconds" is the
        training time of the epoch, evaluation excluded.
    """
    from tqdm import tqdm

    _check_params(params)
    for name, x, y in (("x_train", x_train, y_train), ("x_test", x_test, y_test)):
        _check_images(x)
        if np.shape(y) != (x.shape[0],):
            raise ValueError(f"{name} has {x.shape[0]} images but its labels have shape "
                             f"{np.shape(y)}")
    _check_positive_int("epochs", epochs, 1)
    _check_positive_int("batch_size", batch_size, 1)
    optimizer = Adam(1e-3) if optimizer is None else optimizer
    _nhwc.keep_freed_memory()
    rng = np.random.default_rng(seed)
    n = x_train.shape[0]
    steps = math.ceil(n / batch_size)
    history: dict = {"epochs": [], "step_loss": []}
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=True, ncols=80,
                   mininterval=0.5, file=sys.stderr, disable=not progress)
        start = time.perf_counter()
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            loss, grads, logits = _loss_grads_logits(params, xb, yb)
            optimizer.step(params, grads)
            history["step_loss"].append(loss)
            loss_sum += loss * len(idx)
            correct += int((logits.argmax(axis=1) == yb).sum())
            seen += len(idx)
            if i % 20 == 0 or i == steps - 1:
                bar.set_postfix_str(f"loss {loss_sum / seen:.3f} acc {correct / seen:.3f}",
                                    refresh=False)
            bar.update(1)
        seconds = time.perf_counter() - start
        bar.close()
        test_acc = float((predict(params, x_test) == y_test).mean())
        row = {"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
               "test_acc": test_acc, "seconds": seconds}
        history["epochs"].append(row)
        if on_epoch is not None:
            on_epoch(row)
    rows = history["epochs"]
    history["test_accuracy"] = rows[-1]["test_acc"]
    history["train_seconds"] = sum(r["seconds"] for r in rows)
    history["seconds_per_epoch"] = history["train_seconds"] / len(rows)
    return history
