"""Deliberately buggy autograd engines for tests/test_checks_engine.py.

Each engine is a fresh copy of the course's engine (:mod:`mnist_course.engine`, executed into a
module of its own, so its ``Tensor`` class and its grad switch are its own) with one function
replaced by a buggy one. The buggy functions below are written against the engine's names (the
import only lets them read as code); :func:`make_engine` runs them in the copy's namespace. Each
holds one classic mistake; the matching test asserts that the check names it.
"""

from __future__ import annotations

import inspect
import types
from collections import deque

import numpy as np

from mnist_course import engine as _reference
from mnist_course.engine import (  # the names the buggy functions use, bound in the copy
    as_tensor,
    conv2d,
    conv2d_backward,
    conv2d_forward,
    from_op,
    linear,
    linear_backward,
    linear_forward,
    max_pool2d,
    relu,
    softmax_cross_entropy,
    sum_to_size,
)

_SOURCE = inspect.getsource(_reference)


def make_engine(**replace) -> types.ModuleType:
    """A fresh copy of the course's engine with the named functions replaced."""
    module = types.ModuleType(f"buggy_engine_{'_'.join(replace) or 'correct'}")
    exec(compile(_SOURCE, _reference.__file__, "exec"), module.__dict__)  # noqa: S102
    def bound(fn, name):
        return types.FunctionType(fn.__code__, module.__dict__, name, fn.__defaults__,
                                  fn.__closure__)

    for name in ("_seed", "_topological"):        # helpers of the buggy functions
        module.__dict__[name] = bound(globals()[name], name)
    module.__dict__["deque"] = deque
    for name, fn in replace.items():
        assert name in module.__dict__, name
        module.__dict__[name] = bound(fn, name)
    return module


# --------------------------------------------------------------------------------------------
# sum_to_size and the primitives
# --------------------------------------------------------------------------------------------

def sum_to_size_unchanged(grad, shape):
    """The broadcast input's gradient is not summed back to its shape."""
    return grad


def sum_to_size_mean(grad, shape):
    """Averages the copies' gradients instead of adding them."""
    shape = tuple(shape)
    while grad.ndim > len(shape):
        grad = grad.mean(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.mean(axis=axis, keepdims=True)
    return grad


def sum_to_size_keepdims(grad, shape):
    """Sums the leading axes with keepdims: (3, 4) -> (1, 4) instead of (4,)."""
    shape = tuple(shape)
    lead = grad.ndim - len(shape)
    for axis in range(lead):
        grad = grad.sum(axis=axis, keepdims=True)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[lead + axis] != 1:
            grad = grad.sum(axis=lead + axis, keepdims=True)
    return grad


def mul_own_input(a, b):
    """Each input's gradient multiplied by itself instead of by the other input."""
    a, b = as_tensor(a), as_tensor(b)

    def backward(grad):
        return sum_to_size(grad * a.data, a.shape), sum_to_size(grad * b.data, b.shape)

    return from_op(a.data * b.data, (a, b), backward, "MulBackward")


def add_no_sum_to_size(a, b):
    """The bias gets the gradient of the whole broadcast result."""
    a, b = as_tensor(a), as_tensor(b)

    def backward(grad):
        return grad, grad

    return from_op(a.data + b.data, (a, b), backward, "AddBackward")


def reshape_not_back(a, shape):
    """The gradient keeps the result's shape."""
    a = as_tensor(a)

    def backward(grad):
        return (grad,)

    return from_op(a.data.reshape(shape), (a,), backward, "ReshapeBackward")


def matmul_records_nothing(a, b):
    """Computes the product, records no node."""
    a, b = as_tensor(a), as_tensor(b)
    return as_tensor(a.data @ b.data)


# --------------------------------------------------------------------------------------------
# backward() and zero_grad()
# --------------------------------------------------------------------------------------------

def _topological(tensor):
    order, visited = [], set()

    def visit(t):
        if id(t) in visited:
            return
        visited.add(id(t))
        if t.grad_fn is not None:
            for inp in t.grad_fn.inputs:
                visit(inp)
        order.append(t)

    visit(tensor)
    return order


def _seed(tensor, gradient):
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        gradient = np.ones_like(tensor.data)
    return gradient


def backward_overwrites(tensor, gradient=None):
    """A gradient that arrives for a tensor that already has one replaces it."""
    grads = {id(tensor): _seed(tensor, gradient)}
    for t in reversed(_topological(tensor)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t.grad_fn is None:
            if t.requires_grad:
                t.grad = g.copy() if t.grad is None else t.grad + g
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(g)):
            if gi is not None and inp.requires_grad:
                grads[id(inp)] = gi                       # the bug: = instead of +=


def backward_replaces_leaf_grad(tensor, gradient=None):
    """Each call replaces .grad instead of adding to it."""
    grads = {id(tensor): _seed(tensor, gradient)}
    for t in reversed(_topological(tensor)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t.grad_fn is None:
            if t.requires_grad:
                t.grad = g.copy()                         # the bug: the old .grad is lost
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(g)):
            if gi is not None and inp.requires_grad:
                grads[id(inp)] = gi if id(inp) not in grads else grads[id(inp)] + gi


def backward_queue(tensor, gradient=None):
    """Breadth first from the output, each node once: a node can run before all the tensors
    that use it have added their gradients."""
    grads = {id(tensor): _seed(tensor, gradient)}
    queue, done = deque([tensor]), set()
    while queue:
        t = queue.popleft()
        if id(t) in done:
            continue
        done.add(id(t))
        g = grads.get(id(t))
        if t.grad_fn is None:
            if t.requires_grad:
                t.grad = g.copy() if t.grad is None else t.grad + g
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(g)):
            if gi is not None and inp.requires_grad:
                grads[id(inp)] = gi if id(inp) not in grads else grads[id(inp)] + gi
                queue.append(inp)


def backward_no_visited_set(tensor, gradient=None):
    """The order is built without remembering visited tensors: a tensor reached by two paths
    is in it twice, and its rule passes its gradient on twice."""
    order = []

    def visit(t):
        if t.grad_fn is not None:
            for inp in t.grad_fn.inputs:
                visit(inp)
        order.append(t)

    visit(tensor)
    grads = {id(tensor): _seed(tensor, gradient)}
    for t in reversed(order):
        g = grads.get(id(t))
        if g is None:
            continue
        if t.grad_fn is None:
            if t.requires_grad:
                t.grad = g.copy() if t.grad is None else t.grad + g
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(g)):
            if gi is not None and inp.requires_grad:
                grads[id(inp)] = gi if id(inp) not in grads else grads[id(inp)] + gi


def backward_keeps_intermediate_grads(tensor, gradient=None):
    """micrograd's way, on arrays, without a reset: every tensor's .grad holds its running
    gradient, and the intermediate tensors' .grad carry over into the next call."""
    order = _topological(tensor)
    tensor.grad = _seed(tensor, gradient)
    for t in reversed(order):
        if t.grad_fn is None or t.grad is None:
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(t.grad)):
            if gi is not None and inp.requires_grad:
                inp.grad = gi.copy() if inp.grad is None else inp.grad + gi


def backward_seeds_ones(tensor, gradient=None):
    """backward() of a tensor of several numbers silently starts from ones, and the given
    gradient is ignored."""
    grads = {id(tensor): np.ones_like(tensor.data)}
    for t in reversed(_topological(tensor)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t.grad_fn is None:
            if t.requires_grad:
                t.grad = g.copy() if t.grad is None else t.grad + g
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(g)):
            if gi is not None and inp.requires_grad:
                grads[id(inp)] = gi if id(inp) not in grads else grads[id(inp)] + gi


def backward_every_leaf(tensor, gradient=None):
    """Gives a .grad to every leaf, also those made with requires_grad=False."""
    grads = {id(tensor): _seed(tensor, gradient)}
    for t in reversed(_topological(tensor)):
        g = grads.pop(id(t), None)
        if g is None:
            continue
        if t.grad_fn is None:
            t.grad = g.copy() if t.grad is None else t.grad + g
            continue
        for inp, gi in zip(t.grad_fn.inputs, t.grad_fn(g)):
            if gi is not None:
                grads[id(inp)] = gi if id(inp) not in grads else grads[id(inp)] + gi


def zero_grad_rebinds(params):
    """Assigns None to the loop variable: the tensors keep their gradients."""
    for p in params:
        p = None  # noqa: F841 (the bug)


# --------------------------------------------------------------------------------------------
# Layer operations and the CNN
# --------------------------------------------------------------------------------------------

def linear_wrong_order(x, w, b):
    """The rule returns (dw, dx, db): not the order of the inputs."""
    x, w, b = as_tensor(x), as_tensor(w), as_tensor(b)
    out, cache = linear_forward(x.data, w.data, b.data)

    def backward(grad):
        dx, dw, db = linear_backward(grad, cache)
        return dw, dx, db

    return from_op(out, (x, w, b), backward, "LinearBackward")


def conv2d_ignores_stride(x, w, b, stride=1, padding=0):
    """stride and padding are not passed on to conv2d_forward."""
    x, w, b = as_tensor(x), as_tensor(w), as_tensor(b)
    out, cache = conv2d_forward(x.data, w.data, b.data)

    def backward(grad):
        return conv2d_backward(grad, cache)

    return from_op(out, (x, w, b), backward, "ConvolutionBackward")


def cross_entropy_ignores_grad(logits, y):
    """The rule returns dlogits, whatever the upstream gradient."""
    logits = as_tensor(logits)
    loss, dlogits = softmax_cross_entropy(logits.data, np.asarray(y))

    def backward(grad):
        return (dlogits,)

    return from_op(np.asarray(loss, dtype=logits.data.dtype), (logits,), backward,
                   "CrossEntropyBackward")


def engine_forward_hwc(params, x):
    """Flattens in (H, W, C) order (a transpose of .data: no gradient for the convolutions)."""
    p = params
    h = max_pool2d(relu(conv2d(x, p["conv1_w"], p["conv1_b"])))
    h = max_pool2d(relu(conv2d(h, p["conv2_w"], p["conv2_b"])))
    h = relu(conv2d(h, p["conv3_w"], p["conv3_b"]))
    flat = as_tensor(np.ascontiguousarray(h.data.transpose(0, 2, 3, 1)).reshape(h.shape[0], -1))
    h = relu(linear(flat, p["fc1_w"], p["fc1_b"]))
    return linear(h, p["fc2_w"], p["fc2_b"])


def engine_forward_no_relu_fc1(params, x):
    """The ReLU after fc1 is missing."""
    p = params
    h = max_pool2d(relu(conv2d(x, p["conv1_w"], p["conv1_b"])))
    h = max_pool2d(relu(conv2d(h, p["conv2_w"], p["conv2_b"])))
    h = relu(conv2d(h, p["conv3_w"], p["conv3_b"]))
    h = h.reshape(h.shape[0], -1)
    h = linear(h, p["fc1_w"], p["fc1_b"])
    return linear(h, p["fc2_w"], p["fc2_b"])


def engine_forward_data_of_fc2(params, x):
    """Passes fc2's weight as its .data: backward() never reaches it."""
    p = params
    h = max_pool2d(relu(conv2d(x, p["conv1_w"], p["conv1_b"])))
    h = max_pool2d(relu(conv2d(h, p["conv2_w"], p["conv2_b"])))
    h = relu(conv2d(h, p["conv3_w"], p["conv3_b"]))
    h = h.reshape(h.shape[0], -1)
    h = relu(linear(h, p["fc1_w"], p["fc1_b"]))
    return linear(h, p["fc2_w"].data, p["fc2_b"])

