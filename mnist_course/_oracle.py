"""Reference answers for :mod:`mnist_course.checks`, computed with PyTorch.

Every function here takes and returns NumPy arrays, works in float64 and uses only
``torch.nn.functional`` and autograd. The course's own NumPy layers are never used: the checks
must be able to catch a bug in those layers too. (Only the table of parameter names and shapes
comes from :mod:`mnist_course.numpy_cnn`, its one home: it is data, not code under test.)

Numerical gradients are not computed here: :func:`mnist_course.gradcheck.numerical_gradient` is
their one home, and the tests prove it against closed-form derivatives.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from mnist_course.numpy_cnn import PARAM_NAMES, PARAM_SHAPES

#: The parameter names of the course CNN, in the order of the forward pass.
CNN_KEYS = PARAM_NAMES

#: Parameter shapes of the course CNN (conv: (F, C, KH, KW); dense: (D_in, D_out)).
CNN_SHAPES = PARAM_SHAPES

#: The ReLUs of the course CNN, named by the layer they follow.
CNN_RELUS = ("conv1", "conv2", "conv3", "fc1")


def _single_thread(fn):
    """Run fn with one torch thread, then restore the setting.

    The oracle works on tiny tensors, where thread start-up dominates: on a busy two-core
    machine one float64 conv2d took about 50 ms with two threads and 0.01 ms with one.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


def _tensor(a, grad: bool = False) -> torch.Tensor:
    t = torch.tensor(np.ascontiguousarray(a, dtype=np.float64))
    return t.requires_grad_(grad)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()


@_single_thread
def conv2d(x, w, b, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation, as ``torch.nn.functional.conv2d``. x (N,C,H,W), w (F,C,KH,KW) -> out."""
    with torch.no_grad():
        return _numpy(F.conv2d(_tensor(x), _tensor(w), _tensor(b), stride=stride, padding=pad))


@_single_thread
def conv2d_grads(x, w, b, stride: int, pad: int, dout):
    """Gradients (dx, dw, db) of ``sum(conv2d(x, w, b) * dout)``, by autograd."""
    tx, tw, tb = _tensor(x, True), _tensor(w, True), _tensor(b, True)
    with torch.enable_grad():
        out = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
        out.backward(_tensor(dout))
    return _numpy(tx.grad), _numpy(tw.grad), _numpy(tb.grad)


@_single_thread
def maxpool2d(x, size: int, stride: int) -> np.ndarray:
    """Max pooling (windows that do not fit are dropped, as in torch). x (N,C,H,W) -> out."""
    with torch.no_grad():
        return _numpy(F.max_pool2d(_tensor(x), size, stride))


@_single_thread
def maxpool2d_grad(x, size: int, stride: int, dout) -> np.ndarray:
    """dx of ``sum(maxpool2d(x) * dout)``; torch sends each window's gradient to its first max."""
    tx = _tensor(x, True)
    with torch.enable_grad():
        F.max_pool2d(tx, size, stride).backward(_tensor(dout))
    return _numpy(tx.grad)


@_single_thread
def avgpool2d(x, size: int, stride: int) -> np.ndarray:
    """Average pooling; used only to recognise it when max pooling was meant."""
    with torch.no_grad():
        return _numpy(F.avg_pool2d(_tensor(x), size, stride))


@_single_thread
def relu(x) -> np.ndarray:
    with torch.no_grad():
        return _numpy(F.relu(_tensor(x)))


@_single_thread
def relu_grad(x, dout) -> np.ndarray:
    """dx of ``sum(relu(x) * dout)`` (zero where x <= 0)."""
    tx = _tensor(x, True)
    with torch.enable_grad():
        F.relu(tx).backward(_tensor(dout))
    return _numpy(tx.grad)


@_single_thread
def linear(x, w, b) -> np.ndarray:
    """x (N, D_in) @ w (D_in, D_out) + b (D_out,). torch stores w the other way round."""
    with torch.no_grad():
        return _numpy(F.linear(_tensor(x), _tensor(w).T, _tensor(b)))


@_single_thread
def linear_grads(x, w, b, dout):
    """Gradients (dx, dw, db) of ``sum(linear(x, w, b) * dout)``, by autograd."""
    tx, tw, tb = _tensor(x, True), _tensor(w, True), _tensor(b, True)
    with torch.enable_grad():
        F.linear(tx, tw.T, tb).backward(_tensor(dout))
    return _numpy(tx.grad), _numpy(tw.grad), _numpy(tb.grad)


@_single_thread
def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of integer labels y (N,) and its gradient dlogits (N, K)."""
    t = _tensor(logits, True)
    with torch.enable_grad():
        loss = F.cross_entropy(t, torch.as_tensor(np.asarray(y), dtype=torch.int64))
        loss.backward()
    return float(loss.item()), _numpy(t.grad)


def init_cnn_params(seed: int = 0) -> dict:
    """float64 parameters for the course CNN: He-scaled weights, small non-zero biases."""
    rng = np.random.default_rng(seed)
    params = {}
    for key in CNN_KEYS:
        shape = CNN_SHAPES[key]
        if key.endswith("_w"):
            fan_in = int(np.prod(shape[1:])) if key.startswith("conv") else shape[0]
            params[key] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            params[key] = 0.05 * rng.standard_normal(shape)
    return params


def _cnn_logits(p: dict, x: torch.Tensor, flatten: str = "chw", relus=CNN_RELUS,
                pools=("conv1", "conv2"), relu_logits: bool = False) -> torch.Tensor:
    """The course CNN on tensors; the options leave out a ReLU or a pooling, or flatten in the
    wrong order, so that the checks can recognise those bugs."""
    h = x
    for layer in ("conv1", "conv2", "conv3"):
        h = F.conv2d(h, p[f"{layer}_w"], p[f"{layer}_b"])
        if layer in relus:
            h = F.relu(h)
        if layer in pools:
            h = F.max_pool2d(h, 2, 2)
    if flatten == "hwc":
        h = h.permute(0, 2, 3, 1)
    h = h.reshape(h.shape[0], -1)
    h = h @ p["fc1_w"] + p["fc1_b"]
    if "fc1" in relus:
        h = F.relu(h)
    logits = h @ p["fc2_w"] + p["fc2_b"]
    return F.relu(logits) if relu_logits else logits


@_single_thread
def cnn_logits(params: dict, x, **variant) -> np.ndarray:
    """Logits (N, 10) of the course CNN for x (N, 1, 28, 28), float64.

    params: the NumPy dict (linear weights (D_in, D_out)). variant: the options of a known bug
    (``flatten="hwc"``, ``relus=(...)`` without one of CNN_RELUS, ``relu_logits=True``).
    """
    p = {k: _tensor(params[k]) for k in CNN_KEYS}
    with torch.no_grad():
        return _numpy(_cnn_logits(p, _tensor(x), **variant))


@_single_thread
def cnn_loss_and_grads(params: dict, x, y, flatten: str = "chw"):
    """Loss and gradients of the course CNN, by autograd.

    ``flatten="hwc"`` flattens in the wrong (H, W, C) order; the check uses it to recognise
    that bug.
    """
    p = {k: _tensor(params[k], True) for k in CNN_KEYS}
    with torch.enable_grad():
        logits = _cnn_logits(p, _tensor(x), flatten=flatten)
        loss = F.cross_entropy(logits, torch.as_tensor(np.asarray(y), dtype=torch.int64))
        loss.backward()
    return float(loss.item()), {k: _numpy(p[k].grad) for k in CNN_KEYS}
