"""Checks of lesson 01: ReLU, linear, softmax cross-entropy, the numerical gradient."""

from __future__ import annotations

import numpy as np

from mnist_course import _oracle
from mnist_course.checks._core import _Check, _fmt_shape, _nonzero_normal, _rng

# --------------------------------------------------------------------------------------------
# ReLU, linear, softmax cross-entropy, numerical gradient (lesson 01)
# --------------------------------------------------------------------------------------------

def check_relu(fwd, bwd) -> None:
    """Check ``relu_forward(x) -> (out, cache)`` and ``relu_backward(dout, cache) -> dx``.

    The last case has exact zeros in x: there the gradient is 0, torch's convention (x > 0).
    """
    cases = [((4, 5), False), ((2, 3, 4, 4), False), ((1, 7), False), ((3, 6), True)]
    chk = _Check("check_relu", len(cases))
    rng = _rng(1)
    for i, (shape, zeros) in enumerate(cases, 1):
        x = _nonzero_normal(rng, shape)
        if zeros:
            x[rng.random(shape) < 0.4] = 0.0
        chk.case(i, f"x {_fmt_shape(shape)}"
                    + (f", with {int(np.sum(x == 0))} exact zeros" if zeros else ""))
        x_before = x.copy()
        res = chk.call(fwd, x, signature="relu_forward(x) -> (out, cache)")
        out, cache = chk.unpack(res, ("out", "cache"), "relu_forward")
        chk.unchanged(x_before, x, "relu_forward changed its input x in place (e.g. x[x < 0] = 0): "
                                   "compute the output on a copy, e.g. np.maximum(0, x).")
        out = chk.array(out, "out", shape)
        chk.compare("out", out, _oracle.relu(x), alternatives=[
            (x, "out equals x: negative inputs must become 0 (np.maximum(0, x))."),
            (np.abs(x), "out is |x|: negative inputs must become 0, not positive."),
            (np.minimum(0, x), "out keeps the negative part: use np.maximum(0, x)."),
        ])
        dout = rng.standard_normal(shape)
        dout_before = dout.copy()
        dx = chk.call(bwd, dout, cache, signature="relu_backward(dout, cache) -> dx")
        chk.unchanged(dout_before, dout,
                      "relu_backward changed dout in place (e.g. dout[x <= 0] = 0): compute "
                      "dx = dout * (x > 0), or copy dout first.")
        dx = chk.array(dx, "dx", shape)
        chk.compare("dx", dx, _oracle.relu_grad(x, dout), alternatives=[
            (dout, ("dx equals dout everywhere: the gradient must be 0 where x <= 0 "
                   "(dx = dout * (x > 0)).")),
            (dout * (x < 0), ("the mask is reversed: the gradient passes where x > 0 "
                             "(dx = dout * (x > 0)).")),
            (dout * np.maximum(0, x), ("dx = dout * relu(x): multiply by the mask (x > 0), "
                                      "not by the activation.")),
            (np.maximum(0, dout), ("dx = relu(dout): mask with the input x (x > 0), not with "
                                  "the sign of dout.")),
            (dout * (x >= 0), ("the gradient passes at x == 0: use the mask (x > 0), not "
                              "(x >= 0). ReLU has no slope at 0; the convention (torch's, and "
                              "this course's) is a gradient of 0 there.")),
        ])
    chk.passed()


def check_linear(fwd, bwd) -> None:
    """Check ``linear_forward(x, w, b) -> (out, cache)``, w of shape (D_in, D_out), and
    ``linear_backward(dout, cache) -> (dx, dw, db)``."""
    cases = [(4, 5, 3), (1, 7, 2), (6, 4, 4), (3, 10, 6)]
    chk = _Check("check_linear", len(cases))
    rng = _rng(2)
    for i, (n, d_in, d_out) in enumerate(cases, 1):
        chk.case(i, f"x ({n}, {d_in}), w ({d_in}, {d_out}), b ({d_out},)", n)
        x = rng.standard_normal((n, d_in))
        w = rng.standard_normal((d_in, d_out))
        b = rng.standard_normal(d_out)
        res = chk.call(fwd, x, w, b, signature="linear_forward(x, w, b) -> (out, cache)")
        out, cache = chk.unpack(res, ("out", "cache"), "linear_forward")
        out = chk.array(out, "out", (n, d_out))
        chk.compare("out", out, _oracle.linear(x, w, b), alternatives=[
            (x @ w, "the bias b was not added (out = x @ w + b)."),
        ] + ([(x @ w.T + b, ("w is used transposed: w has shape (D_in, D_out), so "
                            "out = x @ w + b."))] if d_in == d_out else []))
        dout = rng.standard_normal((n, d_out))
        res = chk.call(bwd, dout, cache, signature="linear_backward(dout, cache) -> (dx, dw, db)")
        dx, dw, db = chk.unpack(res, ("dx", "dw", "db"), "linear_backward")
        rdx, rdw, rdb = _oracle.linear_grads(x, w, b, dout)
        dx = chk.array(dx, "dx", (n, d_in), shape_hints=[
            ((n, d_out), "dx has the shape of dout: dx = dout @ w.T has the shape of x.")])
        chk.compare("dx", dx, rdx)
        dw = chk.array(dw, "dw", (d_in, d_out), shape_hints=[
            ((d_out, d_in), ("dw is transposed: dw = x.T @ dout has the shape of w "
                            "(D_in, D_out)."))])
        chk.compare("dw", dw, rdw, alternatives=[
            (rdw.T, "dw is transposed: dw = x.T @ dout has the shape of w (D_in, D_out)."),
        ])
        db = chk.array(db, "db", (d_out,), shape_hints=[
            ((n, d_out), ("db has one row per sample: sum dout over the batch "
                         "(db = dout.sum(axis=0)).")),
            ((1, d_out), ("db has shape (1, D_out): use dout.sum(axis=0) without keepdims, so "
                         "that db has the shape of b.")),
            ((n,), "db was summed over the wrong axis: db = dout.sum(axis=0)."),
        ])
        chk.compare("db", db, rdb)
    chk.passed()


_OVERFLOW_HINT = ("inf/nan for large logits: subtract the max before exp "
                  "(z = logits - logits.max(axis=1, keepdims=True)).")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_softmax_cross_entropy(fn) -> None:
    """Check ``softmax_cross_entropy(logits, y) -> (loss, dlogits)``: mean loss over the batch,
    integer labels y, stable for logits of +-1e4."""
    rng = _rng(3)
    big = rng.choice([-1e4, 1e4], size=(4, 6)) + rng.standard_normal((4, 6))
    cases = [
        ("logits (4, 5)", rng.standard_normal((4, 5)), False),
        ("logits (3, 10), values up to about +-10", 3 * rng.standard_normal((3, 10)), False),
        ("logits (1, 3), a batch of one", rng.standard_normal((1, 3)), False),
        ("logits (2, 4), all equal", np.zeros((2, 4)), False),
        ("logits (4, 6) of size +-1e4", big, True),
        ("logits (3, 4) all near +1e4", 1e4 + rng.standard_normal((3, 4)), True),
    ]
    chk = _Check("check_softmax_cross_entropy", len(cases))
    for i, (desc, logits, large) in enumerate(cases, 1):
        n, k = logits.shape
        y = rng.integers(0, k, size=n).astype(np.int64)
        chk.case(i, f"{desc}, y {y.tolist()}", n)
        before = logits.copy()
        res = chk.call(fn, logits, y,
                       signature="softmax_cross_entropy(logits, y) -> (loss, dlogits)")
        loss, dlogits = chk.unpack(res, ("loss", "dlogits"), "softmax_cross_entropy")
        chk.unchanged(before, logits, "softmax_cross_entropy changed logits in place (e.g. "
                                      "logits -= logits.max(...)): work on a copy.")
        ref_loss, ref_d = _oracle.softmax_cross_entropy(logits, y)
        large_hint = ("the loss is wrong only for large logits: compute the log-softmax as "
                      "z - log(sum(exp(z))) with z = logits - max, not as np.log(softmax) "
                      "(softmax underflows to 0, and clipping it changes the loss)."
                      if large else None)
        loss = chk.scalar(loss, "loss")
        chk.compare("loss", loss, ref_loss, nonfinite_hint=_OVERFLOW_HINT if large else None,
                    fallback_hint=large_hint, fallback_first=large)
        dlogits = chk.array(dlogits, "dlogits", (n, k))
        p = _softmax(logits)
        onehot = np.eye(k)[y]
        chk.compare("dlogits", dlogits, ref_d,
                    nonfinite_hint=_OVERFLOW_HINT if large else None,
                    alternatives=[
                        (p - onehot, (f"dlogits is {n} times too large (N = {n}): divide it by "
                                     f"N, because the loss is a mean.")),
                        (p / n, ("dlogits is the softmax alone: subtract 1 at the true class, "
                                "dlogits = (softmax - one_hot(y)) / N.")),
                        (p, ("dlogits is the softmax alone: subtract 1 at the true class, "
                            "dlogits = (softmax - one_hot(y)) / N.")),
                    ] if n > 1 else [
                        (p, ("dlogits is the softmax alone: subtract 1 at the true class, "
                            "dlogits = (softmax - one_hot(y)) / N.")),
                    ])
    chk.passed()


def _ng_function(a: np.ndarray):
    """f(x) = sum(a * exp(x)) + sum(x)**2 / 4 and its exact gradient."""
    def f(x):
        x = np.asarray(x, dtype=np.float64)
        return float(np.sum(a * np.exp(x)) + np.sum(x) ** 2 / 4)

    def grad(x):
        return a * np.exp(x) + np.sum(x) / 2
    return f, grad


def _one_sided(f, x: np.ndarray, h: float, sign: int) -> np.ndarray:
    """Forward (sign=+1) or backward (sign=-1) differences, on a copy of x."""
    x = x.copy()
    f0 = f(x)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + sign * h
        g[i] = sign * (f(x) - f0) / h
        x[i] = old
    return g


def _reads_from_outside(f, x: np.ndarray):
    """A function that ignores its argument and returns f(x) for the array x itself."""
    def reads_x(_ignored):
        return f(x)
    return reads_x


_COPY_HINT = ("grad is all zeros for an f that reads x from outside (through a closure, as a "
              "loss reads a network's parameters) instead of from its argument: you perturb a "
              "copy of x. Change x itself in place (x[i] = old + h, evaluate f, then restore "
              "x[i] = old). In lesson 01's gradient check f reads the weights of the network, "
              "so with a copy every numerical gradient is 0 and the check blames your "
              "(correct) backprop.")


def check_numerical_gradient(fn) -> None:
    """Check ``numerical_gradient(f, x, h=1e-5)``: central differences that perturb x in place
    and restore it.

    The last case passes an f that ignores its argument and reads x through a closure, the way
    a loss reads a network's parameters: only perturbing x itself moves that f.
    """
    # (shape, h, f reads x through a closure)
    cases = [((3, 4), None, False), ((2, 3, 2), None, False), ((5,), None, False),
             ((2, 2), 1e-4, False), ((2, 3), None, True)]
    chk = _Check("check_numerical_gradient", len(cases))
    rng = _rng(4)
    for i, (shape, h, closure) in enumerate(cases, 1):
        hdesc = "default h" if h is None else f"h={h:g}"
        a = rng.uniform(1.0, 2.0, size=shape)
        x = rng.uniform(0.1, 1.0, size=shape)
        f_plain, grad = _ng_function(a)
        f = _reads_from_outside(f_plain, x) if closure else f_plain
        desc = f"x {_fmt_shape(shape)}, f(x) = sum(a * exp(x)) + sum(x)**2 / 4, {hdesc}"
        if closure:
            desc += (", and f ignores its argument: it reads x from outside (as a loss reads "
                     "a network's parameters)")
        chk.case(i, desc)
        before = x.copy()
        kwargs = {} if h is None else {"h": h}
        g = chk.call(fn, f, x, signature="numerical_gradient(f, x, h=1e-5)", **kwargs)
        moved = float(np.max(np.abs(x - before)))
        if moved > 1e-10:
            chk.fail(f"numerical_gradient did not restore x: after the call x differs from "
                     f"before by up to {moved:.1e}.",
                     "Likely bug: after evaluating f at x[i] + h and x[i] - h, put the old value "
                     "back (x[i] = old) before moving on to the next element.")
        g = chk.array(g, "grad", shape, shape_hints=[
            ((x.size,), ("grad is flattened: return an array with the shape of x "
                        "(np.zeros_like(x)).")),
        ])
        hh = 1e-5 if h is None else h
        alternatives = [(np.zeros(shape), _COPY_HINT)] if closure else []
        chk.compare("grad", g, grad(x), alternatives=alternatives + [
            (_one_sided(f_plain, x, hh, +1), ("one-sided differences: use the central "
             "difference (f(x + h) - f(x - h)) / (2 * h).")),
            (_one_sided(f_plain, x, hh, -1), ("one-sided differences: use the central "
             "difference (f(x + h) - f(x - h)) / (2 * h).")),
            (2 * grad(x), "grad is twice too large: divide by 2 * h, not by h."),
            (grad(x) / 2, ("grad is half the true value: divide by 2 * h, "
                                  "i.e. (f(x + h) - f(x - h)) / (2 * h).")),
        ])
    chk.passed()
