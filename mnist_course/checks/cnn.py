"""Checks of lesson 03: the course CNN's initialisation, forward pass, loss and gradients."""

from __future__ import annotations

import re

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


# --------------------------------------------------------------------------------------------
# Initialisation (lesson 03)
# --------------------------------------------------------------------------------------------

_INIT_SIGNATURE = "init_params(seed=0, scheme='he') -> dict"


def _fans(shape) -> tuple[int, int, str, str]:
    """(fan_in, fan_out) of a weight, and how each is computed, for messages."""
    if len(shape) == 4:
        f, c, kh, kw = shape
        return (c * kh * kw, f * kh * kw, f"C*KH*KW = {c}*{kh}*{kw}",
                f"F*KH*KW = {f}*{kh}*{kw}")
    d_in, d_out = shape
    return d_in, d_out, "D_in", "D_out"


def _init_expected(shape, scheme: str) -> tuple[float, str]:
    """Expected std of a weight, and the formula with its numbers, for messages."""
    fan_in, fan_out, how_in, how_out = _fans(shape)
    if scheme == "he":
        want = np.sqrt(2 / fan_in)
        return want, (f"sqrt(2 / fan_in) = sqrt(2 / {fan_in}) = {want:.4g} "
                      f"(fan_in = {how_in})")
    a = np.sqrt(6 / (fan_in + fan_out))
    return a / np.sqrt(3), (f"{a / np.sqrt(3):.4g}, the std a / sqrt(3) of U(-a, a) with "
                            f"a = sqrt(6 / (fan_in + fan_out)) = sqrt(6 / ({fan_in} + "
                            f"{fan_out})) = {a:.4g} (fan_in = {how_in}, fan_out = {how_out})")


_LECUN = ("that is sqrt(1 / fan_in), LeCun's rule. He uses 2 / fan_in for every layer in this "
          "course, the last one included: std = sqrt(2 / fan_in).")
_WRONG_AXES = ("fan_in taken from the wrong axes: a conv weight is (F, C, KH, KW) with "
               "fan_in = C*KH*KW = w[0].size, a linear weight (D_in, D_out) has fan_in = D_in "
               "= shape[0].")


def _init_candidates(shape, scheme: str, uniform: bool) -> list:
    """(std, hint) pairs of typical wrong initialisations of a weight of this shape."""
    fan_in, fan_out, _, _ = _fans(shape)
    he, glorot = np.sqrt(2 / fan_in), np.sqrt(2 / (fan_in + fan_out))
    size = int(np.prod(shape))
    if scheme == "he":
        out = [(np.sqrt(1 / fan_in), _LECUN),
               (2 / fan_in, ("the variance 2 / fan_in was used as the std: std = "
                             "sqrt(2 / fan_in).")),
               (np.sqrt(2 / fan_out), _WRONG_AXES),
               (np.sqrt(2 / size), _WRONG_AXES + " (w.size counts the output side too)"),
               (glorot, ("that is the Glorot scale: scheme='he' draws from N(0, 2 / fan_in). Is "
                         "the scheme argument ignored?"))]
        if len(shape) == 4:
            out += [(np.sqrt(2 / shape[1]), _WRONG_AXES + " (the kernel size KH*KW is missing)"),
                    (np.sqrt(2 / (shape[2] * shape[3])), _WRONG_AXES + " (C is missing)")]
        return out
    a = np.sqrt(6 / (fan_in + fan_out))
    out = [(he, ("fan_out missing in Glorot: a = sqrt(6 / (fan_in + fan_out)), not "
                 "sqrt(6 / fan_in).") if uniform else
                ("that is He's N(0, 2 / fan_in): scheme='glorot' draws from U(-a, a) with "
                 "a = sqrt(6 / (fan_in + fan_out)). Is the scheme argument ignored?")),
           (a, ("the std equals a: a is the half-width of U(-a, a), not a standard deviation; "
                "draw rng.uniform(-a, a, shape).")),
           (np.sqrt(1 / (fan_in + fan_out)), ("the std is sqrt(1 / (fan_in + fan_out)): Glorot's "
                                              "a = sqrt(6 / (fan_in + fan_out)) gives a variance "
                                              "of a**2 / 3 = 2 / (fan_in + fan_out).")),
           (glorot / np.sqrt(3), ("a = sqrt(2 / (fan_in + fan_out)) is the std, not the "
                                  "half-width: a = sqrt(6 / (fan_in + fan_out)).")),
           (6 / (fan_in + fan_out) / np.sqrt(3), ("a**2 was used as a: a = sqrt(6 / (fan_in + "
                                                 "fan_out))."))]
    if len(shape) == 4:
        out.append((np.sqrt(2 / (fan_in + shape[0])),
                    "fan_out of a conv weight (F, C, KH, KW) is F*KH*KW, not F."))
        out.append((np.sqrt(2 / (shape[1] + shape[0])),
                    ("fan_in and fan_out of a conv weight include the kernel: C*KH*KW and "
                    "F*KH*KW.")))
    return out


def _global_state_equal(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


def _get_init(chk: _Check, fn, seed: int, scheme: str | None) -> dict:
    """Call fn, check the dict: keys, arrays, shapes, float32, zero biases."""
    kwargs = {"seed": seed} if scheme is None else {"seed": seed, "scheme": scheme}
    state = np.random.get_state()
    p = chk.call(fn, signature=_INIT_SIGNATURE, **kwargs)
    if not _global_state_equal(state, np.random.get_state()):
        chk.fail("init_params changed NumPy's global random state (np.random.seed, "
                 "np.random.randn, ...).",
                 "Likely bug: draw from the generator made from the seed, rng = "
                 "np.random.default_rng(seed), e.g. rng.standard_normal(shape): then the "
                 "weights depend on `seed` only, and nothing else in the notebook changes them.")
    if not isinstance(p, dict):
        chk.fail(f"init_params should return a dict name -> array; it returned {_describe(p)}.")
    keys = list(_oracle.CNN_SHAPES)
    missing = [k for k in keys if k not in p]
    extra = [k for k in p if k not in _oracle.CNN_SHAPES]
    if missing or extra:
        chk.fail(f"the keys should be {', '.join(keys)}"
                 + (f"; missing: {', '.join(missing)}" if missing else "")
                 + (f"; unexpected: {', '.join(map(str, extra))}" if extra else "") + ".")
    for k in keys:
        v, shape = p[k], _oracle.CNN_SHAPES[k]
        if not isinstance(v, np.ndarray):
            chk.fail(f"{k} should be a NumPy array of shape {_fmt_shape(shape)}; got "
                     f"{_describe(v)}.")
        if v.shape != shape:
            hint = None
            if len(shape) == 2 and v.shape == shape[::-1]:
                hint = "linear weights are (D_in, D_out) in this course, so out = x @ w + b."
            chk.fail(f"{k} has shape {_fmt_shape(v.shape)}; expected {_fmt_shape(shape)}.",
                     f"Likely bug: {hint}" if hint else None)
        if v.dtype != np.float32:
            chk.fail(f"{k} has dtype {v.dtype}; expected float32.",
                     "Likely bug: training runs in float32 (half the memory, twice the speed); "
                     "cast with .astype(np.float32)." if v.dtype == np.float64 else None)
        if k.endswith("_b") and np.any(v):
            chk.fail(f"{k} is not zero (largest |value| {float(np.max(np.abs(v))):.3g}).",
                     "Likely bug: biases start at zero, np.zeros(shape, dtype=np.float32); only "
                     "the weights are random.")
    return p


def _check_scales(chk: _Check, p: dict, scheme: str) -> float:
    """Check the mean, std and distribution of every weight; return the largest relative
    deviation of a std from the expected value."""
    worst = 0.0
    z_all = []
    for k in _oracle.CNN_KEYS:
        if not k.endswith("_w"):
            continue
        w = p[k].astype(np.float64)
        n = w.size
        want, formula = _init_expected(w.shape, scheme)
        got = float(w.std())
        uniform = got > 0 and float(np.max(np.abs(w))) < 2.0 * got  # a normal sample goes past 2
        # Sampling noise of a std estimate: 1/sqrt(2n) for a normal, sqrt(0.2/n) for a uniform.
        noise = 1 / np.sqrt(2 * n) if scheme == "he" else np.sqrt(0.2 / n)
        tol = max(0.05, 5 * noise)
        dev = abs(got / want - 1)
        if got == 0:
            chk.fail(f"{k} is constant ({float(w.flat[0]):.4g} everywhere); expected random "
                     f"values with std {formula}.",
                     "Likely bug: only the biases start at zero; the weights are drawn at random "
                     "so that the units of a layer differ from each other.")
        if dev > tol:
            hint = None
            for std, text in _init_candidates(w.shape, scheme, uniform):
                if abs(got / std - 1) < tol:
                    hint = text
                    break
            chk.fail(f"{k}: std {got:.4g}, {got / want:.3g} times the expected {formula} "
                     f"(tolerance {tol:.0%}).",
                     f"Likely bug: {hint}" if hint else
                     "Likely bug: check fan_in (and fan_out) and the formula above.")
        worst = max(worst, dev)
        mean = float(w.mean())
        if abs(mean) > 5 * want / np.sqrt(n):
            chk.fail(f"{k}: mean {mean:.4g}, expected about 0 (std {want:.4g}, {n} values).",
                     "Likely bug: the weights must be symmetric around 0, e.g. "
                     + ("rng.standard_normal(shape) * std." if scheme == "he" else
                        "rng.uniform(-a, a, shape), not rng.uniform(0, a, shape)."))
        if scheme == "glorot":
            fan_in, fan_out, _, _ = _fans(w.shape)
            a = np.sqrt(6 / (fan_in + fan_out))
            big = float(np.max(np.abs(w)))
            if big > a * (1 + 1e-5):
                chk.fail(f"{k}: a value of size {big:.4g} lies outside (-a, a), a = {a:.4g}.",
                         "Likely bug: scheme='glorot' is the uniform U(-a, a), "
                         "rng.uniform(-a, a, shape); yours looks like a normal distribution."
                         if not uniform else None)
        z_all.append((w / want).ravel())
    if scheme == "he":
        z = np.concatenate(z_all)
        kurtosis = float(np.mean(z ** 4) / np.mean(z ** 2) ** 2)  # 3 for a normal, 1.8 uniform
        if kurtosis < 2.4:
            chk.fail(f"the weights have the right std but not a normal distribution "
                     f"(kurtosis {kurtosis:.2f}; a normal has 3, a uniform 1.8).",
                     "Likely bug: scheme='he' draws from N(0, 2 / fan_in): "
                     "rng.standard_normal(shape) * sqrt(2 / fan_in).")
    return worst


def check_init(fn) -> None:
    """Check ``init_params(seed=0, scheme="he") -> dict`` of float32 arrays with the keys and
    shapes of ``numpy_cnn.PARAM_SHAPES``.

    scheme "he": every weight ~ N(0, 2 / fan_in), the last layer included. scheme "glorot":
    U(-a, a) with a = sqrt(6 / (fan_in + fan_out)). fan_in = C*KH*KW or D_in, fan_out =
    F*KH*KW or D_out; biases zero. Checks the std and mean of every weight against these
    closed forms, the distribution, that the same seed gives the same weights and another seed
    others, and that only the seed (not NumPy's global state) decides.
    """
    schemes = ("he", "glorot")
    chk = _Check("check_init", len(schemes))
    saved = np.random.get_state()
    worst = 0.0
    try:
        for i, scheme in enumerate(schemes, 1):
            chk.case(i, f"init_params(seed=0, scheme={scheme!r})")
            np.random.seed(1234)
            p = _get_init(chk, fn, 0, scheme)
            worst = max(worst, _check_scales(chk, p, scheme))
            np.random.seed(5678)
            again = _get_init(chk, fn, 0, scheme)
            if not all(np.array_equal(p[k], again[k]) for k in p):
                chk.fail("two calls with seed=0 gave different weights.",
                         "Likely bug: make the generator from the seed, rng = "
                         "np.random.default_rng(seed), and draw every weight from it.")
            other = _get_init(chk, fn, 1, scheme)
            if all(np.array_equal(p[k], other[k]) for k in p):
                chk.fail("seed=0 and seed=1 gave the same weights: the seed has no effect.",
                         "Likely bug: use the argument, np.random.default_rng(seed), not a "
                         "fixed number.")
            if scheme == "he":
                default = _get_init(chk, fn, 0, None)
                if not all(np.array_equal(p[k], default[k]) for k in p):
                    chk.fail("init_params(seed=0) differs from init_params(seed=0, "
                             "scheme='he').",
                             "Likely bug: the default is scheme='he': "
                             "def init_params(seed=0, scheme=\"he\").")
    finally:
        np.random.set_state(saved)
    chk.passed(show_error=False,
               detail=f"the std of every weight within {worst:.1%} of the expected value")


# --------------------------------------------------------------------------------------------
# The forward pass (lesson 03)
# --------------------------------------------------------------------------------------------

# The layers of the course CNN and the shape after each, for a batch of N images.
_LAYER_SHAPES = ("(N, 1, 28, 28) -> conv1 (N, 32, 26, 26) -> ReLU -> pool (N, 32, 13, 13) "
                 "-> conv2 (N, 64, 11, 11) -> ReLU -> pool (N, 64, 5, 5) -> conv3 "
                 "(N, 64, 3, 3) -> ReLU -> flatten (N, 576) -> fc1 (N, 64) -> ReLU -> fc2 "
                 "(N, 10)")


def _flat_size(pools) -> int:
    """Features after conv3 and flatten, with max pooling after the layers in pools."""
    size = 28
    for layer in ("conv1", "conv2", "conv3"):
        size -= 2
        if layer in pools:
            size //= 2
    return 64 * size * size


# Flatten sizes that a misplaced pooling gives, and what went wrong.
_POOL_MISTAKES = [
    (_flat_size(("conv2",)), "the max pooling after conv1 is missing"),
    (_flat_size(("conv1",)), "the max pooling after conv2 is missing"),
    (_flat_size(()), "both max poolings are missing (after conv1 and after conv2)"),
]


def _explain_shape_error(n: int):
    """exc -> hint for an error raised inside the learner's forward pass."""
    def explain(exc: Exception) -> str | None:
        text = str(exc)
        for size, what in _POOL_MISTAKES:
            if re.search(rf"\b({size}|{n * size})\b", text):
                return (f"{what}: the flattened activations have {size} features where fc1 "
                        f"expects 576 = 64 * 3 * 3. The shapes: {_LAYER_SHAPES}.")
        if re.search(r"shape|size|dimension|broadcast|align|matmul", text, re.IGNORECASE):
            return f"a shape does not fit; follow the shapes layer by layer: {_LAYER_SHAPES}."
        return None
    return explain


def check_cnn_forward(fn) -> None:
    """Check ``cnn_forward(params, x) -> (logits, cache)`` for the course CNN against
    ``torch.nn.functional`` in float64, with He-scaled parameters and non-zero biases (seed 1)
    and a batch of 3 images. Names a ReLU on the logits or a missing one, a missing pooling, the
    (H, W, C) flatten order and a wrong return value."""
    n = 3
    params = _oracle.init_cnn_params(seed=1)
    x = _rng(9).standard_normal((n, 1, 28, 28))
    chk = _Check("check_cnn_forward", 1)
    chk.case(1, f"params: He-scaled float64 with non-zero biases (seed 1), "
                f"x {_fmt_shape(x.shape)}", n)
    copies = {k: v.copy() for k, v in params.items()}
    x_before = x.copy()
    res = chk.call(fn, params, x, signature="cnn_forward(params, x) -> (logits, cache)",
                   explain=_explain_shape_error(n))
    for k in _oracle.CNN_KEYS:
        chk.unchanged(copies[k], params[k], f"cnn_forward changed params['{k}'] in place.")
    chk.unchanged(x_before, x, "cnn_forward changed its input x in place.")
    if isinstance(res, np.ndarray) and res.shape == (n, 10):
        chk.fail(f"cnn_forward should return a tuple (logits, cache); it returned only "
                 f"{_describe(res)}.",
                 "Likely bug: return both, `return logits, cache`: the backward pass needs "
                 "the cache.")
    logits, _cache = chk.unpack(res, ("logits", "cache"), "cnn_forward")
    logits = chk.array(logits, "logits", (n, 10), shape_hints=[
        ((10, n), "logits are transposed: one row per image, (N, 10)."),
        ((n, 576), "logits have the flattened size 576: fc1 and fc2 were not applied."),
        ((n, 64), "logits have 64 columns: fc2 (64 -> 10) was not applied."),
        ((n * 64, 10), "flatten lost the batch: h.reshape(N, -1) keeps one row per image."),
    ])
    alternatives = [
        (lambda: _oracle.cnn_logits(params, x, relu_logits=True),
         ("ReLU on the logits: the last layer (fc2) has no ReLU; the scores go to the softmax "
         "as they are, negative ones included.")),
        (lambda: _oracle.cnn_logits(params, x, flatten="hwc"),
         ("the flatten order: flatten the (N, 64, 3, 3) activations in (C, H, W) order, "
         "h.reshape(N, -1), not in (H, W, C) order (no transpose).")),
    ]
    for layer in _oracle.CNN_RELUS:
        alternatives.append((
            lambda layer=layer: _oracle.cnn_logits(
                params, x, relus=tuple(r for r in _oracle.CNN_RELUS if r != layer)),
            f"the ReLU after {layer} is missing."))
    chk.compare("logits", logits, _oracle.cnn_logits(params, x), alternatives=alternatives,
                fallback_hint=f"the forward pass differs from the course CNN: {_LAYER_SHAPES}.")
    chk.passed()
