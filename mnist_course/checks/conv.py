"""Checks of lesson 02: convolution and max pooling, forward and backward."""

from __future__ import annotations

import functools

import numpy as np

from mnist_course import _oracle
from mnist_course.checks._core import TOL_FLOAT32, TOL_FLOAT64, _Check, _fmt_shape, _rel_error, _rng

# --------------------------------------------------------------------------------------------
# Convolution and pooling (lesson 02)
# --------------------------------------------------------------------------------------------

# (x shape, w shape, stride, pad). Ordered so that the first failing case names the bug:
# padding is first tested with stride 1, stride > 1 first without padding.
_CONV_CASES = [
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 0),
    ((2, 2, 6, 6), (3, 2, 3, 3), 1, 1),
    ((2, 3, 7, 7), (4, 3, 3, 3), 2, 0),
    ((1, 2, 9, 9), (2, 2, 3, 3), 3, 0),
    ((2, 2, 7, 7), (3, 2, 3, 3), 2, 1),
    ((1, 2, 6, 5), (3, 2, 3, 2), 1, 2),
    ((2, 1, 10, 8), (2, 1, 2, 3), 3, 2),
]


def _conv_out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _conv_desc(xs, ws, stride, pad) -> str:
    return f"x {_fmt_shape(xs)}, w {_fmt_shape(ws)}, stride {stride}, pad {pad}"


def _conv_data(rng, xs, ws):
    return rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])


def _conv_shape_hints(xs, ws, stride, pad):
    n, _, h, w = xs
    f, _, kh, kw = ws
    ho, wo = _conv_out_size(h, kh, stride, pad), _conv_out_size(w, kw, stride, pad)
    hints = []
    if pad > 0:
        hints.append(((n, f, _conv_out_size(h, kh, stride, 0), _conv_out_size(w, kw, stride, 0)),
                      ("padding ignored: the output has the size for pad=0. Pad x first, "
                      "np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))), then slide the "
                      "kernel over the padded input.")))
    formula = (f"the output size is (H + 2*pad - KH) // stride + 1, here {ho} x {wo}")
    for dh in (-1, 0, 1):
        for dw in (-1, 0, 1):
            if (dh, dw) != (0, 0):
                hints.append(((n, f, ho + dh, wo + dw),
                              (f"output size off by one{' when stride > 1' if stride > 1 else ''}"
                              f": {formula}.")))
    hints.append(((n, f, h + 2 * pad - kh + 1, w + 2 * pad - kw + 1),
                  f"stride ignored: step the window by `stride` pixels; {formula}."))
    return hints


_AXES_NAMES = ("C", "KH", "KW")


def _w_orders(w: np.ndarray) -> list:
    """(perm, w_eff, order name): the kernel a learner effectively uses when the im2col columns
    list a window's values in the order `perm` of (C, KH, KW) while w is flattened as
    w.reshape(F, -1), in the order (C, KH, KW)."""
    f, c, kh, kw = w.shape
    dims = (c, kh, kw)
    out = []
    for perm in ((0, 2, 1), (1, 2, 0), (2, 1, 0), (1, 0, 2), (2, 0, 1)):
        pshape = tuple(dims[p] for p in perm)
        back = [1 + perm.index(axis) for axis in range(3)]
        w_eff = w.reshape(f, *pshape).transpose(0, *back)
        out.append((perm, w_eff, "(" + ", ".join(_AXES_NAMES[p] for p in perm) + ")"))
    return out


def _order_hint(order: str) -> str:
    return (f"the im2col columns list each window's values in the order {order}, but w is "
            f"flattened as w.reshape(F, -1), in the order (C, KH, KW): the kernel offsets (and "
            f"channels) are paired with the wrong weights. Build each column in the order "
            f"(C, KH, KW), e.g. loop over the offsets i (rows) then j (columns) and take "
            f"x_pad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] for all channels "
            f"at once, stacking along a new axis 2, then reshape to (N, C * KH * KW, OH * OW).")


_NO_TRANSPOSE = ("the values are right but in the wrong places: the matrix product gives one "
                 "row per (n, i, j) output position and one column per filter (or the "
                 "transpose); reshape it to (N, OH, OW, F) and transpose(0, 3, 1, 2) (or "
                 "reshape (F, N, OH, OW) and transpose(1, 0, 2, 3)): a reshape straight to "
                 "(N, F, OH, OW) scrambles the values.")


class _LazyGrads:
    """conv2d_grads of x for another kernel or another dout, computed only when asked."""

    def __init__(self, x, w, b, stride, pad, dout):
        self.args, self.cache = (x, w, b, stride, pad, dout), {}

    def __call__(self, key, which: int, w_=None, dout_=None):
        if key not in self.cache:
            x, w, b, stride, pad, dout = self.args
            self.cache[key] = _oracle.conv2d_grads(x, w if w_ is None else w_, b, stride, pad,
                                                   dout if dout_ is None else dout_)
        return self.cache[key][which]


def _pad_explain(pad: int, index: int, backward: bool = False):
    """The likely bug behind an exception on a padded case."""
    def explain(exc):
        if pad == 0 or not isinstance(exc, (ValueError, IndexError)):
            return None
        earlier = " (the cases with pad = 0 passed)" if index > 1 else ""
        pad_how = ("np.pad(x, pad) pads every axis, N and C too: pad only H and W, "
                   "np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))")
        if backward:
            return (f"conv2d_backward fails with pad = {pad}{earlier}: are the windows in "
                    f"backward taken from x without the padding? Pad x again exactly as in "
                    f"forward (or keep x_pad in the cache), take the windows from it, add the "
                    f"gradients into dx_pad of the padded shape and crop it at the end. Or: "
                    f"{pad_how}.")
        return f"an error with pad = {pad}{earlier}: {pad_how}."
    return explain


def _check_conv_output(chk, out, x, w, b, stride, pad, ref, what="out", context=None):
    """Compare a conv2d_forward output with ref; context is added to the failure message."""
    n, f = x.shape[0], w.shape[0]
    ho = _conv_out_size(x.shape[2], w.shape[2], stride, pad)
    wo = _conv_out_size(x.shape[3], w.shape[3], stride, pad)
    alternatives = [
        (lambda: _oracle.conv2d(x, w[:, :, ::-1, ::-1], b, stride, pad),
         ("the output is what you get with w flipped: convolution instead of "
          "cross-correlation? Do not flip the kernel: out[n, f, i, j] = "
          "sum(x_window * w[f]) + b[f].")),
        (lambda: ref - b[None, :, None, None], ("the bias b was not added (b[f] belongs to "
                                               "output channel f).")),
        *[(lambda w_eff=w_eff: _oracle.conv2d(x, w_eff, b, stride, pad), _order_hint(order))
          for _perm, w_eff, order in _w_orders(w)],
        (lambda: ref.transpose(0, 2, 3, 1).reshape(ref.shape), _NO_TRANSPOSE),
        (lambda: ref.transpose(1, 0, 2, 3).reshape(ref.shape), _NO_TRANSPOSE),
    ]
    shape_hints = _conv_shape_hints(x.shape, w.shape, stride, pad)
    if pad:
        shape_hints = [((n + 2 * pad, f, ho, wo), (
            f"{n + 2 * pad} images instead of {n}: np.pad(x, pad) padded every axis, N and C "
            f"too; pad only H and W, np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))."))
        ] + shape_hints
    try:
        out = chk.array(out, what, (n, f, ho, wo), shape_hints=shape_hints)
        chk.compare(what, out, ref, alternatives=alternatives)
    except AssertionError as exc:
        if context:
            raise AssertionError(f"{exc}\n  {context}") from None
        raise


def check_conv2d_forward(fn) -> None:
    """Check ``conv2d_forward(x, w, b, stride=1, pad=0) -> (out, cache)`` against
    ``torch.nn.functional.conv2d`` (strides 1-3, pads 0-2, non-square kernels, odd sizes)."""
    chk = _Check("check_conv2d_forward", len(_CONV_CASES))
    rng = _rng(5)
    for i, (xs, ws, stride, pad) in enumerate(_CONV_CASES, 1):
        chk.case(i, _conv_desc(xs, ws, stride, pad), xs[0])
        x, w, b = _conv_data(rng, xs, ws)
        copies = (x.copy(), w.copy(), b.copy())
        res = chk.call(fn, x, w, b, stride=stride, pad=pad,
                       signature="conv2d_forward(x, w, b, stride=1, pad=0) -> (out, cache)",
                       explain=_pad_explain(pad, i))
        out, _cache = chk.unpack(res, ("out", "cache"), "conv2d_forward")
        for name, before, now in zip("xwb", copies, (x, w, b)):
            chk.unchanged(before, now, f"conv2d_forward changed its input {name} in place.")
        _check_conv_output(chk, out, x, w, b, stride, pad, _oracle.conv2d(x, w, b, stride, pad))
    chk.passed()


def _window_coverage(xs, ws, stride: int, pad: int) -> np.ndarray:
    """How many windows each input element (N, C, H, W) of a conv2d belongs to."""
    _, _, h, w = xs
    _, _, kh, kw = ws
    ho, wo = _conv_out_size(h, kh, stride, pad), _conv_out_size(w, kw, stride, pad)
    cover = np.zeros((h + 2 * pad, w + 2 * pad), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            cover[i * stride:i * stride + kh, j * stride:j * stride + kw] += 1
    return np.broadcast_to(cover[pad:pad + h, pad:pad + w], xs)


def _overlap_hint(dx, rdx, cover: np.ndarray) -> str | None:
    """The hint for dx = ... instead of dx += ...: right where one window covers x, wrong only
    where windows overlap."""
    low = np.asarray(dx).dtype != np.float64
    tol = TOL_FLOAT32 if low else TOL_FLOAT64
    dx = np.asarray(dx, dtype=np.float64)
    single, shared = cover == 1, cover > 1
    if not np.any(shared) or not np.all(np.isfinite(dx)):
        return None
    if np.any(single) and _rel_error(dx[single], rdx[single], low) > tol:
        return None
    if _rel_error(dx[shared], rdx[shared], low) <= tol:
        return None
    return ("dx is wrong only where windows overlap (input elements that belong to several "
            "windows, here with stride < kernel size): each window adds its share to dx, so "
            "accumulate with += (dx_pad[..., window] += ...), do not assign with =.")


def _db_averaged(dout: np.ndarray) -> list:
    """Alternatives for a bias gradient averaged over some axes instead of summed."""
    n, _, ho, wo = dout.shape
    fix = ("db is dout averaged over {} instead of summed: the bias gradient is the SUM over "
           "the batch and positions, db = dout.sum(axis=(0, 2, 3)) (b is added to every "
           "output position of every image, so every one of them sends its gradient back).")
    total = dout.sum(axis=(0, 2, 3))
    return [(total / k, fix.format(what)) for k, what in
            ((n * ho * wo, "the batch and positions"), (ho * wo, "the positions"),
             (n, "the batch")) if k > 1]


def check_conv2d_backward(fwd, bwd) -> None:
    """Check ``conv2d_backward(dout, cache) -> (dx, dw, db)`` against autograd, on the same
    cases as check_conv2d_forward (fwd makes the cache)."""
    chk = _Check("check_conv2d_backward", len(_CONV_CASES))
    rng = _rng(6)
    for i, (xs, ws, stride, pad) in enumerate(_CONV_CASES, 1):
        chk.case(i, _conv_desc(xs, ws, stride, pad), xs[0])
        x, w, b = _conv_data(rng, xs, ws)
        res = chk.call(fwd, x, w, b, stride=stride, pad=pad,
                       signature="conv2d_forward(x, w, b, stride=1, pad=0) -> (out, cache)")
        out, cache = chk.unpack(res, ("out", "cache"), "conv2d_forward")
        ref_out = _oracle.conv2d(x, w, b, stride, pad)
        _check_conv_output(chk, out, x, w, b, stride, pad, ref_out,
                           context="conv2d_forward is wrong on this case: make "
                                   "check_conv2d_forward pass first.")
        dout = rng.standard_normal(ref_out.shape)
        dout_before = dout.copy()
        res = chk.call(bwd, dout, cache,
                       signature="conv2d_backward(dout, cache) -> (dx, dw, db)",
                       explain=_pad_explain(pad, i, backward=True))
        dx, dw, db = chk.unpack(res, ("dx", "dw", "db"), "conv2d_backward")
        chk.unchanged(dout_before, dout, "conv2d_backward changed dout in place.")
        rdx, rdw, rdb = _oracle.conv2d_grads(x, w, b, stride, pad, dout)
        n, c, h, wd = xs
        f = ws[0]
        ho, wo = ref_out.shape[2:]
        dx_hints = [((n, c, h + 2 * pad, wd + 2 * pad),
                     ("dx still has the padding: crop it off, dx = dx_pad[:, :, pad:pad + H, "
                     "pad:pad + W]."))]
        if pad == 0:
            dx_hints.append(((n, c, 0, 0), ("dx is empty because pad == 0: the slice "
                                           "[pad:-pad] is [0:0]. Crop with [pad:pad + H] "
                                           "instead.")))
        dx = chk.array(dx, "dx", xs, shape_hints=dx_hints)
        orders = _w_orders(w)
        scrambled = [dout.reshape(n, ho, wo, f).transpose(0, 3, 1, 2),
                     dout.reshape(f, n, ho, wo).transpose(1, 0, 2, 3)]
        dout_hint = ("dout is turned into a matrix with a reshape alone: its rows must be the "
                     "(n, i, j) output positions and its columns the filters, "
                     "dout.transpose(0, 2, 3, 1).reshape(-1, F) (or "
                     "dout.transpose(1, 0, 2, 3).reshape(F, -1)); a reshape without the "
                     "transpose pairs each gradient with the wrong window.")
        grads_of = _LazyGrads(x, w, b, stride, pad, dout)
        xp_grad = _oracle.conv2d_grads(
            np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))), w, b, stride, 0, dout)[0] \
            if pad else None
        chk.compare("dx", dx, rdx, alternatives=[
            (_oracle.conv2d_grads(x, w[:, :, ::-1, ::-1], b, stride, pad, dout)[0],
             "dx is what a flipped kernel gives: use w as it is (cross-correlation)."),
            *[(functools.partial(grads_of, ("w", k), 0, w_=w_eff),
               _order_hint(order).replace("the im2col columns", "in backward, the columns "
                                          "(col2im)"))
              for k, (_p, w_eff, order) in enumerate(orders)],
            *[(functools.partial(grads_of, ("d", k), 0, dout_=d), dout_hint)
              for k, d in enumerate(scrambled)],
            *([(xp_grad[:, :, :h, :wd], (
                f"dx is the gradient of the padded input cut at [0:H, 0:W] instead of "
                f"[pad:pad + H, pad:pad + W] (or the windows were added into an unpadded dx "
                f"without the offset pad): accumulate into dx_pad of the padded shape, then "
                f"dx = dx_pad[:, :, {pad}:{pad} + H, {pad}:{pad} + W]."))] if pad else []),
        ], fallback_hint=_overlap_hint(dx, rdx, _window_coverage(xs, ws, stride, pad)),
            fallback_first=True)
        dw = chk.array(dw, "dw", ws)
        chk.compare("dw", dw, rdw, alternatives=[
            (rdw[:, :, ::-1, ::-1], ("dw is flipped: dw[f, c, i, j] = sum over n and output "
                                    "positions of dout * x_window[c, i, j].")),
            *[(rdw.transpose(0, *(1 + p for p in perm)).reshape(ws),
               _order_hint(order).replace("the im2col columns", "in backward, the columns"))
              for perm, _w, order in orders],
            *[(functools.partial(grads_of, ("d", k), 1, dout_=d), dout_hint)
              for k, d in enumerate(scrambled)],
        ])
        not_summed = "db not summed over the batch and spatial positions: " \
                     "db = dout.sum(axis=(0, 2, 3)), one value per filter."
        db = chk.array(db, "db", (f,), shape_hints=[
            ((n, f, ho, wo), not_summed), ((n, f), not_summed), ((f, ho, wo), not_summed),
            ((n, f, 1, 1), not_summed), ((1, f, 1, 1), not_summed + " (no keepdims)"),
            ((f, 1, 1), not_summed + " (no keepdims)"), ((1, f), not_summed + " (no keepdims)"),
        ])
        chk.compare("db", db, rdb, alternatives=[
            (dout.sum(axis=(2, 3))[0], not_summed + " (only the first sample was used)"),
            (dout.sum(axis=0)[:, 0, 0], not_summed),
            *_db_averaged(dout),
        ])
    chk.passed()


_POOL_CASES = [
    # (x shape, size, stride, data kind)
    ((2, 3, 4, 4), 2, 2, "random"),
    ((2, 2, 6, 6), 3, 3, "random"),
    ((2, 3, 11, 11), 2, 2, "random"),
    ((2, 2, 6, 6), 2, 2, "ties"),
    ((1, 2, 7, 6), 3, 2, "random"),
]


def _pool_data(rng, shape, kind) -> np.ndarray:
    if kind == "ties":
        x = rng.integers(0, 3, size=shape).astype(np.float64)
        x[0, 0, :2, :2] = 1.0           # one window where all four values are equal
        return x
    return rng.standard_normal(shape)


def _pool_desc(shape, size, stride, kind) -> str:
    desc = f"x {_fmt_shape(shape)}, size {size}, stride {stride}"
    h, w = shape[2:]
    if (h - size) % stride or (w - size) % stride:
        desc += " (odd size: the last rows/columns belong to no window and get no gradient)"
    if size > stride:
        desc += " (overlapping windows)"
    if kind == "ties":
        desc += " (many tied maxima: values in {0, 1, 2})"
    return desc


def _pool_diagnose(x, dx, dout, size):
    """Name the routing bug of a max-pool backward for non-overlapping windows."""
    n, c = x.shape[:2]
    ho, wo = dout.shape[2:]
    hh, ww = ho * size, wo * size

    def windows(a):
        return a[:, :, :hh, :ww].reshape(n, c, ho, size, wo, size).transpose(0, 1, 2, 4, 3, 5) \
            .reshape(n, c, ho, wo, size * size)

    xw, dw = windows(x), windows(dx)
    is_max = xw == xw.max(axis=-1, keepdims=True)
    tied = is_max.sum(axis=-1) > 1
    nonzero = (dw != 0).sum(axis=-1)
    if np.any(nonzero[~tied] > 1):
        return ("the gradient is sent to every position in the window: only the maximum "
                "receives dout, the other positions get 0.")
    if np.any(nonzero[tied] > 1):
        return ("the gradient is sent to every tied maximum: when several values equal the "
                "max, send it to one of them only, the first in row-major order (as np.argmax "
                "and torch do).")
    outside = dx.copy()
    outside[:, :, :hh, :ww] = 0
    if np.any(outside):
        return ("dx is non-zero in rows/columns that no window covers: they must get 0.")
    if np.any((nonzero == 0) & (dout != 0)):
        return "dx is all zeros in some windows: is the gradient routed to the max?"
    if np.any((dw != 0) & ~is_max):
        return ("the gradient went to a position that is not the window's maximum: check how "
                "the argmax index is turned into (row, column), e.g. "
                "np.unravel_index(idx, (size, size)).")
    first = np.argmax(xw, axis=-1)
    chosen = np.argmax(dw != 0, axis=-1)
    if np.any(chosen != first):
        return ("for tied maxima the gradient went to another tied position: the convention is "
                "the first maximum in row-major order (np.argmax), as in torch.")
    return "the maximum received a value different from dout: it should receive dout unchanged."


def check_maxpool2d(fwd, bwd) -> None:
    """Check ``maxpool2d_forward(x, size=2, stride=2) -> (out, cache)`` and
    ``maxpool2d_backward(dout, cache) -> dx`` against torch (odd sizes, ties, overlaps)."""
    chk = _Check("check_maxpool2d", len(_POOL_CASES))
    rng = _rng(7)
    for i, (shape, size, stride, kind) in enumerate(_POOL_CASES, 1):
        chk.case(i, _pool_desc(shape, size, stride, kind), shape[0])
        x = _pool_data(rng, shape, kind)
        before = x.copy()
        res = chk.call(fwd, x, size=size, stride=stride,
                       signature="maxpool2d_forward(x, size=2, stride=2) -> (out, cache)")
        out, cache = chk.unpack(res, ("out", "cache"), "maxpool2d_forward")
        chk.unchanged(before, x, "maxpool2d_forward changed its input x in place.")
        ref = _oracle.maxpool2d(x, size, stride)
        n, c, h, w = shape
        ho, wo = ref.shape[2:]
        formula = f"the output size is (H - size) // stride + 1, here {ho} x {wo}"
        out = chk.array(out, "out", ref.shape, shape_hints=[
            ((n, c, ho + 1, wo + 1), (f"output size off by one: {formula}; windows that do not "
                                     f"fit are dropped.")),
            ((n, c, h // size, w // size), f"stride ignored? {formula}."),
            ((n, c, h - size + 1, w - size + 1), f"stride ignored: {formula}."),
        ])
        chk.compare("out", out, ref, alternatives=[
            (_oracle.avgpool2d(x, size, stride),
             "out is average pooling: take the max over each window."),
        ])
        dout = rng.standard_normal(ref.shape)
        res = chk.call(bwd, dout, cache, signature="maxpool2d_backward(dout, cache) -> dx")
        dx = chk.array(res, "dx", shape)
        rdx = _oracle.maxpool2d_grad(x, size, stride, dout)
        if size == stride:
            hint = _pool_diagnose(x, np.asarray(dx, dtype=np.float64), dout, size)
        else:
            hint = ("the windows overlap here (size > stride): add (+=) the gradients of "
                    "windows that share a maximum, do not overwrite them.")
        chk.compare("dx", dx, rdx, fallback_hint=hint, alternatives=[])
    chk.passed()
