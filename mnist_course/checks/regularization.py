"""Checks of the regularisation layers written in NumPy: batch normalisation and dropout.

Batch norm is compared with ``torch.nn.functional.batch_norm`` (float64, autograd for the
backward pass), including the running statistics it leaves behind. Dropout is random, so its
check tests properties instead: the fraction of zeros, the exact scale of the kept values, the
same mask for the same seed and in the backward pass, the identity in evaluation mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mnist_course._oracle import _numpy, _single_thread, _tensor
from mnist_course.checks._core import _Check, _fmt_shape, _rng

# --------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------

@_single_thread
def _torch_batchnorm(x, gamma, beta, running_mean, running_var, train, momentum, eps, dout):
    """(out, running_mean, running_var, dx, dgamma, dbeta) by torch; the inputs stay unchanged."""
    tx, tg, tb = _tensor(x, True), _tensor(gamma, True), _tensor(beta, True)
    rm, rv = _tensor(running_mean), _tensor(running_var)   # copies, updated in place by torch
    with torch.enable_grad():
        out = F.batch_norm(tx, rm, rv, tg, tb, training=train, momentum=momentum, eps=eps)
        out.backward(_tensor(dout))
    return _numpy(out), _numpy(rm), _numpy(rv), _numpy(tx.grad), _numpy(tg.grad), _numpy(tb.grad)


def _c(v):
    """A per-channel vector (C,) broadcast against (N, C, H, W)."""
    return np.asarray(v)[None, :, None, None]


def _normalise(x, gamma, beta, axes=(0, 2, 3), ddof=0, eps=1e-5, eps_outside=False,
               stats=None):
    """gamma * (x - mean) / sqrt(var + eps) + beta with statistics over `axes` (or given ones);
    used to name the bugs only."""
    if stats is None:
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, ddof=ddof, keepdims=True)
    else:
        mean, var = _c(stats[0]), _c(stats[1])
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return _c(gamma) * (x - mean) / std + _c(beta)


_AXES_HINT = ("statistics over the wrong axes: per-channel batch norm takes the mean and the "
              "variance over axes (0, 2, 3) (N, H and W), one value per channel, shape (C,).")
_EVAL_HINT = ("evaluation mode (train=False) must normalise with state['running_mean'] and "
              "state['running_var'], not with the statistics of the batch.")


def _updated_stats(x, momentum, rm, rv):
    """(mean, var) pairs a learner may normalise with after updating the running statistics
    first: both updated, or the updated running mean with the batch variance."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    new_rm = (1 - momentum) * rm + momentum * mean
    new_rv = (1 - momentum) * rv + momentum * var * m / (m - 1)
    return [(new_rm, new_rv), (new_rm, var), (mean, new_rv)]


def _bn_out_alternatives(x, gamma, beta, eps, train, state_before, momentum=0.1):
    rm, rv = state_before
    if not train:
        return [
            (lambda: _normalise(x, gamma, beta, eps=eps), _EVAL_HINT),
            (lambda: _normalise(x, gamma, beta, eps=eps, ddof=1), _EVAL_HINT),
            (lambda: _normalise(x, gamma, beta, eps=eps, eps_outside=True, stats=(rm, rv)),
             "eps outside the square root: divide by sqrt(running_var + eps)."),
            (lambda: _normalise(x, beta, gamma, eps=eps, stats=(rm, rv)),
             "gamma and beta swapped: out = gamma * x_hat + beta."),
        ]
    return [
        (lambda: _normalise(x, gamma, beta, eps=eps, ddof=1),
         ("normalised with the unbiased variance (divided by N*H*W - 1): torch normalises with "
         "the biased batch variance (divided by N*H*W); the unbiased one is only for "
         "running_var.")),
        (lambda: _normalise(x, gamma, beta, eps=eps, eps_outside=True),
         "eps outside the square root: divide by sqrt(var + eps), not sqrt(var) + eps."),
        (lambda: _normalise(x, gamma, beta, eps=0.0), ("eps is missing: divide by "
                                                       "sqrt(var + eps).")),
        *[(lambda a=axes: _normalise(x, gamma, beta, axes=a, eps=eps), _AXES_HINT)
          for axes in ((0,), (2, 3), (1, 2, 3), (0, 1, 2, 3), (0, 1))],
        (lambda: _normalise(x, gamma, beta, eps=eps, stats=(rm, rv)),
         ("training mode (train=True) normalised with the running statistics: use the mean and "
         "variance of this batch; only evaluation mode uses the running ones.")),
        *[(lambda st=st: _normalise(x, gamma, beta, eps=eps, stats=st),
           ("training mode normalised with the running statistics just updated (the state "
            "was updated first, then read back to normalise): normalise with the mean and the "
            "biased variance of this batch; the running statistics are only blended for "
            "evaluation.")) for st in _updated_stats(x, momentum, rm, rv)],
        (lambda: _normalise(x, beta, gamma, eps=eps), ("gamma and beta swapped: out = gamma * "
                                                      "x_hat + beta.")),
    ]


def _bn_running_alternatives(key, x, momentum, before, eps_value=1e-5):
    """Wrong running statistics: (array, hint) pairs."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    keras = ("momentum used the Keras way (running = momentum * running + (1 - momentum) * "
             "batch): torch's rule is running = (1 - momentum) * running + momentum * batch.")
    alts = [(before, (f"state[{key!r}] was not updated: in training mode update it in place, "
                     f"running = (1 - momentum) * running + momentum * batch statistic."))]
    if key == "running_mean":
        return alts + [
            (momentum * before + (1 - momentum) * mean, keras),
            (mean, ("running_mean was set to the batch mean: blend it in, running_mean = "
                   "(1 - momentum) * running_mean + momentum * mean.")),
        ]
    unbiased = var * m / (m - 1)
    biased_hint = (f"running_var uses the biased batch variance: torch stores the unbiased one, "
                   f"var * m / (m - 1) with m = N*H*W = {m} (normalising still uses the biased "
                   f"one).")
    return alts + [
        ((1 - momentum) * before + momentum * var, biased_hint),
        (momentum * before + (1 - momentum) * unbiased, keras),
        (momentum * before + (1 - momentum) * var, keras + " Also: " + biased_hint),
        (unbiased, ("running_var was set to the batch variance: blend it in, running_var = "
                   "(1 - momentum) * running_var + momentum * unbiased variance.")),
        *[((1 - momentum) * before + momentum * var * k / (k - 1),
           (f"the unbiased factor uses {name} = {k} instead of m = N*H*W = {m}, the number of "
            f"values per channel: running_var takes var * m / (m - 1)."))
          for k, name in ((x.shape[0], "N"), (x.shape[2] * x.shape[3], "H*W"),
                          (x.shape[1] * x.shape[2] * x.shape[3], "C*H*W"))
          if 1 < k != m],
        *[((1 - momentum) * before + momentum * (v + e), (
            "eps was added to the running variance: store the variance itself, running_var = "
            "(1 - momentum) * running_var + momentum * unbiased variance; eps is added only "
            "where you divide, sqrt(var + eps).")) for v in (unbiased, var) for e in (eps_value,)],
        ((1 - momentum) * before + momentum * np.sqrt(unbiased),
         "running_var holds a standard deviation: store the (unbiased) variance."),
    ]


def _bn_dx_alternatives(x_hat, gamma, inv_std, dout, train):
    """Wrong dx: (array, hint) pairs; x_hat and inv_std from the reference."""
    scale = _c(gamma * inv_std)
    if not train:
        mean_d = dout.mean(axis=(0, 2, 3), keepdims=True)
        mean_dx = (dout * x_hat).mean(axis=(0, 2, 3), keepdims=True)
        hint = ("in evaluation mode the running mean and variance are constants: "
                "dx = dout * gamma / sqrt(running_var + eps), without the two batch terms.")
        centred = x_hat - x_hat.mean(axis=(0, 2, 3), keepdims=True)
        return [(scale * (dout - mean_d - x_hat * mean_dx), hint),
                (scale * (dout - mean_d - centred * mean_dx), hint)]
    n, hw = x_hat.shape[0], x_hat[0, 0].size
    m = n * hw
    full = "dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat)), means per channel"
    mean_d = dout.mean(axis=(0, 2, 3), keepdims=True)
    mean_dx = (dout * x_hat).mean(axis=(0, 2, 3), keepdims=True)
    return [
        (scale * dout, (f"dx treats the mean and the variance as constants (dx = dout * gamma / "
                       f"std): in training mode both depend on x, which adds two terms: {full}.")),
        (scale * (dout - mean_d), f"the gradient through the variance is missing: {full}."),
        (scale * (dout - x_hat * mean_dx), f"the gradient through the mean is missing: {full}."),
        (scale * (dout - dout.mean(axis=0, keepdims=True)
                  - x_hat * (dout * x_hat).mean(axis=0, keepdims=True)),
         (f"the means in dx are over the batch axis only: average over N, H and W, axes "
         f"(0, 2, 3): {full}.")),
        (scale * (dout - mean_d * hw - x_hat * mean_dx * hw) if hw > 1 else np.nan * dout,
         (f"dx divides the sums by N = {n} instead of m = N*H*W, the number of values per "
         f"channel: {full}.")),
        (_c(inv_std) * (dout - mean_d - x_hat * mean_dx),
         f"dx lacks the factor gamma: {full}."),
        *[(scale * (dout - mean_d - c * x_hat * mean_dx),
           (f"the term through the variance has a wrong constant factor ({c:g} times the right "
            f"one): d var / dx = 2 (x - mean) / m and d(1 / sqrt(var + eps)) / d var = "
            f"-1 / (2 (var + eps)^(3/2)); the 2 and the 1/2 cancel: {full}."))
          for c in (0.5, 2.0, -1.0, -0.5)],
        *[(scale * (dout - c * mean_d - x_hat * mean_dx),
           (f"the term through the mean has a wrong constant factor ({c:g} times the right "
            f"one): it is -mean(dout) per channel, the sum divided by m = N*H*W: {full}."))
          for c in (2.0, -1.0, 0.5)],
        *([(scale * (dout - mean_d * hw - x_hat * mean_dx), (
            f"the term through the mean divides by N = {n} instead of m = N*H*W: {full}.")),
          (scale * (dout - mean_d - x_hat * mean_dx * hw), (
            f"the term through the variance divides by N = {n} instead of m = N*H*W: "
            f"{full}."))] if hw > 1 else []),
        *[(scale * (dout - mean_d - x_hat * mean_dx) * k, (
            f"dx is {k:g} times the right value: a wrong constant factor in front, "
            f"{full}.")) for k in (m / (m - 1), (m - 1) / m, 2.0, 0.5)],
    ]


def _sum_hints(name: str, n: int, c: int, h: int, w: int, formula: str):
    wrong = (f"{name} summed over the wrong axes: {formula}, summed over axes (0, 2, 3), one "
             f"value per channel.")
    keepdims = (f"{name} has shape (1, C, 1, 1): sum over axes (0, 2, 3) without keepdims, so "
                f"that it has the shape (C,) of the parameter.")
    return [((n, c, h, w), wrong), ((c, h, w), wrong), ((n, c), wrong), ((1, c, 1, 1), keepdims),
            ((c, 1, 1), wrong), ((h, w), wrong), ((n,), wrong), ((), wrong), ((1,), wrong)]


# (desc, x shape, train, momentum, eps, x scale)
_BN_CASES = [
    ("train", (4, 3, 5, 5), True, 0.1, 1e-5, 2.0),
    ("train", (2, 4, 3, 6), True, 0.3, 1e-5, 0.7),
    ("eval", (3, 3, 4, 4), False, 0.1, 1e-5, 1.5),
    ("train, tiny variance so that eps matters", (5, 2, 3, 3), True, 0.2, 1e-3, 0.02),
    ("eval, small running variance", (2, 2, 5, 3), False, 0.2, 1e-3, 0.1),
    ("train, a batch of one image", (1, 3, 4, 4), True, 0.05, 1e-5, 1.0),
]


def _bn_call(chk, fwd, x, gamma, beta, state, train, momentum, eps):
    """Call the learner's forward; a broadcasting error usually means the wrong axes."""
    __tracebackhide__ = True
    try:
        return chk.call(fwd, x, gamma, beta, state, train=train, momentum=momentum, eps=eps,
                        signature="batchnorm2d_forward(x, gamma, beta, state, train=True, "
                                  "momentum=0.1, eps=1e-5) -> (out, cache)")
    except AssertionError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValueError) and "broadcast" in str(cause):
            raise AssertionError(f"{exc}\n  Likely bug: statistics over the wrong axes, or "
                                 f"with keepdims: per-channel batch norm takes the mean and the "
                                 f"variance over axes (0, 2, 3) (N, H and W), one value per "
                                 f"channel, shape (C,) like the arrays in state.") from cause
        raise


def check_batchnorm2d(fwd, bwd) -> None:
    """Check ``batchnorm2d_forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5)
    -> (out, cache)`` and ``batchnorm2d_backward(dout, cache) -> (dx, dgamma, dbeta)`` against
    ``torch.nn.functional.batch_norm`` (training and evaluation mode, the running statistics
    left in ``state``, gradients by autograd)."""
    chk = _Check("check_batchnorm2d", len(_BN_CASES))
    rng = _rng(30)
    for i, (desc, shape, train, momentum, eps, scale) in enumerate(_BN_CASES, 1):
        n, c, h, w = shape
        chk.case(i, f"{desc}: x {_fmt_shape(shape)}, train={train}, momentum={momentum}, "
                    f"eps={eps:g}")
        x = rng.standard_normal(shape) * scale * rng.uniform(0.5, 1.5, (1, c, 1, 1)) \
            + rng.standard_normal((1, c, 1, 1))
        gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
        rm0 = rng.standard_normal(c) * 0.5
        rv0 = rng.uniform(0.5, 2.0, c) * (scale ** 2 if not train else 1.0)
        state = {"running_mean": rm0.copy(), "running_var": rv0.copy()}
        arrays = dict(state)
        copies = (x.copy(), gamma.copy(), beta.copy())
        dout = rng.standard_normal(shape)
        ref_out, ref_rm, ref_rv, rdx, rdg, rdb = _torch_batchnorm(
            x, gamma, beta, rm0, rv0, train, momentum, eps, dout)

        res = _bn_call(chk, fwd, x, gamma, beta, state, train, momentum, eps)
        out, cache = chk.unpack(res, ("out", "cache"), "batchnorm2d_forward")
        for name, before, now in zip(("x", "gamma", "beta"), copies, (x, gamma, beta)):
            chk.unchanged(before, now, f"batchnorm2d_forward changed its input {name} in place.")
        if not isinstance(state, dict) or not {"running_mean", "running_var"} <= set(state):
            chk.fail("state lost its keys 'running_mean' and 'running_var': update the arrays "
                     "in place and keep the dict as it is.")
        for key, before in (("running_mean", rm0), ("running_var", rv0)):
            now = state[key]
            if not train and (now is not arrays[key] or now.shape != before.shape
                              or not np.array_equal(now, before)):
                chk.fail(f"evaluation mode (train=False) changed state[{key!r}]: only "
                         f"training mode updates the running statistics; evaluation reads "
                         f"them.")
        out = chk.array(out, "out", shape)
        chk.compare("out", out, ref_out,
                    alternatives=_bn_out_alternatives(x, gamma, beta, eps, train, (rm0, rv0),
                                                     momentum))

        # the running statistics after a training step
        for key, before, ref in (("running_mean", rm0, ref_rm), ("running_var", rv0, ref_rv)):
            if not train:
                break
            now = chk.array(state[key], f"state[{key!r}] after the call", (c,), shape_hints=[
                (s, _AXES_HINT) for s in ((c, h, w), (n, c), (1, c, 1, 1), (n, c, 1, 1), ())])
            chk.compare(f"state[{key!r}] after the call", now, ref,
                        alternatives=_bn_running_alternatives(key, x, momentum, before, eps))
            if state[key] is not arrays[key]:
                chk.fail(f"state[{key!r}] was replaced by a new array (state[key] = ...): update "
                         f"it in place, e.g. state[{key!r}] *= 1 - momentum; state[{key!r}] += "
                         f"momentum * batch statistic, as torch updates its buffers (whoever "
                         f"holds the array must see the new values).")

        # backward
        dout_before = dout.copy()
        res = chk.call(bwd, dout, cache,
                       signature="batchnorm2d_backward(dout, cache) -> (dx, dgamma, dbeta)")
        dx, dgamma, dbeta = chk.unpack(res, ("dx", "dgamma", "dbeta"), "batchnorm2d_backward")
        chk.unchanged(dout_before, dout, "batchnorm2d_backward changed dout in place.")
        if train:
            mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        else:
            mean, var = rm0, rv0
        inv_std = 1 / np.sqrt(var + eps)
        x_hat = (x - _c(mean)) * _c(inv_std)
        dx = chk.array(dx, "dx", shape)
        chk.compare("dx", dx, rdx, alternatives=_bn_dx_alternatives(x_hat, gamma, inv_std, dout,
                                                                    train))
        dgamma = chk.array(dgamma, "dgamma", (c,), shape_hints=_sum_hints(
            "dgamma", n, c, h, w, "dgamma = sum(dout * x_hat)"))
        chk.compare("dgamma", dgamma, rdg, alternatives=[
            ((dout * x).sum(axis=(0, 2, 3)), ("dgamma = sum(dout * x_hat) with the NORMALISED "
                                             "x_hat, not with x.")),
            (rdb, "dgamma is sum(dout): that is dbeta; dgamma = sum(dout * x_hat)."),
        ])
        dbeta = chk.array(dbeta, "dbeta", (c,), shape_hints=_sum_hints(
            "dbeta", n, c, h, w, "dbeta = sum(dout)"))
        chk.compare("dbeta", dbeta, rdb, alternatives=[
            (rdg, "dbeta is sum(dout * x_hat): that is dgamma; dbeta = sum(dout)."),
        ])
    chk.passed()


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------

# (x shape, p, train, dtype)
_DROPOUT_CASES = [
    ((64, 8, 6, 6), 0.2, True, np.float64),
    ((200, 50), 0.5, True, np.float64),
    ((32, 16, 4, 4), 0.8, True, np.float64),
    ((8, 3, 5, 5), 0.0, True, np.float64),
    ((16, 4, 3, 3), 0.5, False, np.float64),
    ((10, 20), 0.3, False, np.float64),
    ((12, 5, 3, 3), 1.0, True, np.float64),
    ((60, 40), 0.4, True, np.float32),
    ((10, 6), 0.4, False, np.float32),
]

_P_ONE_HINT = ("with p = 1 every value is dropped and 1 / (1 - p) divides by zero: use the "
               "scale 0 (not 1 / (1 - p)) when p == 1, so that out and dx are all zeros, as "
               "torch's dropout gives.")


def _dtype_hint(what: str, got, want) -> str:
    return (f"{what} has dtype {got} for a {want} input: the mask from rng.random(...) is "
            f"float64 and promotes the product; cast the mask (or the result) to x.dtype, "
            f"e.g. mask = (rng.random(x.shape) >= p).astype(x.dtype) / (1 - p), so that "
            f"float32 stays float32.")


def _explain_p_one(exc: Exception) -> str | None:
    if isinstance(exc, (ZeroDivisionError, FloatingPointError)):
        return _P_ONE_HINT
    return None


def _same_dtype(chk, arr, want, what: str) -> None:
    if np.asarray(arr).dtype != want:
        chk.fail(f"{what} has dtype {np.asarray(arr).dtype}; expected {np.dtype(want)}, the "
                 f"dtype of the input.", f"Likely bug: {_dtype_hint(what, np.asarray(arr).dtype, np.dtype(want))}")

_RNG_HINT = ("draw the mask from the rng argument (rng.random(x.shape) >= p), not from "
             "np.random (the global generator) or a new generator of your own.")


def _nonzero_values(rng, shape) -> np.ndarray:
    """Values of size 0.5 to 2 with random signs: a zero in the output means 'dropped'."""
    return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def _dropout_train_case(chk, fwd, bwd, x, p, seed, rng):
    __tracebackhide__ = True
    signature = "dropout_forward(x, p, train=True, rng=None) -> (out, cache)"
    before = x.copy()
    res = chk.call(fwd, x, p, train=True, rng=np.random.default_rng(seed), signature=signature,
                   explain=_explain_p_one if p == 1 else None)
    out, cache = chk.unpack(res, ("out", "cache"), "dropout_forward")
    chk.unchanged(before, x, "dropout_forward changed its input x in place: return x * mask "
                             "/ (1 - p) as a new array.")
    out = chk.array(out, "out", x.shape)
    if p == 1:
        _dropout_p_one(chk, bwd, x, out, cache, rng)
        return
    _same_dtype(chk, out, x.dtype, "out")
    kept = out != 0
    frac = 1.0 - float(kept.mean())
    bound = 6 * np.sqrt(p * (1 - p) / x.size) + 1e-9
    if abs(frac - p) > bound:
        if p != 0.5 and abs(frac - (1 - p)) <= 6 * np.sqrt(p * (1 - p) / x.size):
            hint = (f"p is the probability of DROPPING a value, not of keeping it: keep = "
                    f"rng.random(x.shape) >= p keeps a fraction 1 - p = {1 - p:g}.")
        elif frac == 0:
            hint = "nothing was dropped in training mode: zero each value with probability p."
        else:
            hint = None
        chk.fail(f"{frac:.1%} of the outputs are zero, expected p = {p:.0%} (tolerance "
                 f"{bound:.1%} for {x.size} values).", f"Likely bug: {hint}" if hint else None)
    got = out[kept]
    if p > 0:
        chk.compare("the kept values", got, x[kept] / (1 - p), alternatives=[
            (x[kept], ("the kept values are not scaled (non-inverted dropout): inverted dropout "
                      "divides them by 1 - p in training, so that evaluation is the identity.")),
            (x[kept] / p, ("the kept values are divided by p: divide by 1 - p, the probability "
                          "of keeping a value.")),
            (x[kept] * (1 - p), ("the kept values are multiplied by 1 - p: divide by 1 - p "
                                "instead.")),
        ])
        res2 = chk.call(fwd, x, p, train=True, rng=np.random.default_rng(seed),
                        signature=signature)
        out2 = chk.array(chk.unpack(res2, ("out", "cache"), "dropout_forward")[0], "out",
                         x.shape)
        if not np.array_equal(out2 != 0, kept):
            chk.fail("two calls with np.random.default_rng(seed) and the same seed dropped "
                     "different values.", f"Likely bug: {_RNG_HINT}")
    else:
        chk.compare("out (p = 0: nothing is dropped)", out, x)
    dout = rng.standard_normal(x.shape).astype(x.dtype)
    dout = np.where(dout == 0, 1.0, dout).astype(x.dtype)
    dout_before = dout.copy()
    dx = chk.call(bwd, dout, cache, signature="dropout_backward(dout, cache) -> dx")
    chk.unchanged(dout_before, dout, "dropout_backward changed dout in place.")
    dx = chk.array(dx, "dx", x.shape)
    _same_dtype(chk, dx, x.dtype, "dx")
    dropped_in_dx = dx == 0
    if p > 0 and np.any(dropped_in_dx) and not np.array_equal(dropped_in_dx, ~kept):
        chk.fail("dx is zero at other positions than out: the backward pass used a different "
                 "mask.", "Likely bug: the mask is drawn again in backward: keep the mask of "
                          "the forward pass in the cache and reuse it, dx = dout * mask / "
                          "(1 - p).")
    chk.compare("dx", dx, dout * kept / (1 - p), alternatives=[
        (dout, ("dx ignores the mask: dx = dout * mask / (1 - p), with the mask of the "
               "forward pass (kept in the cache).")),
        (dout * kept, ("dx is masked but not scaled: multiply by 1 / (1 - p) as in the forward "
                      "pass.")),
    ])


def _dropout_p_one(chk, bwd, x, out, cache, rng) -> None:
    """p = 1: everything is dropped; out and dx are zeros, never nan or inf."""
    __tracebackhide__ = True
    if not np.all(np.isfinite(out)):
        chk.fail(f"out contains nan or inf ({int(np.sum(~np.isfinite(out)))} of {out.size} "
                 f"values).", f"Likely bug: {_P_ONE_HINT}")
    if np.any(out != 0):
        chk.fail(f"{float(np.mean(out != 0)):.1%} of the outputs are not zero with p = 1.",
                 "Likely bug: p is the probability of dropping a value: with p = 1 every value "
                 "is dropped (keep = rng.random(x.shape) >= p is all False).")
    dout = rng.standard_normal(x.shape)
    dx = chk.call(bwd, dout, cache, signature="dropout_backward(dout, cache) -> dx",
                  explain=_explain_p_one)
    dx = chk.array(dx, "dx", x.shape)
    if not np.all(np.isfinite(dx)):
        chk.fail(f"dx contains nan or inf ({int(np.sum(~np.isfinite(dx)))} of {dx.size} "
                 f"values).", f"Likely bug: {_P_ONE_HINT}")
    if np.any(dx != 0):
        chk.fail("dx is not zero with p = 1: every value was dropped in the forward pass, so "
                 "no gradient flows back.",
                 "Likely bug: dx = dout * mask / (1 - p) with the forward pass's mask (all "
                 "zeros here); a mask drawn again or ignored in backward lets gradient through.")


def check_dropout(fwd, bwd) -> None:
    """Check ``dropout_forward(x, p, train=True, rng=None) -> (out, cache)`` (inverted dropout,
    p the probability of dropping, identity in evaluation mode) and ``dropout_backward(dout,
    cache) -> dx``: the fraction of zeros, the scale 1 / (1 - p) of the kept values, the same
    mask for the same seed and in backward, and rng=None."""
    chk = _Check("check_dropout", len(_DROPOUT_CASES) + 1)
    rng = _rng(31)
    for i, (shape, p, train, dtype) in enumerate(_DROPOUT_CASES, 1):
        chk.case(i, f"x {_fmt_shape(shape)} {np.dtype(dtype)}, p={p}, train={train}")
        x = _nonzero_values(rng, shape).astype(dtype)
        if train:
            _dropout_train_case(chk, fwd, bwd, x, p, seed=100 + i, rng=rng)
            continue
        before = x.copy()
        res = chk.call(fwd, x, p, train=False, rng=np.random.default_rng(i),
                       signature="dropout_forward(x, p, train=True, rng=None) -> (out, cache)")
        out, cache = chk.unpack(res, ("out", "cache"), "dropout_forward")
        chk.unchanged(before, x, "dropout_forward changed its input x in place.")
        out = chk.array(out, "out", shape)
        _same_dtype(chk, out, x.dtype, "out")
        if np.any(out == 0):
            chk.fail(f"{float(np.mean(out == 0)):.1%} of the outputs are zero in evaluation mode.",
                     "Likely bug: values were dropped with train=False: dropout is the identity "
                     "at evaluation, out = x.")
        chk.compare("out", out, x, alternatives=[
            (x / (1 - p), ("scaled in evaluation mode: with inverted dropout evaluation is the "
                          "identity (the scaling by 1 / (1 - p) happens in training only).")),
            (x * (1 - p), ("multiplied by 1 - p in evaluation mode: that is the rescale of "
                          "non-inverted dropout; with inverted dropout evaluation is the "
                          "identity.")),
        ])
        dout = rng.standard_normal(shape).astype(dtype)
        dx = chk.call(bwd, dout, cache, signature="dropout_backward(dout, cache) -> dx")
        dx = chk.array(dx, "dx", shape)
        _same_dtype(chk, dx, x.dtype, "dx")
        chk.compare("dx", dx, dout, alternatives=[
            (dout / (1 - p), ("dx is scaled in evaluation mode: there, dropout is the identity "
                             "and dx = dout.")),
        ])
    chk.case(len(_DROPOUT_CASES) + 1, "x (50, 40), p=0.5, train=True, rng=None (a fresh "
                                      "generator)")
    x = _nonzero_values(rng, (50, 40))
    res = chk.call(fwd, x, 0.5, train=True,
                   signature="dropout_forward(x, p, train=True, rng=None) -> (out, cache)")
    out = chk.array(chk.unpack(res, ("out", "cache"), "dropout_forward")[0], "out", x.shape)
    kept = out != 0
    if not 0.3 < 1 - kept.mean() < 0.7:
        chk.fail(f"{1 - kept.mean():.1%} of the outputs are zero, expected about 50%.")
    chk.compare("the kept values", out[kept], 2 * x[kept])
    chk.passed()
