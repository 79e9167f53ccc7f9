"""Channels-last (NHWC) kernels: the fused fast path of the course CNN, and the convolution
that :func:`mnist_course.numpy_cnn.conv2d_forward` uses for layers with many channels.

:func:`mnist_course.numpy_cnn.cnn_loss_and_grads` composes the public layers one by one, the way
a learner writes it. This module computes the very same numbers faster, for ``fit``,
``predict``, the CLI and the bench (``numpy_cnn.fused_forward`` and
``numpy_cnn.fused_loss_and_grads`` are its checked entry points; a test proves both paths equal).

Three ideas make it fast:

1. **A convolution is one big matrix product.** Gather every receptive field into a row
   (im2col), multiply by the filters laid out as a matrix, and the result is the output.
2. **Channels-last.** With x of shape (N, H, W, C) the C values of one pixel sit next to each
   other, so a receptive field of a KH×KW kernel is KH*KW runs of C contiguous numbers: im2col
   is a cheap copy, (N*OH*OW, KH*KW*C) @ (KH*KW*C, F) gives an (N*OH*OW, F) array that *is* the
   NHWC output, and col2im is KH*KW strided additions, one per kernel offset.
3. **Pooling fused into the convolution.** In conv → +bias → ReLU → 2×2 max pool, the bias (one
   per channel) and ReLU (monotonic) both commute with the max of a window, so the block pools
   the bare convolution first and adds the bias and applies ReLU on the 4× smaller map. The
   im2col rows are put in window-offset-major order, so the matrix product returns the four
   offsets of every pooling window as four contiguous blocks, and pooling is an elementwise
   maximum of four blocks (:func:`conv_pool_forward`).

These functions trust their inputs (shapes, dtypes): the checks live in
:mod:`mnist_course.numpy_cnn`, which imports this module, never the other way round.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed blocks of up to 32 MB for reuse (Linux only; a no-op
    elsewhere). A training step frees and re-allocates the same few-MB arrays every time; by
    default each one comes back as fresh pages from the kernel, and the page faults cost about a
    quarter of a step. This changes allocation policy only, never results."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep the defaults
        pass


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------

class ConvCache(NamedTuple):
    """What :func:`conv_backward` needs from :func:`conv_forward`."""
    cols: np.ndarray     # (N*OH*OW, KH*KW*C) receptive fields, from im2col
    w: np.ndarray        # (F, C, KH, KW) filters
    x_shape: tuple       # (N, H, W, C) input shape
    stride: int


def out_size(size: int, k: int, stride: int) -> int:
    """Number of windows of length k, stride apart, that fit in size: (size - k) // stride + 1."""
    return (size - k) // stride + 1


def _offset_view(a: np.ndarray, i: int, j: int, oh: int, ow: int, stride: int) -> np.ndarray:
    """The (N, OH, OW, C) view of a (N, H, W, C) holding the element at kernel offset (i, j)
    of every window: a[:, i + stride*p, j + stride*q, :]."""
    return a[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """Receptive fields as rows.

    x: (N, H, W, C), already padded.
    Returns cols: (N*OH*OW, KH*KW*C), row (n, p, q) holding the window at output pixel (p, q),
    ordered (kernel row, kernel column, channel).
    """
    n, h, w, c = x.shape
    oh, ow = out_size(h, kh, stride), out_size(w, kw, stride)
    s_n, s_h, s_w, s_c = x.strides
    windows = as_strided(x, shape=(n, oh, ow, kh, kw, c),
                         strides=(s_n, s_h * stride, s_w * stride, s_h, s_w, s_c),
                         writeable=False)
    return windows.reshape(n * oh * ow, kh * kw * c)  # the one copy of the forward pass


def col2im(dcols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int = 1) -> np.ndarray:
    """Adjoint of :func:`im2col`: add every window's gradient back onto the pixels it came from.

    dcols: (KH*KW, N*OH*OW, C), one contiguous block per kernel offset (the layout that
    :func:`conv_backward` produces). Returns dx: x_shape = (N, H, W, C).
    One strided addition per kernel offset (KH*KW of them), never a loop over pixels.
    """
    n, h, w, c = x_shape
    oh, ow = out_size(h, kh, stride), out_size(w, kw, stride)
    d = dcols.reshape(kh, kw, n, oh, ow, c)
    dx = np.zeros(x_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            view = _offset_view(dx, i, j, oh, ow, stride)
            view += d[i, j]
    return dx


def weight_matrix(w: np.ndarray) -> np.ndarray:
    """Filters (F, C, KH, KW) as a (KH*KW*C, F) matrix whose rows match :func:`im2col`'s columns."""
    f, c, kh, kw = w.shape
    return w.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)


def _input_grad_blocks(d2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d2 (M, F) times each kernel offset's (F, C) slice of w: (KH*KW, M, C), contiguous blocks
    that make col2im's additions run over long rows of memory."""
    f, c, kh, kw = w.shape
    return np.matmul(d2, w.transpose(2, 3, 0, 1).reshape(kh * kw, f, c))


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1):
    """Cross-correlation, channels-last, no padding (pad x first).

    x: (N, H, W, C); w: (F, C, KH, KW); b: (F,).
    Returns out: (N, OH, OW, F) and a :class:`ConvCache`.
    """
    n, h, w_in, _ = x.shape
    f, _, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride)
    out = cols @ weight_matrix(w)
    out += b
    oh, ow = out_size(h, kh, stride), out_size(w_in, kw, stride)
    return out.reshape(n, oh, ow, f), ConvCache(cols, w, x.shape, stride)


def conv_backward(dout: np.ndarray, cache: ConvCache):
    """Backward of :func:`conv_forward`.

    dout: (N, OH, OW, F). Returns dx: (N, H, W, C), dw: (F, C, KH, KW), db: (F,).
    """
    f, c, kh, kw = cache.w.shape
    d2 = dout.reshape(-1, f)
    db = channel_sum(dout)
    dw = np.ascontiguousarray((cache.cols.T @ d2).reshape(kh, kw, c, f).transpose(3, 2, 0, 1))
    dx = col2im(_input_grad_blocks(d2, cache.w), cache.x_shape, kh, kw, cache.stride)
    return dx, dw, db


def channel_sum(d: np.ndarray) -> np.ndarray:
    """Sum of d (N, H, W, C) over everything but the channels: (C,). (A matrix-vector product,
    much faster than .sum(axis=(0, 1, 2)) for this layout.)"""
    d2 = d.reshape(-1, d.shape[-1])
    return np.ones(d2.shape[0], dtype=d.dtype) @ d2


# --------------------------------------------------------------------------------------------
# Convolution fused with 2×2 max pooling
# --------------------------------------------------------------------------------------------
# Pooling strided NHWC views touches memory in short runs of C numbers. Instead, the im2col rows
# of a conv that feeds a 2×2 / stride-2 pool are put in "window-offset-major" order
# (di, dj, n, p, q): output pixel (2p + di, 2q + dj) of image n. The matrix product then
# returns the conv output as 4 contiguous (N*PH*PW, F) blocks, one per offset in the pooling
# window, and pooling is an elementwise maximum of 4 contiguous blocks. Conv outputs that the
# pool would drop (the last row and column of an odd-sized map) are never computed.

class ConvPoolCache(NamedTuple):
    """What :func:`conv_pool_backward` needs from :func:`conv_pool_forward`."""
    cols: np.ndarray     # (4*N*PH*PW, KH*KW*C) receptive fields, window-offset-major
    z: np.ndarray        # (4, N*PH*PW, F) the convolution, one block per pooling offset
    out: np.ndarray      # (N*PH*PW, F) the pooled maximum
    w: np.ndarray        # (F, C, KH, KW) filters
    x_shape: tuple       # (N, H, W, C) input shape


def conv_pool_forward(x: np.ndarray, w: np.ndarray):
    """Convolution (stride 1, no padding, no bias) followed by 2×2 max pooling with stride 2.

    x: (N, H, W, C); w: (F, C, KH, KW).
    Returns out: (N, PH, PW, F) with PH = (H - KH + 1) // 2 (likewise PW), and a
    :class:`ConvPoolCache`.
    """
    n, h, w_in, c = x.shape
    f, _, kh, kw = w.shape
    ph, pw = (h - kh + 1) // 2, (w_in - kw + 1) // 2
    s_n, s_h, s_w, s_c = x.strides
    windows = as_strided(x, shape=(2, 2, n, ph, pw, kh, kw, c),
                         strides=(s_h, s_w, s_n, 2 * s_h, 2 * s_w, s_h, s_w, s_c),
                         writeable=False)
    cols = windows.reshape(4 * n * ph * pw, kh * kw * c)
    z = (cols @ weight_matrix(w)).reshape(4, n * ph * pw, f)   # one block per window offset
    out = np.maximum(z[0], z[1])
    np.maximum(out, z[2], out=out)
    np.maximum(out, z[3], out=out)
    return out.reshape(n, ph, pw, f), ConvPoolCache(cols, z, out, w, x.shape)


def conv_pool_backward(dout: np.ndarray, cache: ConvPoolCache, need_dx: bool = True):
    """Backward of :func:`conv_pool_forward`.

    dout: (N, PH, PW, F). Returns dx: (N, H, W, C) (None when need_dx is False, e.g. for the
    first layer, whose input is the data) and dw: (F, C, KH, KW). Each pooling window's
    gradient goes to its first maximum in row-major order (offsets (0,0), (0,1), (1,0),
    (1,1)), like torch.
    """
    f, c, kh, kw = cache.w.shape
    n, ph, pw = dout.shape[:3]
    left = dout.reshape(-1, f).copy()     # gradient not yet handed out, per window
    dz = np.empty_like(cache.z)
    for k in range(4):
        np.multiply(left, cache.z[k] == cache.out, out=dz[k])
        if k < 3:
            left -= dz[k]
    d2 = dz.reshape(-1, f)
    dw = np.ascontiguousarray((cache.cols.T @ d2).reshape(kh, kw, c, f).transpose(3, 2, 0, 1))
    if not need_dx:
        return None, dw
    d = _input_grad_blocks(d2, cache.w).reshape(kh, kw, 2, 2, n, ph, pw, c)
    dx = np.zeros(cache.x_shape, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            for di in range(2):
                for dj in range(2):
                    r, s = i + di, j + dj
                    dx[:, r:r + 2 * ph - 1:2, s:s + 2 * pw - 1:2, :] += d[i, j, di, dj]
    return dx, dw


# --------------------------------------------------------------------------------------------
# The course CNN, fused
# --------------------------------------------------------------------------------------------

class CnnCache(NamedTuple):
    """What :func:`cnn_backward` needs from :func:`cnn_forward` (channels-last activations)."""
    conv1: ConvPoolCache   # conv1 + pool, on the images
    a1: np.ndarray         # (N, 13, 13, 32) after pool1, bias and ReLU
    conv2: ConvPoolCache   # conv2 + pool
    a2: np.ndarray         # (N, 5, 5, 64) after pool2, bias and ReLU
    conv3: ConvCache
    a3: np.ndarray         # (N, 3, 3, 64) after conv3 and ReLU
    flat: np.ndarray       # (N, 576) a3 flattened in (C, H, W) order
    a4: np.ndarray         # (N, 64) after fc1 and ReLU


def cnn_forward(params: dict, x: np.ndarray):
    """Logits (N, 10) of the course CNN for x (N, 1, 28, 28), and a :class:`CnnCache`.

    params: the dict of ``numpy_cnn.init_cnn`` (NumPy layouts). Same numbers as
    ``numpy_cnn.cnn_forward``.
    """
    n = x.shape[0]
    p = params
    a0 = x.reshape(n, 28, 28, 1)  # C = 1, so NCHW -> NHWC is a free reshape
    m1, c1 = conv_pool_forward(a0, p["conv1_w"])              # conv (N,26,26,32) + pool
    a1 = m1 + p["conv1_b"]                                     # (N, 13, 13, 32)
    np.maximum(a1, 0, out=a1)
    m2, c2 = conv_pool_forward(a1, p["conv2_w"])              # conv (N,11,11,64) + pool
    a2 = m2 + p["conv2_b"]                                     # (N, 5, 5, 64)
    np.maximum(a2, 0, out=a2)
    z3, c3 = conv_forward(a2, p["conv3_w"], p["conv3_b"])     # (N, 3, 3, 64)
    a3 = np.maximum(z3, 0)
    flat = a3.transpose(0, 3, 1, 2).reshape(n, 576)            # flatten in (C, H, W) order
    h = flat @ p["fc1_w"] + p["fc1_b"]                         # (N, 64)
    a4 = np.maximum(h, 0)
    logits = a4 @ p["fc2_w"] + p["fc2_b"]                      # (N, 10)
    return logits, CnnCache(c1, a1, c2, a2, c3, a3, flat, a4)


def cnn_backward(params: dict, dlogits: np.ndarray, cache: CnnCache) -> dict:
    """Gradients of every parameter, from dlogits (N, 10) and :func:`cnn_forward`'s cache.
    Returns a dict with the keys of params, in the forward order."""
    p, c = params, cache
    n = dlogits.shape[0]
    fc2_w = c.a4.T @ dlogits
    fc2_b = dlogits.sum(axis=0)
    da4 = dlogits @ p["fc2_w"].T
    da4 *= c.a4 > 0                                      # ReLU
    fc1_w = c.flat.T @ da4
    fc1_b = da4.sum(axis=0)
    dflat = da4 @ p["fc1_w"].T
    da3 = np.ascontiguousarray(dflat.reshape(n, 64, 3, 3).transpose(0, 2, 3, 1))
    da3 *= c.a3 > 0                                      # ReLU
    da2, conv3_w, conv3_b = conv_backward(da3, c.conv3)
    da2 *= c.a2 > 0                                      # ReLU (after pooling)
    conv2_b = channel_sum(da2)                           # bias (added after pooling)
    da1, conv2_w = conv_pool_backward(da2, c.conv2)
    da1 *= c.a1 > 0                                      # ReLU (after pooling)
    conv1_b = channel_sum(da1)                           # bias (added after pooling)
    _, conv1_w = conv_pool_backward(da1, c.conv1, need_dx=False)
    return {"conv1_w": conv1_w, "conv1_b": conv1_b, "conv2_w": conv2_w, "conv2_b": conv2_b,
            "conv3_w": conv3_w, "conv3_b": conv3_b, "fc1_w": fc1_w, "fc1_b": fc1_b,
            "fc2_w": fc2_w, "fc2_b": fc2_b}
