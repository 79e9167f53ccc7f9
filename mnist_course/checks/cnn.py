"""Checks of lesson 03: the whole course CNN."""

from __future__ import annotations

import numpy as np

from mnist_course import _oracle
from mnist_course.checks._core import (
    TOL_FLOAT32,
    TOL_FLOAT64,
    _Check,
    _describe,
    _fmt_shape,
    _rel_error,
    _rng,
)

# --------------------------------------------------------------------------------------------
# The whole CNN (lesson 03)
# --------------------------------------------------------------------------------------------

def check_cnn_loss_and_grads(fn) -> None:
    """Check ``cnn_loss_and_grads(params, x, y) -> (loss, grads)`` for the course CNN against
    autograd, with float64 He-scaled parameters (seed 0) and a batch of 3 images."""
    n = 3
    rng = _rng(8)
    params = _oracle.init_cnn_params(seed=0)
    x = rng.standard_normal((n, 1, 28, 28))
    y = np.array([3, 7, 1], dtype=np.int64)
    chk = _Check("check_cnn_loss_and_grads", 1)
    chk.case(1, f"params: He-scaled float64 (seed 0), x {_fmt_shape(x.shape)}, y {y.tolist()}",
             n)
    copies = {k: v.copy() for k, v in params.items()}
    res = chk.call(fn, params, x, y, signature="cnn_loss_and_grads(params, x, y) -> "
                                               "(loss, grads)")
    loss, grads = chk.unpack(res, ("loss", "grads"), "cnn_loss_and_grads")
    for k in _oracle.CNN_KEYS:
        chk.unchanged(copies[k], params[k], f"cnn_loss_and_grads changed params['{k}'] in "
                                            f"place: it must only compute, not update.")
    ref_loss, ref_grads = _oracle.cnn_loss_and_grads(params, x, y)
    loss = chk.scalar(loss, "loss")
    chk.compare("loss", loss, ref_loss, alternatives=[
        (lambda: _oracle.cnn_loss_and_grads(params, x, y, flatten="hwc")[0],
         ("the flatten order: flatten the (N, 64, 3, 3) activations in (C, H, W) order, "
         "h.reshape(N, -1), not in (H, W, C) order.")),
    ], fallback_hint="the forward pass differs: Conv(1->32, 3x3) ReLU MaxPool 2, Conv(32->64) "
                     "ReLU MaxPool 2, Conv(64->64) ReLU, flatten (C, H, W), Dense 64 ReLU, "
                     "Dense 10, mean cross-entropy.")
    if not isinstance(grads, dict):
        chk.fail(f"grads should be a dict with the keys of params; got {_describe(grads)}.")
    missing = [k for k in _oracle.CNN_KEYS if k not in grads]
    if missing:
        chk.fail(f"grads lacks the keys {missing}; it needs one gradient per parameter, "
                 f"with the same keys as params.")
    checked = {}
    for k in _oracle.CNN_KEYS:
        checked[k] = chk.array(grads[k], f"grads['{k}']", params[k].shape)
    wrong = []
    for k in _oracle.CNN_KEYS:
        low = checked[k].dtype != np.float64
        if _rel_error(checked[k], ref_grads[k], low) > (TOL_FLOAT32 if low else TOL_FLOAT64):
            wrong.append(k)
    if wrong:
        # Backprop runs from the loss to the input: the wrong gradient nearest the loss shows
        # where the bug is.
        last = wrong[-1]
        layer = last.rsplit("_", 1)[0]
        right = [k for k in _oracle.CNN_KEYS if k not in wrong]
        try:
            chk.compare(f"grads['{last}']", checked[last], ref_grads[last])
        except AssertionError as exc:
            detail = str(exc).split("\n  ", 1)[1]
            chk.fail(f"wrong gradients: {', '.join(wrong)}; correct: "
                     f"{', '.join(right) if right else 'none'}.",
                     f"Backprop runs from the loss backwards, so look first at {layer}: "
                     f"its backward pass, or the ReLU/pooling backward just after it.",
                     detail)
    for k in _oracle.CNN_KEYS:
        chk.compare(f"grads['{k}']", checked[k], ref_grads[k])
    chk.passed()
