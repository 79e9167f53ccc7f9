"""Check functions that the lesson exercises call.

Each ``check_*`` runs your function on several small cases and compares it with an independent
answer: ``torch.nn.functional`` with autograd (see ``mnist_course._oracle``), closed-form
formulas, or direct inspection. It never uses the course's own NumPy layers, so a bug there cannot
hide a bug in yours.

On success a check prints one line, e.g. ``✓ check_conv2d_forward: 6 cases, max rel. error
3.1e-12``. On failure it raises ``AssertionError`` that names the case (shapes, stride, pad),
shows how large the error is and, when the symptom is a typical one, suggests the likely bug.

Lesson 01: check_relu, check_linear, check_softmax_cross_entropy, check_numerical_gradient.
Lesson 02: check_conv2d_forward, check_conv2d_backward, check_maxpool2d.
Lesson 03: check_cnn_loss_and_grads.
Lesson 00: check_one_hot, check_train_val_split. Lesson 06: check_step_decay, check_random_shift.

Inputs are float64, so the tolerance is tight (relative error 1e-7). Results in float32 are
accepted with a looser tolerance (1e-3, measured against the largest value). The relative error
of one element is ``|a - b| / max(1e-8, |a| + |b|)``.
"""

from __future__ import annotations

import warnings

import numpy as np

from mnist_course import _oracle

__all__ = [
    "check_cnn_loss_and_grads",
    "check_conv2d_backward",
    "check_conv2d_forward",
    "check_linear",
    "check_maxpool2d",
    "check_numerical_gradient",
    "check_one_hot",
    "check_random_shift",
    "check_relu",
    "check_softmax_cross_entropy",
    "check_step_decay",
    "check_train_val_split",
]

TOL_FLOAT64 = 1e-7
TOL_FLOAT32 = 1e-3


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------

def _describe(value) -> str:
    """A short description of what a function returned, for error messages."""
    if value is None:
        return "None (a missing `return`?)"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} values"
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return f"a torch.Tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _rel_error(got: np.ndarray, ref: np.ndarray, low_precision: bool = False) -> float:
    """Largest elementwise |got - ref| / max(floor, |got| + |ref|).

    The floor is 1e-8; for float32 results it is raised to 1% of the largest reference value, so
    that rounding noise on elements near zero does not count as an error.
    """
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.size == 0:
        return 0.0
    floor = 1e-8
    if low_precision:
        floor = max(floor, 1e-2 * float(np.max(np.abs(ref))))
    scale = np.maximum(floor, np.abs(got) + np.abs(ref))
    return float(np.max(np.abs(got - ref) / scale))


def _fmt_shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _scale_hint(got: np.ndarray, ref: np.ndarray, n: int | None, what: str, tol: float):
    """Recognise got = k * ref (batch-size factors, sign, factor 2) and got = ref.T."""
    ref_norm = float(np.sum(ref * ref))
    if ref_norm > 0 and got.shape == ref.shape:
        k = float(np.sum(got * ref)) / ref_norm
        if abs(k - 1) > 1e-3 and _rel_error(got, k * ref) < tol:
            if n and n > 1 and np.isclose(k, n, rtol=1e-3):
                return (f"{what} is {n} times too large (N = {n}): a sum over the batch instead "
                        f"of the mean? Divide by N.")
            if n and n > 1 and np.isclose(k, 1 / n, rtol=1e-3):
                return (f"{what} is {n} times too small (N = {n}): divided by N twice, or "
                        f"averaged where a sum was needed?")
            if np.isclose(k, -1, rtol=1e-3):
                return f"{what} has the wrong sign."
            if np.isclose(k, 0, atol=1e-12):
                return f"{what} is all zeros."
            return f"{what} is the expected value times {k:.4g}: a wrong constant factor?"
    if got.ndim == 2 and got.shape == ref.T.shape and _rel_error(got, ref.T) < tol:
        return f"{what} is transposed."
    if not np.any(got) and np.any(ref):
        return f"{what} is all zeros."
    return None


class _Check:
    """Runs one check: tracks the case, calls the learner's code, compares, reports."""

    def __init__(self, name: str, total: int):
        self.name = name
        self.total = total
        self.index = 0
        self.desc = ""
        self.n = None
        self.max_err = 0.0
        self.low_precision = False

    # -- reporting ---------------------------------------------------------------------------
    def case(self, index: int, desc: str, n: int | None = None) -> None:
        self.index, self.desc, self.n = index, desc, n

    def header(self) -> str:
        if self.desc:
            return f"{self.name}: case {self.index} of {self.total} failed: {self.desc}"
        return f"{self.name} failed"

    def fail(self, *lines) -> None:
        __tracebackhide__ = True
        body = [line for line in lines if line]
        raise AssertionError("\n  ".join([self.header(), *body]))

    def passed(self, cases: int | None = None, show_error: bool = True) -> None:
        cases = self.total if cases is None else cases
        line = f"✓ {self.name}: {cases} case{'s' if cases != 1 else ''}"
        if show_error:
            line += f", max rel. error {self.max_err:.1e}"
            if self.low_precision:
                line += " (float32 results)"
        print(line)

    # -- calling the learner's code ------------------------------------------------------------
    def call(self, fn, *args, signature: str = "", **kwargs):
        """Call fn; NotImplementedError passes through, other errors gain the case description."""
        __tracebackhide__ = True
        name = getattr(fn, "__name__", "your function")
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as exc:  # the learner's error, reported with the case it failed on
            lines = [f"{name} raised {type(exc).__name__}: {exc}"]
            if isinstance(exc, TypeError) and signature:
                lines.append(f"The expected signature is {signature}.")
            raise AssertionError("\n  ".join([self.header(), *lines])) from exc

    def unpack(self, result, names: tuple, fname: str) -> tuple:
        """Check that result is a tuple/list with one value per name."""
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            self.fail(f"{fname} should return a tuple ({', '.join(names)}); "
                      f"it returned {_describe(result)}.")
        return tuple(result)

    def array(self, value, what: str, shape: tuple, shape_hints=()) -> np.ndarray:
        """Check that value is a float NumPy array of the given shape; return it."""
        if value is None:
            self.fail(f"{what} is None: a missing `return`?")
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            self.fail(f"{what} is a torch.Tensor; this exercise expects a NumPy array.")
        if isinstance(value, (tuple, list)):
            self.fail(f"{what} should be a NumPy array of shape {_fmt_shape(shape)}; "
                      f"got {_describe(value)}.")
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            self.fail(f"{what} has dtype {arr.dtype}; expected floating point numbers "
                      f"(float64, or float32).")
        if arr.shape != tuple(shape):
            hint = None
            for bad_shape, text in shape_hints:
                if arr.shape == tuple(bad_shape):
                    hint = text
                    break
            self.fail(f"{what} has shape {_fmt_shape(arr.shape)}; expected {_fmt_shape(shape)}.",
                      f"Likely bug: {hint}" if hint else None)
        return arr

    def scalar(self, value, what: str) -> np.ndarray:
        """Check that value is one number (float, NumPy scalar, or size-1 array)."""
        if value is None:
            self.fail(f"{what} is None: a missing `return`?")
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            self.fail(f"{what} is a torch.Tensor; this exercise expects a NumPy number.")
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):  # an object NumPy cannot read
            arr = np.asarray(None)
        if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
            self.fail(f"{what} should be a number; got {_describe(value)}.")
        if arr.size != 1:
            hint = None
            if self.n and arr.shape == (self.n,):
                hint = (f"{what} has one value per sample: return their mean over the batch, "
                        f"a single number.")
            self.fail(f"{what} should be a single number; got shape {_fmt_shape(arr.shape)}.",
                      f"Likely bug: {hint}" if hint else None)
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float64)
        return arr.reshape(())

    def compare(self, what: str, got: np.ndarray, ref: np.ndarray, alternatives=(),
                nonfinite_hint: str | None = None, fallback_hint: str | None = None,
                fallback_first: bool = False) -> float:
        """Compare got with ref; on failure try to name the bug.

        alternatives: (array or zero-argument callable, hint) pairs; when got matches one of
        those arrays, its hint is given as the likely bug. Otherwise a scale factor (N times too
        large, wrong sign, transposed) is looked for, then fallback_hint is used
        (fallback_first: before the scale factor).
        """
        __tracebackhide__ = True
        low = got.dtype != np.float64
        tol = TOL_FLOAT32 if low else TOL_FLOAT64
        got64 = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if not np.all(np.isfinite(got64)):
            bad = int(np.size(got64) - np.count_nonzero(np.isfinite(got64)))
            self.fail(f"{what} contains inf or nan ({bad} of {got64.size} values).",
                      f"Likely bug: {nonfinite_hint}" if nonfinite_hint else None)
        err = _rel_error(got64, ref, low)
        if err <= tol:
            self.max_err = max(self.max_err, err)
            self.low_precision |= low
            return err
        if got64.ndim == 0:
            where = f"got {float(got64):.8g}, expected {float(ref):.8g}"
        else:
            idx = np.unravel_index(int(np.argmax(np.abs(got64 - ref))), ref.shape)
            idx = tuple(int(i) for i in idx)
            where = (f"largest difference at index {idx}: got {got64[idx]:.6g}, "
                     f"expected {ref[idx]:.6g}")
        hint = None
        match_tol = 10 * tol if low else 1e-6
        for alt, text in alternatives:
            alt = np.asarray(alt() if callable(alt) else alt, dtype=np.float64)
            if alt.shape == got64.shape and np.all(np.isfinite(alt)) \
                    and _rel_error(got64, alt, low) < match_tol:
                hint = text
                break
        if hint is None and fallback_first:
            hint = fallback_hint
        if hint is None:
            hint = _scale_hint(got64, ref, self.n, what, match_tol)
        if hint is None:
            hint = fallback_hint
        self.fail(f"{what}: max rel. error {err:.1e} (tolerance {tol:.0e}); {where}.",
                  f"Likely bug: {hint}" if hint else None)
        return err

    def unchanged(self, before: np.ndarray, after: np.ndarray, message: str) -> None:
        if not np.array_equal(before, after, equal_nan=True):
            self.fail(message)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _nonzero_normal(rng, shape) -> np.ndarray:
    """Standard normal values kept away from 0 (so that ReLU's kink is never hit)."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 1e-3, 0.5, x)


# --------------------------------------------------------------------------------------------
# ReLU, linear, softmax cross-entropy, numerical gradient (lesson 01)
# --------------------------------------------------------------------------------------------

def check_relu(fwd, bwd) -> None:
    """Check ``relu_forward(x) -> (out, cache)`` and ``relu_backward(dout, cache) -> dx``."""
    shapes = [(4, 5), (2, 3, 4, 4), (1, 7)]
    chk = _Check("check_relu", len(shapes))
    rng = _rng(1)
    for i, shape in enumerate(shapes, 1):
        chk.case(i, f"x {_fmt_shape(shape)}")
        x = _nonzero_normal(rng, shape)
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


def check_numerical_gradient(fn) -> None:
    """Check ``numerical_gradient(f, x, h=1e-5)``: central differences that restore x."""
    cases = [((3, 4), None), ((2, 3, 2), None), ((5,), None), ((2, 2), 1e-4)]
    chk = _Check("check_numerical_gradient", len(cases))
    rng = _rng(4)
    for i, (shape, h) in enumerate(cases, 1):
        hdesc = "default h" if h is None else f"h={h:g}"
        chk.case(i, f"x {_fmt_shape(shape)}, f(x) = sum(a * exp(x)) + sum(x)**2 / 4, {hdesc}")
        a = rng.uniform(1.0, 2.0, size=shape)
        x = rng.uniform(0.1, 1.0, size=shape)
        f, grad = _ng_function(a)
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
        chk.compare("grad", g, grad(x), alternatives=[
            (_one_sided(f, x, hh, +1), ("one-sided differences: use the central "
             "difference (f(x + h) - f(x - h)) / (2 * h).")),
            (_one_sided(f, x, hh, -1), ("one-sided differences: use the central "
             "difference (f(x + h) - f(x - h)) / (2 * h).")),
            (2 * grad(x), "grad is twice too large: divide by 2 * h, not by h."),
            (grad(x) / 2, ("grad is half the true value: divide by 2 * h, "
                                  "i.e. (f(x + h) - f(x - h)) / (2 * h).")),
        ])
    chk.passed()


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
    ]
    try:
        out = chk.array(out, what, (n, f, ho, wo),
                        shape_hints=_conv_shape_hints(x.shape, w.shape, stride, pad))
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
                       signature="conv2d_forward(x, w, b, stride=1, pad=0) -> (out, cache)")
        out, _cache = chk.unpack(res, ("out", "cache"), "conv2d_forward")
        for name, before, now in zip("xwb", copies, (x, w, b)):
            chk.unchanged(before, now, f"conv2d_forward changed its input {name} in place.")
        _check_conv_output(chk, out, x, w, b, stride, pad, _oracle.conv2d(x, w, b, stride, pad))
    chk.passed()


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
                       signature="conv2d_backward(dout, cache) -> (dx, dw, db)")
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
        chk.compare("dx", dx, rdx, alternatives=[
            (_oracle.conv2d_grads(x, w[:, :, ::-1, ::-1], b, stride, pad, dout)[0],
             "dx is what a flipped kernel gives: use w as it is (cross-correlation)."),
        ])
        dw = chk.array(dw, "dw", ws)
        chk.compare("dw", dw, rdw, alternatives=[
            (rdw[:, :, ::-1, ::-1], ("dw is flipped: dw[f, c, i, j] = sum over n and output "
                                    "positions of dout * x_window[c, i, j].")),
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


# --------------------------------------------------------------------------------------------
# Data helpers (lesson 00) and experiments (lesson 06)
# --------------------------------------------------------------------------------------------

def check_one_hot(fn) -> None:
    """Check ``one_hot(y, num_classes=10) -> float32 array (N, num_classes)``."""
    cases = [
        (np.array([3, 0, 9, 1, 1, 7], dtype=np.int64), None),
        (np.array([2, 0, 3], dtype=np.int64), 4),
        (np.arange(10, dtype=np.int64)[::-1].copy(), 10),
    ]
    chk = _Check("check_one_hot", len(cases))
    for i, (y, k) in enumerate(cases, 1):
        kk = 10 if k is None else k
        chk.case(i, f"y {y.tolist()}, " + ("default num_classes" if k is None
                                            else f"num_classes={k}"))
        before = y.copy()
        kwargs = {} if k is None else {"num_classes": k}
        out = chk.call(fn, y, signature="one_hot(y, num_classes=10) -> float32 array", **kwargs)
        chk.unchanged(before, y, "one_hot changed y in place.")
        if not isinstance(out, np.ndarray):
            chk.fail(f"one_hot should return a NumPy array; it returned {_describe(out)}.")
        n = len(y)
        if out.shape != (n, kk):
            hint = None
            if out.shape == (kk, n):
                hint = "the result is transposed: one row per label, one column per class."
            elif out.ndim == 2 and out.shape[0] == n:
                hint = "use num_classes for the number of columns."
            chk.fail(f"shape {_fmt_shape(out.shape)}; expected (N, num_classes) = "
                     f"{_fmt_shape((n, kk))}.", f"Likely bug: {hint}" if hint else None)
        if out.dtype != np.float32:
            chk.fail(f"dtype {out.dtype}; expected float32, the dtype the network computes in.",
                     "Likely bug: create it with np.zeros((N, num_classes), dtype=np.float32).")
        ref = np.eye(kk, dtype=np.float32)[y]
        if not np.array_equal(out, ref):
            hint = None
            for shift in (-1, 1):
                if np.array_equal(out, np.eye(kk, dtype=np.float32)[(y + shift) % kk]):
                    hint = f"the 1 is in column y{shift:+d}: put it in column y exactly."
            bad = [int(r) for r in np.nonzero(np.any(out != ref, axis=1))[0]]
            chk.fail(f"wrong values in rows {bad[:5]}: row i must be all 0 except a 1 in "
                     f"column y[i]; row {bad[0]} is {out[bad[0]].tolist()} for "
                     f"y = {int(y[bad[0]])}.", f"Likely bug: {hint}" if hint else None)
    chk.passed(show_error=False)


def check_train_val_split(fn) -> None:
    """Check ``split(x, y, n_val=5000, seed=0) -> (x_tr, y_tr, x_val, y_val)`` on a small
    synthetic set: sizes, disjoint, complete, aligned, reproducible, input untouched."""
    n, n_val = 40, 12
    rng = _rng(9)
    x = rng.integers(0, 256, size=(n, 3, 3)).astype(np.uint8)
    x[:, 0, 0] = np.arange(n)                  # the first pixel identifies the image
    y = rng.integers(0, 10, size=n).astype(np.int64)
    x_before, y_before = x.copy(), y.copy()
    chk = _Check("check_train_val_split", 3)
    sig = "split(x, y, n_val=5000, seed=0) -> (x_tr, y_tr, x_val, y_val)"
    names = ("x_tr", "y_tr", "x_val", "y_val")

    def run(seed):
        res = chk.call(fn, x, y, n_val=n_val, seed=seed, signature=sig)
        parts = [np.asarray(a) for a in chk.unpack(res, names, "the split function")]
        chk.unchanged(x_before, x, "the input x was modified in place (np.random.shuffle "
                                   "shuffles its argument): index with a permutation instead, "
                                   "x[perm].")
        chk.unchanged(y_before, y, "the input y was modified in place (np.random.shuffle "
                                   "shuffles its argument): index with a permutation instead, "
                                   "y[perm].")
        return parts

    chk.case(1, f"x {_fmt_shape(x.shape)} uint8, y ({n},), n_val={n_val}, seed=0")
    x_tr, y_tr, x_val, y_val = run(0)
    sizes = {"x_tr": (len(x_tr), n - n_val), "y_tr": (len(y_tr), n - n_val),
             "x_val": (len(x_val), n_val), "y_val": (len(y_val), n_val)}
    for name, (got, want) in sizes.items():
        if got != want:
            chk.fail(f"{name} has {got} items; expected {want} (n_val={n_val} of {n} go to "
                     f"validation, the rest to training).")
    for name, part in (("x_tr", x_tr), ("x_val", x_val)):
        if part.shape[1:] != x.shape[1:] or part.dtype != x.dtype:
            chk.fail(f"{name} has shape {part.shape} and dtype {part.dtype}; each image should "
                     f"keep its shape {x.shape[1:]} and dtype {x.dtype}.")
    for name, part in (("y_tr", y_tr), ("y_val", y_val)):
        if part.dtype != y.dtype:
            chk.fail(f"{name} has dtype {part.dtype}; expected the dtype of y, {y.dtype}.")
    ids_tr, ids_val = x_tr[:, 0, 0].astype(int), x_val[:, 0, 0].astype(int)
    both = sorted(set(ids_tr.tolist()) & set(ids_val.tolist()))
    if both:
        chk.fail(f"{len(both)} images are in both the training and the validation part: "
                 f"the parts must be disjoint (split one permutation in two).")
    if sorted(ids_tr.tolist() + ids_val.tolist()) != list(range(n)):
        chk.fail("some images are missing or repeated: together the parts must hold every "
                 "image once.")
    misaligned = int(np.sum(y_tr != y[ids_tr]) + np.sum(y_val != y[ids_val]))
    if misaligned:
        chk.fail(f"{misaligned} labels no longer belong to their images: index x and y with the "
                 f"same permutation (x[perm], y[perm]).")
    if np.array_equal(np.sort(ids_val), np.arange(n - n_val, n)) \
            or np.array_equal(np.sort(ids_val), np.arange(n_val)):
        chk.fail("the validation part is simply the first or last n_val images: shuffle with "
                 "a seeded permutation first, so that it is a random sample.")
    chk.case(2, f"calling again with seed=0 (n_val={n_val})")
    again = run(0)
    if not all(np.array_equal(a, b) for a, b in zip(again, (x_tr, y_tr, x_val, y_val))):
        chk.fail("the same seed gave a different split: draw the permutation from "
                 "np.random.default_rng(seed), not from the global random state.")
    chk.case(3, f"seed=1 instead of seed=0 (n_val={n_val})")
    other = run(1)
    if np.array_equal(other[2], x_val):
        chk.fail("seed=1 gave the same split as seed=0: the seed is ignored; use "
                 "np.random.default_rng(seed).")
    chk.passed(show_error=False)


def check_step_decay(fn) -> None:
    """Check ``step_decay(epoch, base_lr=0.01, drop=0.5, epochs_per_drop=2) -> float``,
    epoch 0-based: base_lr * drop ** (epoch // epochs_per_drop)."""
    settings = [{}, {"base_lr": 0.1, "drop": 0.1, "epochs_per_drop": 3},
                {"base_lr": 1e-3, "drop": 0.5, "epochs_per_drop": 1}]
    epochs = np.arange(10)
    chk = _Check("check_step_decay", len(settings))
    for i, kw in enumerate(settings, 1):
        full = {"base_lr": 0.01, "drop": 0.5, "epochs_per_drop": 2, **kw}
        base, drop, k = full["base_lr"], full["drop"], full["epochs_per_drop"]
        chk.case(i, "epochs 0-9, " + (", ".join(f"{a}={v}" for a, v in kw.items()) if kw
                                      else "default arguments"))
        got = []
        for e in epochs:
            value = chk.call(fn, int(e), signature="step_decay(epoch, base_lr=0.01, drop=0.5, "
                                                   "epochs_per_drop=2) -> float", **kw)
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                    value, (int, float, np.integer, np.floating)):
                chk.fail(f"step_decay({int(e)}) returned {_describe(value)}; expected a float.")
            got.append(float(value))
        got = np.array(got)
        ref = base * drop ** (epochs // k)
        alternatives = [
            (base * drop ** ((epochs + 1) // k), (f"off by one epoch: the first drop comes at "
             f"epoch {k - 1} instead of {k}. Epochs are 0-based: epochs 0..{k - 1} use base_lr.")),
            (base * drop ** (epochs // k + 1), ("off by one epoch: already decayed at epoch 0; "
             "epoch 0 must use base_lr.")),
            (base * drop ** (np.maximum(epochs - 1, 0) // k), (f"off by one epoch: the first "
             f"drop comes at epoch {k + 1} instead of {k} (epochs are 0-based).")),
            (base * drop ** epochs, ("it decays every epoch: drop once per epochs_per_drop "
             "epochs, with integer division epoch // epochs_per_drop.")),
            (base * drop ** (epochs / k), ("it decays smoothly: use integer division, "
             "epoch // epochs_per_drop, so the rate stays constant between drops.")),
        ]
        if not kw:
            alternatives.append((ref * 0 + 0.01, "the rate never drops."))
        try:
            chk.compare("learning rates", got, ref, alternatives=alternatives)
        except AssertionError as exc:
            table = ", ".join(f"{g:.4g}" for g in got)
            want = ", ".join(f"{r:.4g}" for r in ref)
            raise AssertionError(f"{exc}\n  got      [{table}]\n  expected [{want}]") from None
    chk.passed()


def _shifted(x, dy: int, dx: int, fill: float):
    """x (N, C, H, W) moved down by dy and right by dx, vacated pixels set to fill."""
    import torch
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


@_oracle._single_thread
def _identify_shifts(x, out, max_shift: int):
    """Per image: the (dy, dx) that explains out (or None), and whether a wrap-around or a
    zero fill explains it instead."""
    import torch
    fill = float(x.min())
    n = x.shape[0]
    found = [None] * n
    wrapped = torch.zeros(n, dtype=torch.bool)
    zero_fill = torch.zeros(n, dtype=torch.bool)
    reach = max_shift + 2
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            same = (_shifted(x, dy, dx, fill) == out).flatten(1).all(dim=1)
            for j in torch.nonzero(same).flatten().tolist():
                if found[j] is None:
                    found[j] = (dy, dx)
            if (dy, dx) != (0, 0):
                wrapped |= (torch.roll(x, (dy, dx), dims=(-2, -1)) == out).flatten(1).all(dim=1)
                zero_fill |= (_shifted(x, dy, dx, 0.0) == out).flatten(1).all(dim=1)
    return found, wrapped, zero_fill


def check_random_shift(fn) -> None:
    """Check ``random_shift(x, y, max_shift=2, generator=None) -> (x_shifted, y)`` on torch
    tensors: integer shifts of at most max_shift, background fill, labels unchanged, varied and
    reproducible shifts. Reports every property that fails."""
    import torch
    sig = "random_shift(x, y, max_shift=2, generator=None) -> (x_shifted, y)"
    g = torch.Generator().manual_seed(0)
    background = -0.4242
    x = torch.rand((64, 1, 10, 10), generator=g, dtype=torch.float32)
    x[torch.arange(64), 0, 4, 5] = background      # every image has the same minimum
    y = torch.randint(0, 10, (64,), generator=g, dtype=torch.int64)
    x2 = torch.rand((8, 2, 9, 7), generator=g, dtype=torch.float32)
    x2[:, :, 3, 3] = background
    y2 = torch.randint(0, 10, (8,), generator=g, dtype=torch.int64)
    chk = _Check("check_random_shift", 4)
    problems: dict[str, list[int]] = {}         # problem -> the cases that show it
    descriptions: dict[int, str] = {}

    def note(text: str) -> None:
        problems.setdefault(text, []).append(chk.index)
        descriptions[chk.index] = chk.desc

    def run(xs, ys, **kw):
        xb, yb = xs.clone(), ys.clone()
        res = chk.call(fn, xs, ys, signature=sig, **kw)
        xo, yo = chk.unpack(res, ("x_shifted", "y"), "random_shift")
        if not torch.equal(xb, xs) or not torch.equal(yb, ys):
            note("the input was modified in place: build a new tensor.")
        if not isinstance(xo, torch.Tensor) or not isinstance(yo, torch.Tensor):
            chk.fail(f"random_shift should return two torch tensors; got {_describe(xo)} and "
                     f"{_describe(yo)}.")
        if xo.shape != xs.shape or xo.dtype != xs.dtype:
            note(f"x_shifted has shape {tuple(xo.shape)} and dtype {xo.dtype}; expected those "
                 f"of x, {tuple(xs.shape)} and {xs.dtype}.")
        if yo.dtype != ys.dtype or not torch.equal(yo, ys):
            note("the labels changed: return y as it is (shifting an image does not change its "
                 "digit).")
        return xo

    def shifts_of(xs, xo, max_shift):
        """The shift of every image, or None when some image is not a plain shift."""
        if xo.shape != xs.shape:
            return None
        found, wrapped, zero_fill = _identify_shifts(xs, xo.to(xs.dtype), max_shift)
        bad = [j for j, s in enumerate(found) if s is None]
        if bad:
            if bool(wrapped[bad].all()):
                note("pixels wrap around to the other side (torch.roll?): fill the pixels "
                     "shifted in with the background, x.min(), instead.")
            elif bool(zero_fill[bad].all()):
                note("pixels shifted in are 0: fill them with the background, x.min() (for "
                     "normalised MNIST that is about -0.42, not 0).")
            else:
                note(f"{len(bad)} of {len(found)} images are not their input moved by whole "
                     f"pixels with the background (x.min()) filled in.")
        too_far = [s for s in found if s is not None and max(abs(s[0]), abs(s[1])) > max_shift]
        if too_far:
            note(f"shifts up to {max(max(abs(a), abs(b)) for a, b in too_far)} pixels with "
                 f"max_shift={max_shift}: keep |dy|, |dx| <= max_shift.")
        return None if bad else found

    chk.case(1, "x (64, 1, 10, 10) float32, max_shift=2, seeded generator")
    out = run(x, y, max_shift=2, generator=torch.Generator().manual_seed(1))
    shifts = shifts_of(x, out, 2)
    if shifts:
        reached = {v for s in shifts for v in s}
        if len(set(shifts)) == 1:
            note(f"every image got the same shift {shifts[0]}: draw one (dy, dx) per image.")
        elif -2 not in reached or 2 not in reached:
            note("no image moved the full max_shift=2 pixels in one of the two directions: "
                 "torch.randint's upper bound is exclusive, so use "
                 "torch.randint(-max_shift, max_shift + 1, ...).")
    chk.case(2, "the same input and an identically seeded generator")
    again = run(x, y, max_shift=2, generator=torch.Generator().manual_seed(1))
    if again.shape == out.shape and not torch.equal(out, again):
        note("the same seeded generator gave different shifts: draw them with "
             "torch.randint(..., generator=generator).")
    chk.case(3, "x (8, 2, 9, 7) float32, max_shift=1, seeded generator")
    shifts_of(x2, run(x2, y2, max_shift=1, generator=torch.Generator().manual_seed(2)), 1)
    chk.case(4, "x (64, 1, 10, 10), generator=None")
    shifts_of(x, run(x, y), 2)
    if problems:
        lines = []
        for text, where in problems.items():
            label = "case" if len(where) == 1 else "cases"
            lines.append(f"- {text} ({label} {', '.join(map(str, dict.fromkeys(where)))})")
        lines += [f"case {i}: {d}" for i, d in sorted(descriptions.items())]
        chk.case(0, "")
        chk.fail(*lines)
    chk.passed(show_error=False)
