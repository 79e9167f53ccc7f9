"""The fast kernels behind :mod:`mnist_course.numpy_cnn`, in channels-last (NHWC) layout.

One idea: **a convolution is one big matrix product**. Gather every receptive field into a row
(im2col), multiply by the filters laid out as a matrix, and the result is already the output.

Why channels-last? With x of shape (N, H, W, C) the C values of one pixel sit next to each
other in memory. A receptive field of a KH×KW kernel is then KH*KW runs of C contiguous numbers,
so im2col is a cheap copy, the matrix product (N*OH*OW, KH*KW*C) @ (KH*KW*C, F) gives an
(N*OH*OW, F) array that *is* the NHWC output (no transpose), and the backward pass of im2col
(col2im) is just KH*KW strided additions, one per kernel offset.

Max pooling likewise loops over the size*size window offsets (4 for a 2×2 window), never over
pixels: forward takes a running maximum, backward sends each gradient to the first offset that
equals the maximum.

These functions trust their inputs; the public, checked, NCHW versions live in
:mod:`mnist_course.numpy_cnn`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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


def out_size(size: int, k: int, stride: int, pad: int) -> int:
    """Output length of a sliding window: floor((size + 2*pad - k) / stride) + 1."""
    return (size + 2 * pad - k) // stride + 1


def pad_hw(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the two spatial axes of x (N, H, W, C) -> (N, H+2*pad, W+2*pad, C)."""
    if pad == 0:
        return x
    n, h, w, c = x.shape
    xp = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype)
    xp[:, pad:pad + h, pad:pad + w, :] = x
    return xp


def _offset_view(a: np.ndarray, i: int, j: int, oh: int, ow: int, stride: int) -> np.ndarray:
    """The (N, OH, OW, C) view of a (N, H, W, C) holding the element at kernel offset (i, j)
    of every window: a[:, i + stride*p, j + stride*q, :]."""
    return a[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]


def im2col(xp: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Receptive fields as rows.

    xp: (N, Hp, Wp, C), already padded.
    Returns cols: (N*OH*OW, KH*KW*C), row (n, p, q) holding the window at output pixel (p, q),
    ordered (kernel row, kernel column, channel).
    """
    n, hp, wp, c = xp.shape
    oh, ow = out_size(hp, kh, stride, 0), out_size(wp, kw, stride, 0)
    s_n, s_h, s_w, s_c = xp.strides
    windows = as_strided(xp, shape=(n, oh, ow, kh, kw, c),
                         strides=(s_n, s_h * stride, s_w * stride, s_h, s_w, s_c),
                         writeable=False)
    return windows.reshape(n * oh * ow, kh * kw * c)  # the one copy of the forward pass


def col2im(dcols: np.ndarray, xp_shape: tuple, kh: int, kw: int, stride: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: add every window's gradient back onto the pixels it came from.

    dcols: (KH*KW, N*OH*OW, C), one contiguous block per kernel offset (the layout that
    :func:`conv_backward` produces). Returns dxp: xp_shape = (N, Hp, Wp, C).
    One strided addition per kernel offset (KH*KW of them), never a loop over pixels.
    """
    n, hp, wp, c = xp_shape
    oh, ow = out_size(hp, kh, stride, 0), out_size(wp, kw, stride, 0)
    d = dcols.reshape(kh, kw, n, oh, ow, c)
    dxp = np.zeros(xp_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            view = _offset_view(dxp, i, j, oh, ow, stride)
            view += d[i, j]
    return dxp


def weight_matrix(w: np.ndarray) -> np.ndarray:
    """Filters (F, C, KH, KW) as a (KH*KW*C, F) matrix whose rows match :func:`im2col`'s columns."""
    f, c, kh, kw = w.shape
    return w.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1,
                 pad: int = 0):
    """Cross-correlation, channels-last.

    x: (N, H, W, C); w: (F, C, KH, KW); b: (F,), or None for no bias.
    Returns out: (N, OH, OW, F) and a cache for :func:`conv_backward`.
    """
    n = x.shape[0]
    f, _, kh, kw = w.shape
    xp = pad_hw(x, pad)
    oh, ow = out_size(xp.shape[1], kh, stride, 0), out_size(xp.shape[2], kw, stride, 0)
    cols = im2col(xp, kh, kw, stride)
    out = cols @ weight_matrix(w)
    if b is not None:
        out += b
    return out.reshape(n, oh, ow, f), (cols, w, x.shape, xp.shape, stride, pad, b is not None)


def conv_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """Backward of :func:`conv_forward`.

    dout: (N, OH, OW, F). Returns dx: (N, H, W, C) (None when need_dx is False, e.g. for the
    first layer, whose input is the data), dw: (F, C, KH, KW), db: (F,) (None without bias).
    """
    cols, w, x_shape, xp_shape, stride, pad, has_bias = cache
    f, c, kh, kw = w.shape
    d2 = dout.reshape(-1, f)
    db = d2.sum(axis=0) if has_bias else None
    dw = (cols.T @ d2).reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
    dw = np.ascontiguousarray(dw)
    if not need_dx:
        return None, dw, db
    # dcols for all kernel offsets at once, as KH*KW contiguous (M, C) blocks: d2 @ w_k for
    # each offset k, with w_k = w[:, :, i, j] of shape (F, C). Contiguous blocks make col2im's
    # additions run over long rows of memory.
    w_blocks = w.transpose(2, 3, 0, 1).reshape(kh * kw, f, c)
    dxp = col2im(np.matmul(d2, w_blocks), xp_shape, kh, kw, stride)
    if pad:
        h, w_ = x_shape[1], x_shape[2]
        dxp = dxp[:, pad:pad + h, pad:pad + w_, :]
    return dxp, dw, db


def pool_forward(x: np.ndarray, size: int = 2, stride: int = 2):
    """Max pooling, channels-last.

    x: (N, H, W, C). Returns out: (N, OH, OW, C) and a cache for :func:`pool_backward`.
    The maximum is built up one window offset at a time (size*size whole-array operations).
    """
    h, w = x.shape[1], x.shape[2]
    oh, ow = out_size(h, size, stride, 0), out_size(w, size, stride, 0)
    out = _offset_view(x, 0, 0, oh, ow, stride).copy()
    for k in range(1, size * size):
        np.maximum(out, _offset_view(x, k // size, k % size, oh, ow, stride), out=out)
    return out, (x, out, size, stride)


def pool_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Backward of :func:`pool_forward`: each window's gradient goes to ONE element, the first
    maximum in row-major order (torch's convention for ties).

    dout: (N, OH, OW, C). Returns dx: (N, H, W, C).
    Offsets are visited in row-major order, carrying the gradient not yet handed out: an offset
    that equals the window's maximum takes all of it, and later (tied) offsets then get zero.
    """
    x, out, size, stride = cache
    oh, ow = out.shape[1], out.shape[2]
    dx = np.zeros(x.shape, dtype=dout.dtype)
    left = dout.copy()  # gradient not yet handed out, per window
    last = size * size - 1
    for k in range(size * size):
        i, j = k // size, k % size
        hit = _offset_view(x, i, j, oh, ow, stride) == out
        view = _offset_view(dx, i, j, oh, ow, stride)
        if stride < size:  # overlapping windows share positions: add
            got = left * hit
            view += got
        else:  # each position is in at most one window: write
            got = np.multiply(left, hit, out=view)
        if k < last:
            left -= got
    return dx


# --------------------------------------------------------------------------------------------
# Convolution fused with 2×2 max pooling
# --------------------------------------------------------------------------------------------
# Pooling strided NHWC views touches memory in short runs of C numbers. Instead, the im2col rows
# of a conv that feeds a 2×2 / stride-2 pool are put in "window-offset-major" order
# (di, dj, n, p, q): output pixel (2p + di, 2q + dj) of image n. The matrix product then
# returns the conv output as 4 contiguous (N*PH*PW, F) blocks, one per offset in the pooling
# window, and pooling is an elementwise maximum of 4 contiguous blocks. Conv outputs that the
# pool would drop (the last row and column of an odd-sized map) are never computed.


def conv_pool_forward(x: np.ndarray, w: np.ndarray):
    """Convolution (stride 1, no padding, no bias) followed by 2×2 max pooling with stride 2.

    x: (N, H, W, C); w: (F, C, KH, KW).
    Returns out: (N, PH, PW, F) with PH = (H - KH + 1) // 2 (likewise PW), and a cache.
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
    return out.reshape(n, ph, pw, f), (cols, z, out, w, x.shape)


def conv_pool_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """Backward of :func:`conv_pool_forward`.

    dout: (N, PH, PW, F). Returns dx: (N, H, W, C) (None when need_dx is False) and
    dw: (F, C, KH, KW). Each pooling window's gradient goes to its first maximum in row-major
    order (offsets (0,0), (0,1), (1,0), (1,1)), like torch.
    """
    cols, z, out, w, x_shape = cache
    f, c, kh, kw = w.shape
    n = x_shape[0]
    ph, pw = dout.shape[1], dout.shape[2]
    left = dout.reshape(-1, f).copy()     # gradient not yet handed out, per window
    dz = np.empty_like(z)
    for k in range(4):
        np.multiply(left, z[k] == out, out=dz[k])
        if k < 3:
            left -= dz[k]
    d2 = dz.reshape(-1, f)
    dw = (cols.T @ d2).reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
    dw = np.ascontiguousarray(dw)
    if not need_dx:
        return None, dw
    w_blocks = w.transpose(2, 3, 0, 1).reshape(kh * kw, f, c)
    d = np.matmul(d2, w_blocks).reshape(kh, kw, 2, 2, n, ph, pw, c)
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            for di in range(2):
                for dj in range(2):
                    r, s = i + di, j + dj
                    dx[:, r:r + 2 * ph - 1:2, s:s + 2 * pw - 1:2, :] += d[i, j, di, dj]
    return dx, dw
