"""Checks of lesson 05: your own automatic differentiation on NumPy arrays.

The checks call your engine the way the lesson uses it: ``Tensor(array, requires_grad=True)``,
the operators ``+ * @``, ``t.sum()``, ``t.reshape(...)``, ``t.grad_fn(grad)`` (a node called on
the gradient of its result runs its backward rule), ``t.backward()``, ``t.grad`` and
``zero_grad(tensors)``. Their oracles never use your engine nor the course's: numerical gradients
of plain NumPy expressions (:func:`mnist_course.gradcheck.numerical_gradient`) for the primitive
operations and for ``backward()``, and torch's autograd (:mod:`mnist_course._oracle`) for the
layer operations and the course CNN.

Each failure names the classic mistakes of an autograd engine in the terms of the lesson:
a broadcast input whose gradient is not summed back to its shape; a gradient overwritten instead
of added when a tensor is used twice; a node's backward rule run before every tensor that uses
its result has added its gradient (a diamond-shaped graph shows it); a node visited twice;
gradients not reset between two ``backward()`` calls; ``backward()`` on a tensor of several
numbers without a gradient to start from.
"""

from __future__ import annotations

import numpy as np

from mnist_course import _oracle
from mnist_course.checks._core import _Check, _describe, _nonzero_normal, _rng
from mnist_course.gradcheck import numerical_gradient

BROADCAST_HINT = ("an input that NumPy broadcast (a bias added to every row, a factor of shape "
                  "(3, 1)) was used many times, so its gradient is the SUM of the gradients of "
                  "its copies: sum the gradient back to the input's shape with sum_to_size.")
ACCUMULATE_HINT = ("a tensor used twice got the gradient of only one of its uses: when a "
                   "gradient arrives for a tensor that already has one, add it (+=), do not "
                   "overwrite it.")
ORDER_HINT = ("a node's backward rule ran before every tensor that uses its result had added its "
              "gradient: run the rules in reverse topological order (each tensor after all the "
              "tensors made from it), not in the order a queue or a plain walk from the output "
              "meets them.")
TWICE_HINT = ("a node was visited twice, so its rule passed its gradient on twice: when you "
              "build the order, remember the tensors already visited (a set of id(t)) and add "
              "each one once.")
SEED_HINT = ("backward() on a tensor of several numbers needs a gradient to start from, as in "
             "torch (which gradient would it be?): without one, raise an error (torch raises "
             "RuntimeError: grad can be implicitly created only for scalar outputs); with one, "
             "start from it; start from 1 only for a single number.")


def _is_tensor(value) -> bool:
    return hasattr(value, "data") and hasattr(value, "grad_fn") and hasattr(value, "grad")


def _leaf(chk: _Check, Tensor, array: np.ndarray, requires_grad: bool = True):
    return chk.call(Tensor, array.copy(), requires_grad=requires_grad,
                    signature="Tensor(data, requires_grad=False)")


def _result(chk: _Check, value, what: str, shape: tuple, shape_hints=()) -> np.ndarray:
    """value must be a tensor of the engine; returns its data, checked for shape."""
    if not _is_tensor(value):
        chk.fail(f"{what} is {_describe(value)}, not a Tensor: every operation returns a Tensor "
                 "(made by from_op), whose .data holds the values.")
    return chk.array(value.data, f"{what}.data", shape, shape_hints)


def _grad_of(chk: _Check, t, name: str, shape: tuple, shape_hints=(), none_hint=None):
    if t.grad is None:
        chk.fail(f"{name}.grad is None after backward(): the gradient never reached {name}.",
                 f"Likely bug: {none_hint}" if none_hint else None)
    return chk.array(t.grad, f"{name}.grad", shape, shape_hints)


def _numerical(f, arrays: list, index: int) -> np.ndarray:
    """Numerical gradient of f(*arrays) with respect to arrays[index] (float64 copies)."""
    arrays = [a.copy() for a in arrays]
    return numerical_gradient(lambda a: f(*arrays[:index], a, *arrays[index + 1:]),
                              arrays[index])


# --------------------------------------------------------------------------------------------
# Exercise 1: sum_to_size
# --------------------------------------------------------------------------------------------

def check_sum_to_size(fn) -> None:
    """Check ``sum_to_size(grad, shape) -> array of shape``: the gradient of an input of
    ``shape`` that was broadcast to ``grad.shape``.

    Oracle: the numerical gradient of ``sum(np.broadcast_to(x, grad.shape) * grad)`` at a random
    x of ``shape``. Seven cases: a bias (3, 4) -> (4,), leading axes, axes of size 1, a scalar,
    and no broadcasting at all.
    """
    cases = [((3, 4), (4,)), ((3, 4), (1, 4)), ((2, 3, 4), (3, 1)), ((2, 1, 3), (1, 1, 1)),
             ((5,), (1,)), ((4, 3), ()), ((2, 3), (2, 3))]
    chk = _Check("check_sum_to_size", len(cases))
    rng = _rng(1)
    for index, (big, shape) in enumerate(cases, 1):
        chk.case(index, f"grad of shape {big} summed back to shape {shape}")
        grad = rng.standard_normal(big)
        x = rng.standard_normal(shape)
        ref = numerical_gradient(lambda a, g=grad: float(np.sum(np.broadcast_to(a, g.shape) * g)),
                                 x)
        got = chk.call(fn, grad.copy(), shape, signature="sum_to_size(grad, shape) -> array")
        if np.ndim(got) == 0 and shape == ():
            got = np.asarray(got, dtype=np.float64)
        kept = tuple([1] * (len(big) - len(shape)) + list(shape))
        hints = [(big, f"the gradient came back unchanged, of the broadcast shape {big}: "
                       + BROADCAST_HINT),
                 (kept, ("the leading axes that the input does not have were summed with "
                        "keepdims=True: sum them away (axis=0, without keepdims) until grad has "
                        "as many axes as shape."))]
        got = chk.array(got, "sum_to_size's result", shape, shape_hints=[h for h in hints
                                                                        if h[0] != shape])
        copies = grad.size // max(1, int(np.prod(shape)))
        chk.compare("the summed gradient", got, ref, alternatives=[
            (ref / copies, ("it is the mean of the copies' gradients: a broadcast value gets the "
                           "SUM of its copies' gradients (each copy counts fully)."))])
    chk.passed()


# --------------------------------------------------------------------------------------------
# Exercise 2: the primitive operations
# --------------------------------------------------------------------------------------------

def _primitive_cases():
    """(description, build(tensors) -> result, numpy forward, input shapes, hints(arrays, G))."""
    def mul_hints(a, b, g):
        return [[(g * a, ("the gradient of a in a * b is the upstream gradient times b (the OTHER "
                         "input), not times a.")),
                 (np.broadcast_to(b, a.shape) if b.shape != a.shape else b,
                  ("the upstream gradient (the argument of the rule) is missing: the chain rule "
                  "multiplies the local derivative b by it."))],
                [(_sum_like(g * b, a.shape), ("the gradient of b in a * b is the upstream "
                                              "gradient times a (the OTHER input), not times b."))]]

    none = lambda a, *rest: [[] for _ in range(1 + len(rest))]
    return [
        ("a + b, b a bias of shape (4,) added to every row", lambda a, b: a + b,
         lambda a, b: a + b, [(3, 4), (4,)], none),
        ("a + b, broadcast both ways: (2, 3, 1) + (1, 4)", lambda a, b: a + b,
         lambda a, b: a + b, [(2, 3, 1), (1, 4)], none),
        ("a * b, same shapes", lambda a, b: a * b, lambda a, b: a * b, [(3, 4), (3, 4)],
         lambda a, b, g: mul_hints(a, b, g)),
        ("a * b, b of shape (3, 1) broadcast along the rows", lambda a, b: a * b,
         lambda a, b: a * b, [(3, 4), (3, 1)], lambda a, b, g: mul_hints(a, b, g)),
        ("a @ b, (3, 4) @ (4, 2)", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 2)],
         none),
        ("a.sum(), all elements", lambda a: a.sum(), lambda a: np.sum(a), [(3, 4)], none),
        ("a.sum(dim=0)", lambda a: a.sum(dim=0), lambda a: a.sum(axis=0), [(3, 4)], none),
        ("a.sum(dim=1, keepdim=True)", lambda a: a.sum(dim=1, keepdim=True),
         lambda a: a.sum(axis=1, keepdims=True), [(3, 4)], none),
        ("a.reshape(6, 4) of a (2, 3, 4)", lambda a: a.reshape(6, 4),
         lambda a: a.reshape(6, 4), [(2, 3, 4)], none),
    ]


def _sum_like(g: np.ndarray, shape: tuple) -> np.ndarray:
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def check_primitives(Tensor) -> None:
    """Check the backward rules of the primitive operations: ``a + b``, ``a * b`` (with
    broadcasting), ``a @ b``, ``a.sum(dim, keepdim)`` and ``a.reshape(shape)``.

    For each, the result's values and its node are inspected: ``out.grad_fn`` must exist and,
    called on a random upstream gradient G, return one gradient per input, equal to the
    numerical gradient of ``sum(forward(inputs) * G)`` (plain NumPy). ``backward()`` is not
    needed yet.
    """
    cases = _primitive_cases()
    chk = _Check("check_primitives", len(cases))
    rng = _rng(2)
    names = ("a", "b")
    for index, (desc, build, forward, shapes, hints) in enumerate(cases, 1):
        chk.case(index, desc)
        arrays = [rng.standard_normal(s) for s in shapes]
        tensors = [_leaf(chk, Tensor, a) for a in arrays]
        ref_out = np.asarray(forward(*arrays), dtype=np.float64)
        out = chk.call(build, *tensors)
        got_out = _result(chk, out, "the result", ref_out.shape)
        chk.compare("the result's values", got_out, ref_out)
        if out.grad_fn is None:
            chk.fail("the result has no grad_fn, although its inputs require grad: the "
                     "operation recorded nothing. Return from_op(data, inputs, backward, name) "
                     "with the tuple of input tensors and the backward rule.")
        g = rng.standard_normal(ref_out.shape)
        grads = chk.call(out.grad_fn, g.copy(), signature="grad_fn(grad) -> tuple of gradients")
        if not isinstance(grads, (tuple, list)) or len(grads) != len(arrays):
            chk.fail(f"the backward rule returned {_describe(grads)}; expected a tuple of "
                     f"{len(arrays)} gradient{'s' if len(arrays) > 1 else ''}, one per input in "
                     "the order of the inputs (a 1-tuple `(g,)` for one input).")
        alternatives = hints(*arrays, g)
        for i, (array, got) in enumerate(zip(arrays, grads)):
            name = names[i]
            shape_hints = []
            if ref_out.shape != array.shape:
                if "sum" in desc:
                    text = ("the gradient of a sum is the upstream gradient copied to every "
                            "element that was summed: broadcast it back to the input's shape "
                            "(np.expand_dims first where dim was summed away).")
                elif "reshape" in desc:
                    text = "reshape the gradient back to the input's shape."
                else:
                    text = f"the gradient of {name} has the result's shape: " + BROADCAST_HINT
                shape_hints.append((ref_out.shape, text))
            if "@" in desc:
                shape_hints.append((array.shape[::-1], (f"the gradient of {name} is transposed: "
                                    "grad @ b.T for a, a.T @ grad for b.")))
            got = chk.array(got, f"the gradient of {name}", array.shape, shape_hints)
            ref = _numerical(lambda *xs, f=forward, g=g: float(np.sum(f(*xs) * g)), arrays, i)
            chk.compare(f"the gradient of {name}", got, ref, alternatives=alternatives[i])
    chk.passed()


# --------------------------------------------------------------------------------------------
# Exercise 3: backward() and zero_grad()
# --------------------------------------------------------------------------------------------

def _backward(chk: _Check, t, *gradient):
    return chk.call(t.backward, *gradient, signature="t.backward(gradient=None)")


def check_backward(Tensor, zero_grad) -> None:
    """Check ``t.backward(gradient=None)`` (your ``backward``) and ``zero_grad(tensors)``.

    Seven graphs, each against numerical gradients of the same expression in plain NumPy:
    a chain with a broadcast bias and a constant; ``x * x`` (a tensor used twice); a diamond
    (a tensor used by a short and a long branch); two ``backward()`` calls that must add up,
    then ``zero_grad``; ``backward()`` twice on the same graph; ``backward()`` on a tensor of
    several numbers (an error without a gradient, the vector-Jacobian product with one).
    """
    chk = _Check("check_backward", 7)
    rng = _rng(3)

    # 1. a chain, with a broadcast bias and a constant that requires no gradient
    chk.case(1, "((x @ w) * c + b).sum(), x (3, 4), w (4, 2), c (3, 2) a constant, b (2,)")
    xa, wa, ca, ba = (rng.standard_normal(s) for s in [(3, 4), (4, 2), (3, 2), (2,)])
    x, w, b = (_leaf(chk, Tensor, a) for a in (xa, wa, ba))
    c = _leaf(chk, Tensor, ca, requires_grad=False)
    loss = chk.call(lambda: ((x @ w) * c + b).sum())
    _backward(chk, loss)
    f = lambda xx, ww, bb: float(np.sum((xx @ ww) * ca + bb))
    for i, (t, name) in enumerate(((x, "x"), (w, "w"), (b, "b"))):
        got = _grad_of(chk, t, name, t.data.shape, shape_hints=[
            ((3, 2), BROADCAST_HINT)] if name == "b" else (),
            none_hint="a leaf (grad_fn None) that requires grad keeps its gradient in .grad.")
        chk.compare(f"{name}.grad", got, _numerical(f, [xa, wa, ba], i))
    if c.grad is not None:
        chk.fail("c was made with requires_grad=False, yet it got a .grad: only the leaves "
                 "that require grad keep a gradient (operations need no gradient for c).")

    # 2. one tensor used twice
    chk.case(2, "(x * x).sum(): x is both inputs of the multiplication")
    xa = _nonzero_normal(rng, (2, 3))
    x = _leaf(chk, Tensor, xa)
    _backward(chk, chk.call(lambda: (x * x).sum()))
    got = _grad_of(chk, x, "x", xa.shape)
    chk.compare("x.grad", got, numerical_gradient(lambda a: float(np.sum(a * a)), xa.copy()),
                alternatives=[(xa, ACCUMULATE_HINT), (4 * xa, TWICE_HINT)])

    # 3. a diamond: y is used by a short branch (y itself) and a long one (y * b * c)
    chk.case(3, "a diamond: y = x * a; z = y * b * c; (y + z).sum(): y has two consumers, "
                "one of them two operations away")
    xa, aa, ba, ca = (_nonzero_normal(rng, (2, 3)) for _ in range(4))
    x = _leaf(chk, Tensor, xa)
    a, b2, c2 = (_leaf(chk, Tensor, v, requires_grad=False) for v in (aa, ba, ca))

    def diamond():
        y = x * a
        return (y + y * b2 * c2).sum()

    _backward(chk, chk.call(diamond))
    got = _grad_of(chk, x, "x", xa.shape)
    full = aa * (1 + ba * ca)
    early = [(aa, ORDER_HINT), (aa + full, ORDER_HINT + " (Here y's rule ran twice: too early, "
                                                       "then again.)")]
    chk.compare("x.grad", got, numerical_gradient(
        lambda v: float(np.sum(v * aa + v * aa * ba * ca)), xa.copy()),
        alternatives=early + [(k * full, TWICE_HINT) for k in (2, 3, 4)]
        + [(aa * ba * ca, ACCUMULATE_HINT)], fallback_hint=ORDER_HINT)

    # 4. two backward() calls add up; zero_grad resets
    chk.case(4, "two backward() calls on two forward passes of (x * w).sum(), then "
                "zero_grad([x, w]) and a third")
    xa, wa = rng.standard_normal((3,)), rng.standard_normal((3,))
    x, w = _leaf(chk, Tensor, xa), _leaf(chk, Tensor, wa)
    for _ in range(2):
        _backward(chk, chk.call(lambda: (x * w).sum()))
    got = _grad_of(chk, x, "x", xa.shape)
    chk.compare("x.grad after two backward() calls", got, 2 * wa, alternatives=[
        (wa, ("backward() replaced x.grad instead of adding to it: like torch, each call adds "
             "its gradient to .grad (that is why training loops call zero_grad)."))])
    chk.call(zero_grad, [x, w], signature="zero_grad(tensors)")
    if x.grad is not None and np.any(np.asarray(x.grad)):
        chk.fail("after zero_grad([x, w]), x.grad still holds the old gradient: the gradients "
                 "were not reset between two backward() calls. Set each tensor's .grad to None "
                 "(assigning to the loop variable itself changes nothing).")
    _backward(chk, chk.call(lambda: (x * w).sum()))
    got = _grad_of(chk, x, "x", xa.shape)
    chk.compare("x.grad after zero_grad and one more backward()", got, wa, alternatives=[
        (3 * wa, ("zero_grad did not reset the gradients between two backward() calls: set each "
                 "tensor's .grad to None."))])

    # 5. the same graph, backward twice
    chk.case(5, "loss = ((x * w) * c).sum(); loss.backward() twice on the same graph")
    xa, wa, ca = (rng.standard_normal((4,)) for _ in range(3))
    x, w = _leaf(chk, Tensor, xa), _leaf(chk, Tensor, wa)
    c = _leaf(chk, Tensor, ca, requires_grad=False)
    loss = chk.call(lambda: ((x * w) * c).sum())
    _backward(chk, loss)
    _backward(chk, loss)
    got = _grad_of(chk, x, "x", xa.shape)
    leftovers = ("the gradients of the intermediate tensors were not reset between two "
                 "backward() calls: the second call started from the first one's leftovers. "
                 "Keep the gradients of non-leaf tensors in a dict that each call of backward() "
                 "makes afresh.")
    chk.compare("x.grad after two backward() calls", got, 2 * wa * ca, alternatives=[
        (wa * ca, ("backward() replaced x.grad instead of adding to it: like torch, each call "
                   "adds its gradient to .grad.")),
        *[(k * wa * ca, leftovers) for k in (3, 4, 5, 6)]],
        fallback_hint=leftovers, fallback_first=True)

    # 6. a tensor of several numbers: an error without a seed, the VJP with one
    chk.case(6, "y = x * w of shape (2, 3): y.backward() without a gradient, then "
                "y.backward(G)")
    xa, wa, ga = (rng.standard_normal((2, 3)) for _ in range(3))
    x, w = _leaf(chk, Tensor, xa), _leaf(chk, Tensor, wa)
    y = chk.call(lambda: x * w)
    raised = None
    try:
        y.backward()
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 (any error is right: no gradient to start from)
        raised = exc
    if raised is None:
        chk.fail("y.backward() on a tensor of shape (2, 3), with no gradient to start from, "
                 "ran without an error.", f"Likely bug: {SEED_HINT}")
    chk.call(zero_grad, [x, w], signature="zero_grad(tensors)")
    _backward(chk, y, ga.copy())
    got = _grad_of(chk, x, "x", xa.shape)
    chk.compare("x.grad after y.backward(G)", got, ga * wa, alternatives=[
        (wa, ("the gradient passed to backward(G) was ignored (the start was all ones): start "
             "from the given gradient."))])

    # 7. a scalar starts from 1, in the tensor's dtype
    chk.case(7, "(x * 3.0).sum().backward() in float32")
    xa = rng.standard_normal((2, 2)).astype(np.float32)
    x = _leaf(chk, Tensor, xa)
    _backward(chk, chk.call(lambda: (x * 3.0).sum()))
    got = _grad_of(chk, x, "x", xa.shape)
    chk.compare("x.grad", got, np.full((2, 2), 3.0, dtype=np.float32))
    chk.passed()


# --------------------------------------------------------------------------------------------
# Exercise 4: the layer operations
# --------------------------------------------------------------------------------------------

def check_layer_ops(Tensor, linear, relu, conv2d, max_pool2d, cross_entropy) -> None:
    """Check the layer operations, whose backward rules are your layer backward passes:
    ``linear(x, w, b)``, ``relu(x)``, ``conv2d(x, w, b, stride, padding)``,
    ``max_pool2d(x, kernel_size, stride)`` and ``cross_entropy(logits, y)``.

    Each result is compared with torch.nn.functional, and the gradients that ``backward()``
    leaves in the inputs' ``.grad`` (of ``sum(out * G)``, or of ``3 * loss``) with torch's
    autograd (float64).
    """
    chk = _Check("check_layer_ops", 6)
    rng = _rng(4)
    order_hint = ("the rule must return the gradients in the order of the op's inputs, "
                  "(dx, dw, db), as your *_backward returns them.")

    def run(index, desc, op, arrays, names, ref_out, ref_grads, extra=(), alternatives=None):
        chk.case(index, desc)
        tensors = [_leaf(chk, Tensor, a) for a in arrays]
        out = chk.call(op, *tensors, *extra)
        hints = []
        if op is conv2d and extra:   # the shape without stride and padding
            (n, _, h, w), (f, _, kh, kw) = arrays[0].shape, arrays[1].shape
            hints.append(((n, f, h - kh + 1, w - kw + 1), ("stride and padding were not passed "
                          "on to your conv2d_forward.")))
        got = _result(chk, out, "the result", ref_out.shape, hints)
        chk.compare("the result's values", got, ref_out, fallback_hint=(
            "did you pass stride and padding on to your conv2d_forward?" if op is conv2d
            else None))
        if out.grad_fn is None:
            chk.fail("the result has no grad_fn, although its inputs require grad: the "
                     "operation recorded nothing. Return from_op(out, inputs, backward, name).")
        g = rng.standard_normal(ref_out.shape)
        _backward(chk, chk.call(lambda: (out * g).sum()))
        for t, name, a, ref in zip(tensors, names, arrays, ref_grads(g)):
            others = [(b.shape, order_hint) for b in arrays if b.shape != a.shape]
            gotg = _grad_of(chk, t, name, a.shape, others, none_hint=(
                f"the op must list {name} among its inputs, and its rule return a gradient "
                "for it."))
            chk.compare(f"{name}.grad", gotg, ref, alternatives=(alternatives or {}).get(name, ()))

    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    run(1, "linear(x, w, b), x (4, 5), w (5, 3), b (3,)", linear, [x, w, b], "xwb",
        _oracle.linear(x, w, b), lambda g, x=x, w=w, b=b: _oracle.linear_grads(x, w, b, g))
    x = _nonzero_normal(rng, (3, 4, 2))
    run(2, "relu(x), x (3, 4, 2)", relu, [x], "x", _oracle.relu(x),
        lambda g, x=x: (_oracle.relu_grad(x, g),))
    x, w, b = (rng.standard_normal(s) for s in [(2, 3, 7, 7), (4, 3, 3, 3), (4,)])
    run(3, "conv2d(x, w, b), x (2, 3, 7, 7), w (4, 3, 3, 3)", conv2d, [x, w, b], "xwb",
        _oracle.conv2d(x, w, b, 1, 0), lambda g, x=x, w=w, b=b: _oracle.conv2d_grads(
            x, w, b, 1, 0, g))
    x, w, b = (rng.standard_normal(s) for s in [(2, 2, 8, 8), (3, 2, 3, 3), (3,)])
    run(4, "conv2d(x, w, b, stride=2, padding=1), x (2, 2, 8, 8), w (3, 2, 3, 3)", conv2d,
        [x, w, b], "xwb", _oracle.conv2d(x, w, b, 2, 1),
        lambda g, x=x, w=w, b=b: _oracle.conv2d_grads(x, w, b, 2, 1, g), extra=(2, 1))
    x = rng.standard_normal((2, 3, 6, 6))
    run(5, "max_pool2d(x, 2, 2), x (2, 3, 6, 6)", max_pool2d, [x], "x",
        _oracle.maxpool2d(x, 2, 2), lambda g, x=x: (_oracle.maxpool2d_grad(x, 2, 2, g),),
        extra=(2, 2))

    chk.case(6, "3 * cross_entropy(logits, y), logits (5, 4): the upstream gradient is 3")
    logits = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    ref_loss, ref_dlogits = _oracle.softmax_cross_entropy(logits, y)
    t = _leaf(chk, Tensor, logits)
    loss = chk.call(cross_entropy, t, y.copy(), signature="cross_entropy(logits, y) -> Tensor")
    if not _is_tensor(loss):
        chk.fail(f"cross_entropy returned {_describe(loss)}, not a Tensor: return "
                 "from_op(loss, (logits,), backward, name); the loss is a tensor of one number.")
    value = chk.scalar(loss.data, "the loss")
    chk.compare("the loss", value, np.asarray(ref_loss))
    _backward(chk, chk.call(lambda: loss * 3.0))
    got = _grad_of(chk, t, "logits", logits.shape)
    chk.compare("logits.grad", got, 3 * ref_dlogits, alternatives=[
        (ref_dlogits, ("the backward rule ignored the upstream gradient (here 3): return "
                      "grad * dlogits, the chain rule, not dlogits alone."))])
    chk.passed()


# --------------------------------------------------------------------------------------------
# Exercise 5: the course CNN on your engine
# --------------------------------------------------------------------------------------------

def check_engine_forward(Tensor, engine_forward, cross_entropy) -> None:
    """Check ``engine_forward(params, x) -> logits Tensor``: the course CNN with your layer
    operations, and the gradients that ``backward()`` then gives every parameter.

    Two cases, float64, random weights and images: the logits, the loss of
    ``cross_entropy(logits, y)`` and the ten parameters' gradients are compared with torch's
    autograd on the same network (``mnist_course._oracle``).
    """
    chk = _Check("check_engine_forward", 2)
    for case, n in ((1, 3), (2, 2)):
        chk.case(case, f"{n} random images, random weights (seed {case}), float64", n=n)
        params = _oracle.init_cnn_params(seed=case)
        rng = _rng(10 + case)
        x = rng.standard_normal((n, 1, 28, 28))
        y = rng.integers(0, 10, n)
        tparams = {k: _leaf(chk, Tensor, v) for k, v in params.items()}
        logits = chk.call(engine_forward, tparams, x.copy(),
                          signature="engine_forward(params, x) -> logits Tensor")
        if _is_tensor(logits) and np.shape(logits.data) != (n, 10):
            chk.fail(f"{n} images gave logits of shape {np.shape(logits.data)}, expected "
                     f"({n}, 10).", "Print h.shape after each operation and compare with 26, "
                                    "13, 11, 5, 3 and 576: is a pooling missing or doubled?")
        got = _result(chk, logits, "the logits", (n, 10))
        ref = _oracle.cnn_logits(params, x)
        alternatives = [(lambda v=v, p=params, x=x: _oracle.cnn_logits(p, x, **v), text) for v, text in [
            ({"flatten": "hwc"}, ("the flatten order is (H, W, C): reshape the (N, C, H, W) "
                                 "tensor directly, no transpose.")),
            ({"relu_logits": True}, ("there is a ReLU after fc2: the logits must be able to be "
                                    "negative.")),
            *[({"relus": tuple(r for r in _oracle.CNN_RELUS if r != gone)},
               f"the ReLU after {gone} is missing.") for gone in _oracle.CNN_RELUS]]]
        chk.compare("the logits", got, ref, alternatives=alternatives, fallback_hint=(
            "check the order conv → ReLU → pool (pool after conv1 and conv2 only), the biases "
            "and linear's weights of shape (D_in, D_out)."))
        if logits.grad_fn is None:
            chk.fail("the logits have no grad_fn: they are not connected to the parameters. "
                     "Use your operations only (no .data arithmetic) between x and the logits.")
        loss = chk.call(cross_entropy, logits, y.copy())
        ref_loss, ref_grads = _oracle.cnn_loss_and_grads(params, x, y)
        chk.compare("the loss", chk.scalar(loss.data, "the loss"), np.asarray(ref_loss))
        _backward(chk, loss)
        for k in _oracle.CNN_KEYS:
            got = _grad_of(chk, tparams[k], f'params["{k}"]', params[k].shape, none_hint=(
                f"backward() never reached {k}: pass params[\"{k}\"] itself (the Tensor) to "
                "the operation, not its .data or a copy."))
            chk.compare(f'params["{k}"].grad', got, ref_grads[k])
    chk.passed(detail="gradients equal torch.autograd's")
