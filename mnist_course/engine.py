"""A small reverse-mode automatic differentiation on NumPy arrays: lesson 05's engine.

This is the course's copy of what the learner writes in ``05_numpy_autograd.ipynb``; lesson 06
(the first PyTorch lesson) falls back on it through ``keep.use(..., fallback=engine)`` when the
learner's package ``mine`` lacks their own. The names are PyTorch's wherever PyTorch has one, so
that lesson 06 maps each piece to torch one for one:

==========================  ============================================================
here                        torch
==========================  ============================================================
``Tensor(data, requires_grad)``  ``torch.tensor(data, requires_grad=...)``
``t.data``, ``t.grad``      the same
``t.grad_fn``               the same: the :class:`Node` of the operation that made ``t``
``grad_fn.next_functions``  the same: the nodes of its inputs (None for a leaf)
``t.is_leaf``               the same
``t.backward(gradient)``    the same (:func:`backward` is ``torch.autograd.backward``)
``sum_to_size(g, shape)``   ``g.sum_to_size(shape)``
``no_grad()``               ``torch.no_grad()``
``zero_grad(params)``       ``optimizer.zero_grad()`` (sets ``.grad`` to None)
``linear, relu, conv2d, max_pool2d, cross_entropy``  ``torch.nn.functional``'s, except that
                            ``linear``'s weight is (D_in, D_out), the course's layout
==========================  ============================================================

How it works. Every operation computes its result with NumPy and, when one of its inputs requires
a gradient, records a :class:`Node`: its inputs and its *backward rule*, a function from the
gradient of the result to the gradients of the inputs (one per input, each of that input's
shape). :func:`backward` orders the graph's nodes so that each one comes after every node that
uses its result (reverse topological order), then runs the rules in that order, adding up the
gradients a tensor receives from each of its uses, and adds the totals into the ``.grad`` of the
leaves that require it. The layer operations' backward rules are the course's hand-written
layer backward passes of :mod:`mnist_course.numpy_cnn`.

Only :class:`Tensor` holds state shared by every operation (``Tensor.grad_enabled``, switched by
:class:`no_grad`): a copy of an operation saved into ``mine`` beside ``Tensor`` then still obeys
the one switch.
"""

from __future__ import annotations

import numpy as np

from mnist_course.numpy_cnn import (
    conv2d_backward,
    conv2d_forward,
    linear_backward,
    linear_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)

__all__ = [  # noqa: RUF022 (in reading order)
    "Node", "Tensor", "no_grad", "from_op", "as_tensor", "sum_to_size",
    "add", "mul", "matmul", "reduce_sum", "reshape", "backward", "zero_grad",
    "linear", "relu", "conv2d", "max_pool2d", "cross_entropy",
    "engine_forward", "sgd_step", "torch_loss_and_grads",
]


# --------------------------------------------------------------------------------------------
# The graph: nodes, tensors, the switch
# --------------------------------------------------------------------------------------------

class Node:
    """What an operation records: torch's ``grad_fn``.

    name: e.g. "MulBackward". inputs: the tensors the operation read, in order.
    backward: the rule, ``backward(grad) -> tuple`` with one gradient per input (an array of
    that input's shape, or None where no gradient flows). Calling the node runs the rule.
    """

    def __init__(self, name, inputs, backward):
        self.name = name
        self.inputs = tuple(inputs)
        self.backward = backward

    def __call__(self, grad):
        return self.backward(grad)

    @property
    def next_functions(self):
        """The nodes of the inputs (None for a leaf): the edges of the graph, as in torch."""
        return tuple(t.grad_fn for t in self.inputs)

    def __repr__(self):
        return f"<{self.name}>"


class Tensor:
    """An ndarray that can remember how it was made.

    data: the values (a float ndarray; integers are converted to float64).
    grad: None until :func:`backward` reaches this tensor; then an array of data's shape, the sum
        of all the gradients of all the ``backward()`` calls since the last :func:`zero_grad`.
    requires_grad: whether operations on it are recorded and its gradient kept.
    grad_fn: the :class:`Node` of the operation that made it; None for a leaf (made by you).
    """

    grad_enabled = True   # False inside `with no_grad():` (one switch for every operation)

    def __init__(self, data, requires_grad=False, grad_fn=None):
        data = np.asarray(data)
        self.data = data if data.dtype.kind == "f" else data.astype(np.float64)
        self.grad = None
        self.requires_grad = requires_grad
        self.grad_fn = grad_fn

    @property
    def shape(self):
        return self.data.shape

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def item(self):
        return self.data.item()

    def __repr__(self):
        extra = f", grad_fn={self.grad_fn!r}" if self.grad_fn is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        return f"Tensor(shape={self.shape}{extra})"

    # operations: each is a function below, which records the node
    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __neg__(self):
        return mul(self, -1.0)

    def __sub__(self, other):
        return add(self, mul(other, -1.0))

    def __rsub__(self, other):
        return add(other, mul(self, -1.0))

    def __matmul__(self, other):
        return matmul(self, other)

    def sum(self, dim=None, keepdim=False):
        return reduce_sum(self, dim, keepdim)

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple)
                       else shape)

    def backward(self, gradient=None):
        backward(self, gradient)


class no_grad:
    """``with no_grad():`` operations record nothing (torch.no_grad): for evaluation and for
    updating parameters."""

    def __enter__(self):
        self.before = Tensor.grad_enabled
        Tensor.grad_enabled = False

    def __exit__(self, *exc):
        Tensor.grad_enabled = self.before


def as_tensor(value):
    """value itself if it is a tensor of this engine (it has a grad_fn), else a constant
    Tensor of it (requires_grad=False)."""
    return value if hasattr(value, "grad_fn") else Tensor(value)


def from_op(data, inputs, backward, name):
    """The result of an operation: a Tensor of data that records its inputs and its backward
    rule when one of the inputs requires a gradient (and no_grad is off), else a constant."""
    if Tensor.grad_enabled and any(t.requires_grad for t in inputs):
        return Tensor(data, requires_grad=True, grad_fn=Node(name, inputs, backward))
    return Tensor(data)


# --------------------------------------------------------------------------------------------
# Primitive operations
# --------------------------------------------------------------------------------------------

def sum_to_size(grad, shape):
    """The gradient of an input of ``shape`` that NumPy broadcast to ``grad.shape``.

    Broadcasting copies the input along the leading axes it lacks and along its axes of size 1;
    the gradient of a copied value is the sum of its copies' gradients. grad: an array whose
    shape shape broadcasts to. Returns an array of ``shape``.
    """
    shape = tuple(shape)
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def add(a, b):
    """a + b with broadcasting; each input's gradient is grad, summed back to its shape."""
    a, b = as_tensor(a), as_tensor(b)

    def backward(grad):
        return sum_to_size(grad, a.shape), sum_to_size(grad, b.shape)

    return from_op(a.data + b.data, (a, b), backward, "AddBackward")


def mul(a, b):
    """a * b elementwise, with broadcasting: d(a*b)/da = b, d(a*b)/db = a."""
    a, b = as_tensor(a), as_tensor(b)

    def backward(grad):
        return sum_to_size(grad * b.data, a.shape), sum_to_size(grad * a.data, b.shape)

    return from_op(a.data * b.data, (a, b), backward, "MulBackward")


def matmul(a, b):
    """a (N, K) @ b (K, M) -> (N, M): grads grad @ b.T (N, K) and a.T @ grad (K, M)."""
    a, b = as_tensor(a), as_tensor(b)

    def backward(grad):
        return grad @ b.data.T, a.data.T @ grad

    return from_op(a.data @ b.data, (a, b), backward, "MmBackward")


def reduce_sum(a, dim=None, keepdim=False):
    """``a.sum(dim, keepdim)``: every summed element gets the gradient of its sum."""
    a = as_tensor(a)

    def backward(grad):
        if dim is not None and not keepdim:
            grad = np.expand_dims(grad, dim)
        return (np.broadcast_to(grad, a.shape).copy(),)

    return from_op(a.data.sum(axis=dim, keepdims=keepdim), (a,), backward, "SumBackward")


def reshape(a, shape):
    """``a.reshape(shape)``: the gradient goes back to a's shape."""
    a = as_tensor(a)

    def backward(grad):
        return (grad.reshape(a.shape),)

    return from_op(a.data.reshape(shape), (a,), backward, "ReshapeBackward")


# --------------------------------------------------------------------------------------------
# backward() and zero_grad()
# --------------------------------------------------------------------------------------------

def backward(tensor, gradient=None):
    """Add the gradient of ``tensor`` with respect to every leaf that requires it into the
    leaf's ``.grad`` (torch.autograd.backward).

    gradient: the gradient to start from, an array of tensor's shape; may be left out only
    when tensor holds a single number (it is then 1). Raises RuntimeError otherwise, as torch.
    The gradients of the intermediate tensors live in a dict of this call only.
    """
    if gradient is None:
        if tensor.data.size != 1:
            raise RuntimeError(f"backward() of a tensor of shape {tensor.shape} needs a gradient "
                               "to start from: grad can be implicitly created only for scalar "
                               "outputs")
        gradient = np.ones_like(tensor.data)
    order, visited = [], set()

    def visit(t):                      # depth first: t comes after everything it was made of
        if id(t) in visited:
            return
        visited.add(id(t))
        if t.grad_fn is not None:
            for inp in t.grad_fn.inputs:
                visit(inp)
        order.append(t)

    visit(tensor)
    grads = {id(tensor): np.asarray(gradient, dtype=tensor.data.dtype)}
    for t in reversed(order):          # each tensor after every tensor that uses it
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


def zero_grad(params):
    """Forget the gradients of params (an iterable of tensors): ``.grad = None``, as torch's
    ``optimizer.zero_grad()``."""
    for p in params:
        p.grad = None


# --------------------------------------------------------------------------------------------
# Layer operations: the hand-written layers of lessons 01-02 as backward rules
# --------------------------------------------------------------------------------------------

def linear(x, w, b):
    """x (N, D_in) @ w (D_in, D_out) + b (D_out,) -> (N, D_out); rule: linear_backward."""
    x, w, b = as_tensor(x), as_tensor(w), as_tensor(b)
    out, cache = linear_forward(x.data, w.data, b.data)

    def backward(grad):
        return linear_backward(grad, cache)

    return from_op(out, (x, w, b), backward, "LinearBackward")


def relu(x):
    """max(0, x), any shape; rule: relu_backward."""
    x = as_tensor(x)
    out, cache = relu_forward(x.data)

    def backward(grad):
        return (relu_backward(grad, cache),)

    return from_op(out, (x,), backward, "ReluBackward")


def conv2d(x, w, b, stride=1, padding=0):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,) -> (N, F, OH, OW); rule: conv2d_backward."""
    x, w, b = as_tensor(x), as_tensor(w), as_tensor(b)
    out, cache = conv2d_forward(x.data, w.data, b.data, stride, padding)

    def backward(grad):
        return conv2d_backward(grad, cache)

    return from_op(out, (x, w, b), backward, "ConvolutionBackward")


def max_pool2d(x, kernel_size=2, stride=2):
    """x (N, C, H, W) -> (N, C, OH, OW), the maximum of each window; rule:
    maxpool2d_backward."""
    x = as_tensor(x)
    out, cache = maxpool2d_forward(x.data, kernel_size, stride)

    def backward(grad):
        return (maxpool2d_backward(grad, cache),)

    return from_op(out, (x,), backward, "MaxPool2DBackward")


def cross_entropy(logits, y):
    """Mean softmax cross-entropy of logits (N, K) and integer labels y (N,): a tensor of one
    number. Rule: the upstream gradient (one number) times softmax_cross_entropy's dlogits."""
    logits = as_tensor(logits)
    loss, dlogits = softmax_cross_entropy(logits.data, np.asarray(y))

    def backward(grad):
        return (grad * dlogits,)

    return from_op(np.asarray(loss, dtype=logits.data.dtype), (logits,), backward,
                   "CrossEntropyBackward")


# --------------------------------------------------------------------------------------------
# The course CNN on the engine, and a training step
# --------------------------------------------------------------------------------------------

def engine_forward(params, x):
    """The course CNN's logits (N, 10) for x (N, 1, 28, 28), as a Tensor.

    params: dict of Tensors with the keys and shapes of ``numpy_cnn.PARAM_SHAPES``.
    """
    p = params
    h = max_pool2d(relu(conv2d(x, p["conv1_w"], p["conv1_b"])))      # (N, 32, 13, 13)
    h = max_pool2d(relu(conv2d(h, p["conv2_w"], p["conv2_b"])))      # (N, 64, 5, 5)
    h = relu(conv2d(h, p["conv3_w"], p["conv3_b"]))                  # (N, 64, 3, 3)
    h = h.reshape(h.shape[0], -1)                                     # (N, 576)
    h = relu(linear(h, p["fc1_w"], p["fc1_b"]))                      # (N, 64)
    return linear(h, p["fc2_w"], p["fc2_b"])                         # (N, 10)


def sgd_step(params, x, y, lr):
    """One plain SGD step on (x, y), changing params' arrays in place; returns the loss (float)
    before the step. params: dict of Tensors, as for :func:`engine_forward`."""
    zero_grad(params.values())
    loss = cross_entropy(engine_forward(params, x), y)
    loss.backward()
    for p in params.values():
        p.data -= lr * p.grad     # plain NumPy on .data: nothing is recorded
    return loss.item()


def torch_loss_and_grads(params, x, y):
    """The course CNN's loss and gradients by ``torch.autograd``, in float64, for comparisons.

    params: dict of NumPy arrays (the keys of ``numpy_cnn.PARAM_SHAPES``, linear weights
    (D_in, D_out)); x (N, 1, 28, 28); y (N,) integer labels. Returns (loss float, grads dict of
    float64 arrays). Uses torch.nn.functional and autograd only, never the course's layers.
    """
    from mnist_course import _oracle

    return _oracle.cnn_loss_and_grads(params, x, y)
