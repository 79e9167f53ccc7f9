"""The reference NumPy CNN: layers with hand-written backward passes, the course CNN, optimisers.

Every layer is a pair ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache) -> grads``,
in the style of CS231n, with PyTorch's names and conventions:

- images are NCHW: x has shape (N, C, H, W); conv weights are (F, C, KH, KW);
- a "convolution" is a cross-correlation (no kernel flip), output size
  floor((H + 2*pad - KH) / stride) + 1, exactly like ``torch.nn.functional.conv2d``;
- linear weights are (D_in, D_out), so ``out = x @ w + b`` (torch stores the transpose);
- max pooling sends the gradient to ONE maximal element per window, the first in row-major order.

Layers compute in the dtype they are given: float32 for training, float64 for gradient checks.
Nothing here loops over the batch or over pixels in Python: the convolution is a matrix product
over receptive fields (im2col), and pooling loops only over the size*size offsets of a window.

The course CNN (93,322 parameters)::

    Conv(1→32, 3×3) → ReLU → MaxPool 2 → Conv(32→64, 3×3) → ReLU → MaxPool 2
    → Conv(64→64, 3×3) → ReLU → Flatten (C, H, W) = 576 → Dense 64 → ReLU → Dense 10

:func:`cnn_forward` and :func:`cnn_loss_and_grads` are the plain composition of the layers above.
:func:`fused_forward` and :func:`fused_loss_and_grads` compute the same numbers faster
(channels-last, pooling fused into the convolution, see :mod:`mnist_course._nhwc`); ``fit``,
``predict``, the CLI and the bench use them, and ``mnist-course bench`` times both.

:func:`save_params` and :func:`load_params` write and read weights as ``.npz`` files (lesson 01's
``numpy_mlp.npz``, lesson 03's ``numpy_cnn.npz``): written atomically, read without ever
unpickling, and checked, so that a damaged file, or one received from someone else, gives a
clear :class:`WeightsFileError` instead of a traceback or running foreign code. Weights trained
on another dataset than MNIST carry its name (``save_params(..., dataset="fashion-mnist")``,
read back by :func:`saved_dataset`); :func:`load_params` leaves that record out.
"""

from __future__ import annotations

import math
import os
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from mnist_course import CourseError, _nhwc, live_progress
from mnist_course._atomic import atomic_write
from mnist_course.history import EpochTotals, finish_history, new_history
from mnist_course.optim import SGD, Adam, RMSprop
from mnist_course.regularization import (
    batchnorm2d_backward,
    batchnorm2d_forward,
    dropout_backward,
    dropout_forward,
)
from mnist_course.summary_table import format_summary

__all__ = [  # noqa: RUF022 (in reading order)
    "conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
    "relu_forward", "relu_backward", "linear_forward", "linear_backward",
    "softmax_cross_entropy", "PARAM_NAMES", "PARAM_SHAPES", "init_cnn", "cnn_forward",
    "cnn_backward", "cnn_loss_and_grads", "fused_forward", "fused_loss_and_grads", "predict",
    "summary", "save_params", "load_params", "saved_dataset", "WeightsFileError",
    "MissingWeightsError",
    "batchnorm2d_forward", "batchnorm2d_backward", "dropout_forward",
    "dropout_backward", "SGD", "RMSprop", "Adam", "fit",
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


def _window_view(a: np.ndarray, i: int, j: int, oh: int, ow: int, stride: int) -> np.ndarray:
    """The (N, C, OH, OW) view of a (N, C, H, W) holding the element at offset (i, j) of every
    window: a[:, :, i + stride*p, j + stride*q]."""
    return a[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
# A convolution is one matrix product over receptive fields (im2col). Two layouts of the same
# im2col, and conv2d_forward takes the one whose copies run over longer rows of memory:
#
# - channels-first, here: for each image, row (c, i, j) of cols is input channel c shifted by
#   the kernel offset (i, j), an (OH, OW) slab; (F, C*KH*KW) @ cols is then that image's
#   (F, OH*OW) output, already NCHW. Long rows when the image is large and channels are few
#   (conv1 of the course CNN: 26-pixel rows, 1 channel).
# - channels-last, in mnist_course._nhwc: a receptive field is KH*KW runs of C contiguous
#   numbers. Long rows when channels are many and the image small (conv2 and conv3), at the
#   price of transposing x, out, dout and dx between NCHW and NHWC.
#
# The rule below (channels-last when a row of the output, OW, is shorter than a row of a
# receptive field in channels-last, KW*C) was measured on the course's 2-core machine (batch 64,
# one BLAS thread, CPU time): the composed CNN's forward+backward took about 15% less time than
# with channels-last for every layer and 25% less than with channels-first for every layer.


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs from :func:`conv2d_forward`."""
    channels_last: bool  # which im2col layout was used
    cols: np.ndarray     # channels-first: (N, C*KH*KW, OH*OW); channels-last: (N*OH*OW, KH*KW*C)
    w: np.ndarray        # (F, C, KH, KW) filters
    x_shape: tuple       # (N, C, H, W) input shape, before padding
    stride: int
    pad: int


def _pad_hw(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the two spatial axes of x (N, C, H, W) -> (N, C, H+2*pad, W+2*pad)."""
    if pad == 0:
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    xp[:, :, pad:pad + h, pad:pad + w] = x
    return xp


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
        cache: a :class:`ConvCache`, what :func:`conv2d_backward` needs.
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
    n = x.shape[0]
    oh, ow = _nhwc.out_size(hp, kh, stride), _nhwc.out_size(wp, kw, stride)
    xp = _pad_hw(x, pad)
    channels_last = ow < kw * c
    if channels_last:
        z, inner = _nhwc.conv_forward(np.ascontiguousarray(xp.transpose(0, 2, 3, 1)), w, b,
                                      stride)
        out = np.ascontiguousarray(z.transpose(0, 3, 1, 2))
        return out, ConvCache(True, inner.cols, w, x.shape, stride, pad)
    s_n, s_c, s_h, s_w = xp.strides
    windows = as_strided(xp, shape=(n, c, kh, kw, oh, ow),
                         strides=(s_n, s_c, s_h, s_w, s_h * stride, s_w * stride),
                         writeable=False)
    cols = windows.reshape(n, c * kh * kw, oh * ow)              # the one copy: im2col
    out = np.matmul(w.reshape(f, c * kh * kw), cols)             # (N, F, OH*OW), per image
    out += np.reshape(b, (f, 1))
    return out.reshape(n, f, oh, ow), ConvCache(False, cols, w, x.shape, stride, pad)


def conv2d_backward(dout: np.ndarray, cache: ConvCache):
    """Backward pass of :func:`conv2d_forward`.

    Inputs:
        dout: (N, F, OH, OW) upstream gradient.
        cache: from :func:`conv2d_forward`.
    Returns:
        dx: (N, C, H, W), dw: (F, C, KH, KW), db: (F,).
    """
    _check_ndim("dout", dout, 4, "(N, F, OH, OW)")
    channels_last, cols, w, x_shape, stride, pad = cache
    f, c, kh, kw = w.shape
    n, _, h, w_in = x_shape
    hp, wp = h + 2 * pad, w_in + 2 * pad
    oh, ow = _nhwc.out_size(hp, kh, stride), _nhwc.out_size(wp, kw, stride)
    if dout.shape != (n, f, oh, ow):
        raise ValueError(f"dout must have the forward output's shape {(n, f, oh, ow)}, "
                         f"got {dout.shape}")
    if channels_last:
        inner = _nhwc.ConvCache(cols, w, (n, hp, wp, c), stride)
        dxp, dw, db = _nhwc.conv_backward(np.ascontiguousarray(dout.transpose(0, 2, 3, 1)),
                                          inner)
        dxp = dxp.transpose(0, 3, 1, 2)
    else:
        d3 = dout.reshape(n, f, oh * ow)
        db = d3.sum(axis=2).sum(axis=0)
        dw = np.matmul(d3, cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
        dcols = np.matmul(w.reshape(f, c * kh * kw).T, d3).reshape(n, c, kh, kw, oh, ow)
        # col2im: add each slab of dcols back where im2col copied it from (KH*KW additions)
        dxp = np.zeros((n, c, hp, wp), dtype=dcols.dtype)
        for i in range(kh):
            for j in range(kw):
                dxp[:, :, i:i + stride * (oh - 1) + 1:stride,
                    j:j + stride * (ow - 1) + 1:stride] += dcols[:, :, i, j]
    return np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + w_in]), dw, db


# --------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------

class PoolCache(NamedTuple):
    """What :func:`maxpool2d_backward` needs from :func:`maxpool2d_forward`."""
    windows: np.ndarray  # (size*size, N, C, OH, OW): element (i, j) of every window, row-major
    out: np.ndarray      # (N, C, OH, OW) the maximum of every window
    x_shape: tuple       # (N, C, H, W) input shape
    size: int
    stride: int


def maxpool2d_forward(x: np.ndarray, size: int = 2, stride: int = 2):
    """Max pooling over size×size windows.

    Inputs:
        x: (N, C, H, W).
        size: window side; stride: step (floor for sizes that do not divide, like torch).
    Returns:
        out: (N, C, OH, OW) with OH = (H - size) // stride + 1.
        cache: a :class:`PoolCache`; the backward pass finds each window's maximum in it (the
            first one in row-major order when several are tied, as in torch).
    The window's elements are first copied offset by offset into contiguous blocks, so that the
    maximum (and the backward pass) works on whole blocks instead of strided views.
    """
    _check_ndim("x", x, 4, "(N, C, H, W)")
    _check_positive_int("size", size, 1)
    _check_positive_int("stride", stride, 1)
    if size > x.shape[2] or size > x.shape[3]:
        raise ValueError(f"pooling window {size}x{size} is larger than the input "
                         f"{x.shape[2]}x{x.shape[3]} (x shape {x.shape})")
    n, c, h, w = x.shape
    oh, ow = _nhwc.out_size(h, size, stride), _nhwc.out_size(w, size, stride)
    windows = np.empty((size * size, n, c, oh, ow), dtype=x.dtype)
    for k in range(size * size):
        windows[k] = _window_view(x, k // size, k % size, oh, ow, stride)
    out = windows[0].copy()
    for k in range(1, size * size):
        np.maximum(out, windows[k], out=out)
    return out, PoolCache(windows, out, x.shape, size, stride)


def maxpool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Backward pass of :func:`maxpool2d_forward`.

    Inputs:
        dout: (N, C, OH, OW).
    Returns:
        dx: (N, C, H, W): each window's gradient lands on its (first) maximum, zeros elsewhere.
    Offsets are visited in row-major order, carrying the gradient not yet handed out: the first
    offset that equals the window's maximum takes all of it, later (tied) offsets get zero.
    """
    _check_ndim("dout", dout, 4, "(N, C, OH, OW)")
    windows, out, x_shape, size, stride = cache
    if dout.shape != out.shape:
        raise ValueError(f"dout must have the forward output's shape {out.shape}, "
                         f"got {dout.shape}")
    oh, ow = out.shape[2], out.shape[3]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    left = dout.copy()                       # gradient not yet handed out, per window
    hit = np.empty(out.shape, dtype=bool)
    got = np.empty_like(left)
    for k in range(size * size):
        np.equal(windows[k], out, out=hit)   # is offset k this window's maximum?
        np.multiply(left, hit, out=got)      # then it takes all the gradient left
        left -= got
        view = _window_view(dx, k // size, k % size, oh, ow, stride)
        if stride >= size:                   # windows do not overlap: one window per element
            view[...] = got
        else:                                # overlapping windows share elements: add
            view += got
    return dx


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
    D_out. Biases start at 0. Lesson 03 compares the two schemes over 3 seeds on validation
    data after 50 steps: He starts faster (ahead for every seed); whether it ends better after
    full training is not measured.

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


def cnn_forward(params: dict, x: np.ndarray):
    """Forward pass of the course CNN: the public layers, one after the other.

    Inputs:
        params: dict from :func:`init_cnn`.
        x: (N, 1, 28, 28) normalised images (float32, or float64 for gradient checks).
    Returns:
        logits: (N, 10) class scores.
        cache: a dict of the layers' caches, named after the layers ("conv1", "relu1",
            "pool1", ..., "fc2"), plus "flatten": the shape before flattening.
    """
    _check_params(params)
    _check_images(x)
    p, cache = params, {}
    h, cache["conv1"] = conv2d_forward(x, p["conv1_w"], p["conv1_b"])   # (N, 32, 26, 26)
    h, cache["relu1"] = relu_forward(h)
    h, cache["pool1"] = maxpool2d_forward(h)                             # (N, 32, 13, 13)
    h, cache["conv2"] = conv2d_forward(h, p["conv2_w"], p["conv2_b"])   # (N, 64, 11, 11)
    h, cache["relu2"] = relu_forward(h)
    h, cache["pool2"] = maxpool2d_forward(h)                             # (N, 64, 5, 5)
    h, cache["conv3"] = conv2d_forward(h, p["conv3_w"], p["conv3_b"])   # (N, 64, 3, 3)
    h, cache["relu3"] = relu_forward(h)
    cache["flatten"] = h.shape
    h = h.reshape(h.shape[0], -1)                                        # (N, 576): (C, H, W)
    h, cache["fc1"] = linear_forward(h, p["fc1_w"], p["fc1_b"])         # (N, 64)
    h, cache["relu4"] = relu_forward(h)
    logits, cache["fc2"] = linear_forward(h, p["fc2_w"], p["fc2_b"])    # (N, 10)
    return logits, cache


def cnn_backward(dlogits: np.ndarray, cache: dict) -> dict:
    """Backward pass of :func:`cnn_forward`: the layers' backward passes in reverse order.

    Inputs:
        dlogits: (N, 10) gradient of the loss with respect to the logits.
        cache: from :func:`cnn_forward`.
    Returns:
        grads: dict with the keys of :data:`PARAM_NAMES` (same shapes as the parameters).
    """
    g = {}
    d, g["fc2_w"], g["fc2_b"] = linear_backward(dlogits, cache["fc2"])
    d = relu_backward(d, cache["relu4"])
    d, g["fc1_w"], g["fc1_b"] = linear_backward(d, cache["fc1"])
    d = d.reshape(cache["flatten"])                                      # (N, 64, 3, 3)
    d = relu_backward(d, cache["relu3"])
    d, g["conv3_w"], g["conv3_b"] = conv2d_backward(d, cache["conv3"])
    d = maxpool2d_backward(d, cache["pool2"])
    d = relu_backward(d, cache["relu2"])
    d, g["conv2_w"], g["conv2_b"] = conv2d_backward(d, cache["conv2"])
    d = maxpool2d_backward(d, cache["pool1"])
    d = relu_backward(d, cache["relu1"])
    _, g["conv1_w"], g["conv1_b"] = conv2d_backward(d, cache["conv1"])  # dx (the images): unused
    return {k: g[k] for k in PARAM_NAMES}


def cnn_loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray):
    """Mean cross-entropy loss of the course CNN on a batch, and its gradient.

    Inputs:
        params: dict from :func:`init_cnn`.
        x: (N, 1, 28, 28) normalised images; y: (N,) integer labels.
    Returns:
        loss: float; grads: dict with the same keys and shapes as params.
    """
    logits, cache = cnn_forward(params, x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    return loss, cnn_backward(dlogits, cache)


def fused_forward(params: dict, x: np.ndarray) -> np.ndarray:
    """Logits (N, 10) of the course CNN for x (N, 1, 28, 28): the same numbers as
    :func:`cnn_forward`, computed channels-last with pooling fused into the convolution
    (:mod:`mnist_course._nhwc`); used by :func:`fit`, :func:`predict`, the CLI and the bench."""
    _check_params(params)
    _check_images(x)
    return _nhwc.cnn_forward(params, x)[0]


def _fused_step(params: dict, x: np.ndarray, y: np.ndarray):
    """Loss, grads and logits of one batch through the fused path (inputs already checked)."""
    logits, cache = _nhwc.cnn_forward(params, x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    grads = _nhwc.cnn_backward(params, dlogits, cache)
    return loss, grads, logits


def fused_loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray):
    """Loss and gradients, the same numbers as :func:`cnn_loss_and_grads`, computed
    channels-last with pooling fused into the convolution (:mod:`mnist_course._nhwc`); used by
    :func:`fit`, :func:`predict`, the CLI and the bench.

    Inputs: params from :func:`init_cnn`; x (N, 1, 28, 28) normalised images; y (N,) labels.
    Returns: loss (float), grads (dict with the keys of :data:`PARAM_NAMES`).
    """
    _check_params(params)
    _check_images(x)
    loss, grads, _ = _fused_step(params, x, y)
    return loss, grads


def predict(params: dict, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted class (N,) int64 for images x (N, 1, 28, 28), batch_size images at a time
    (through the fused path, the same logits as :func:`cnn_forward`)."""
    _check_params(params)
    _check_images(x)
    _check_positive_int("batch_size", batch_size, 1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], batch_size):
        logits, _ = _nhwc.cnn_forward(params, x[start:start + batch_size])
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

    print(format_summary(rows, total))
    return total


# --------------------------------------------------------------------------------------------
# Saving and loading weights
# --------------------------------------------------------------------------------------------

class WeightsFileError(CourseError, ValueError):
    """A weights file cannot be written or read, is damaged or unsafe, or does not hold the
    expected arrays; the message names the file and says what to do."""


class MissingWeightsError(WeightsFileError, FileNotFoundError):
    """A weights file does not exist (also a FileNotFoundError)."""


#: Which lesson writes which weights file (for the remedy in error messages).
WRITTEN_BY = {
    "numpy_mlp.npz": "lesson 01 (01_numpy_mlp.ipynb)",
    "numpy_cnn.npz": "lesson 03 (03_numpy_cnn.ipynb)",
}

_NPY_HEADER_BYTES = 4096  # generous room for the header of one .npy member

#: The .npz member that records the dataset a network was trained on (absent: MNIST). A string,
#: not a weight: load_params leaves it out.
_DATASET_KEY = "__dataset__"


def _remedy(path: Path) -> str:
    lesson = WRITTEN_BY.get(path.name)
    if lesson:
        return (f"Re-run {lesson} up to its cell that saves {path.name} to write it again "
                "(or ask whoever sent it for a new copy).")
    return ("Write it again with numpy_cnn.save_params where the weights were trained, or ask "
            "whoever sent it for a new copy.")


def save_params(path: str | os.PathLike, params: Mapping[str, np.ndarray], *,
                dataset: str | None = None) -> Path:
    """Save a dict of float arrays to ``path`` as an ``.npz`` file, atomically; return the path.

    ``dataset``: the dataset the weights were trained on, other than MNIST (e.g.
    ``"fashion-mnist"``), recorded in the file for :func:`saved_dataset`. None or ``"mnist"``
    records nothing, so the file holds the weights alone, as before.

    The arrays are written to a temporary file in the same folder, flushed to disk and renamed
    onto ``path`` only when complete, so an interrupted save never leaves a half-written file
    (an older file at ``path`` stays intact until the new one replaces it). The file name is
    used as given (``np.savez`` would append ``.npz`` to a name without it). Read it back with
    :func:`load_params`.
    """
    path = Path(path)
    if not isinstance(params, Mapping) or not params:
        raise ValueError("params must be a non-empty dict of name -> float array, got "
                         f"{type(params).__name__}")
    arrays = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name or name == _DATASET_KEY:
            raise ValueError(f"parameter names must be non-empty strings other than "
                             f"{_DATASET_KEY!r}, got {name!r}")
        a = np.asarray(value)
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"params[{name!r}] has dtype {a.dtype}; save_params writes float "
                             "arrays (weights) only")
        arrays[name] = a
    if dataset is not None and dataset != "mnist":
        arrays[_DATASET_KEY] = np.array(str(dataset))
    try:
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    except OSError as exc:
        raise WeightsFileError(f"cannot write {path}: {exc.strerror or exc}. Does the folder "
                               f"{path.parent} exist, and may you write there?") from None
    return path


def _unreadable(exc: BaseException) -> str:
    """Why np.load could not read a file, in words."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"it cannot be read ({exc.strerror})"
    if "pickled" in text or "Object arrays" in text:
        return ("it holds pickled Python objects, not plain arrays of numbers; loading those "
                "could run code, so it is refused")
    if isinstance(exc, EOFError) or "No data left" in text:
        return "it is empty"
    if isinstance(exc, (zipfile.BadZipFile, zlib.error)):
        return f"it is truncated or damaged ({text or type(exc).__name__})"
    first = text.splitlines()[0][:120] if text else ""
    return f"it is damaged or not a NumPy .npz file ({type(exc).__name__}: {first})"


def _read_npz(path: Path, shapes: Mapping[str, tuple] | None, fix: str) -> dict:
    """The arrays of an .npz file, read without unpickling; np.load's errors pass through."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise WeightsFileError(f"{path} holds a single array (a .npy file), not named weights "
                               f"(.npz). {fix}")
    with loaded as f:
        if shapes is not None:
            for info in f.zip.infolist():  # refuse an oversized member before inflating it
                name = info.filename.removesuffix(".npy")
                if name in shapes:
                    limit = 16 * math.prod(shapes[name]) + _NPY_HEADER_BYTES
                    if info.file_size > limit:
                        raise WeightsFileError(
                            f"{path}: {name} takes {info.file_size:,} bytes, more than an array "
                            f"of shape {tuple(shapes[name])} can. {fix}")
        params = {}
        for name in f.files:
            if name == _DATASET_KEY:   # the record of the dataset, not a weight
                continue
            a = f[name]
            if not isinstance(a, np.ndarray):
                raise WeightsFileError(f"{path} holds {name!r}, which is not a NumPy array: it "
                                       f"is not a NumPy .npz file. {fix}")
            params[name] = a
    return params


def key_mismatch(expected, got) -> str | None:
    """How the names of ``got`` differ from those of ``expected`` ("missing a, b; unexpected c"),
    or None when they are the same set. Used wherever a parameter dict is checked."""
    missing = [str(k) for k in expected if k not in got]
    unexpected = [str(k) for k in got if k not in expected]
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
            ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
    return "; ".join(parts) or None


def load_params(path: str | os.PathLike, shapes: Mapping[str, tuple] | None = PARAM_SHAPES, *,
                remedy: str | None = None) -> dict[str, np.ndarray]:
    """Load weights saved by :func:`save_params` (or ``np.savez``) as a dict of float arrays.

    The file is read with ``allow_pickle=False``, so a file that holds Python objects is refused
    instead of run. ``shapes`` is the expected ``{name: shape}``: by default the course CNN's
    :data:`PARAM_SHAPES`; pass another dict (lesson 01's MLP: ``w1 (784, 128)``, ``b1 (128,)``,
    ``w2 (128, 10)``, ``b2 (10,)``) or None to accept any names and shapes. ``remedy`` replaces
    the advice at the end of error messages.

    Raises :class:`MissingWeightsError` when the file does not exist, and
    :class:`WeightsFileError` (a ``ValueError``) when it is empty, truncated, damaged, not an
    ``.npz``, holds pickled objects or non-float arrays, or its names or shapes differ from
    ``shapes``. Each message names the file and says how to get a good one.
    """
    path = Path(path)
    fix = remedy or _remedy(path)
    if not path.exists():
        raise MissingWeightsError(f"{path} does not exist. {fix}")
    if not path.is_file():
        raise WeightsFileError(f"{path} is not a file. {fix}")
    try:
        params = _read_npz(path, shapes, fix)
    except WeightsFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError) as exc:
        raise WeightsFileError(f"{path} cannot be loaded: {_unreadable(exc)}. "
                               f"{fix}") from None
    if not params:
        raise WeightsFileError(f"{path} holds no arrays. {fix}")
    for name, a in params.items():
        if not np.issubdtype(a.dtype, np.floating):
            raise WeightsFileError(f"{path}: {name} has dtype {a.dtype}, not floating-point "
                                   f"weights. {fix}")
    if shapes is None:
        return params
    mismatch = key_mismatch(shapes, params)
    if mismatch:
        raise WeightsFileError(
            f"{path} does not hold the expected weights ({mismatch}): is it the file of "
            f"another network? {fix}")
    for name, want in shapes.items():
        if params[name].shape != tuple(want):
            raise WeightsFileError(f"{path}: {name} has shape {params[name].shape}, expected "
                                   f"{tuple(want)}. {fix}")
    return {name: params[name] for name in shapes}


def saved_dataset(path: str | os.PathLike) -> str:
    """The dataset the weights in the ``.npz`` file ``path`` were trained on, as
    ``save_params(..., dataset=...)`` recorded it: ``"mnist"`` when the file has no record (every
    file written before the record existed, and every MNIST one). Read without unpickling; a file
    that cannot be read raises :class:`WeightsFileError` (load it with :func:`load_params` first
    for the full diagnosis)."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):   # a single array (.npy): no record
            return "mnist"
        with loaded as f:
            if _DATASET_KEY not in f.files:
                return "mnist"
            record = f[_DATASET_KEY]
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError) as exc:
        raise WeightsFileError(f"{path} cannot be loaded: {_unreadable(exc)}. "
                               f"{_remedy(path)}") from None
    if record.dtype.kind != "U" or record.shape != ():
        raise WeightsFileError(f"{path}: its {_DATASET_KEY} entry is not a dataset name. "
                               f"{_remedy(path)}")
    return str(record[()])


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------

def fit(params: dict, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
        y_test: np.ndarray, *, epochs: int = 3, batch_size: int = 64, optimizer=None,
        seed: int = 0, progress: bool = True, on_epoch: Callable | None = None) -> dict:
    """Train the course CNN with minibatches; params are updated in place. Each step runs
    :func:`fused_loss_and_grads` (the same numbers as :func:`cnn_loss_and_grads`, faster).

    Inputs:
        x_train (N, 1, 28, 28) and x_test (M, 1, 28, 28): normalised float32 images
        (``mnist_course.data.normalize``); y_train (N,), y_test (M,): integer labels.
        optimizer: anything with ``.step(params, grads)``; None means ``Adam(1e-3)``.
        seed: seeds the shuffling (``np.random.default_rng(seed)``), so a rerun is identical.
        progress: a tqdm bar per epoch (on stderr). on_epoch(row) is called after each epoch.
    Returns:
        history: {"epochs": [{"epoch", "loss", "train_acc", "test_acc", "seconds"}, ...],
        "step_loss": [...], "test_accuracy", "train_seconds", "seconds_per_epoch"}.
        "loss" (mean per sample) and "train_acc" are measured on the epoch's batches while it
        trains; "seconds" is the training time of the epoch, evaluation excluded. The
        bookkeeping is :mod:`mnist_course.history`'s, shared with ``torch_cnn.fit``.
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
    history = new_history()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        totals = EpochTotals()
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=True, ncols=80,
                   mininterval=0.5, file=sys.stderr, disable=not (progress and live_progress()))
        start = time.perf_counter()
        for i in range(steps):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            loss, grads, logits = _fused_step(params, xb, yb)
            optimizer.step(params, grads)
            history["step_loss"].append(loss)
            totals.add(loss, int((logits.argmax(axis=1) == yb).sum()), len(idx))
            if i % 20 == 0 or i == steps - 1:
                bar.set_postfix_str(f"loss {totals.mean_loss:.3f} acc {totals.accuracy:.3f}",
                                    refresh=False)
            bar.update(1)
        seconds = time.perf_counter() - start
        bar.close()
        test_acc = float((predict(params, x_test) == y_test).mean())
        row = {"epoch": epoch, "loss": totals.mean_loss, "train_acc": totals.accuracy,
               "test_acc": test_acc, "seconds": seconds}
        history["epochs"].append(row)
        if on_epoch is not None:
            on_epoch(row)
    return finish_history(history, "test")
