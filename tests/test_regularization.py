"""Batch norm and dropout in NumPy (mnist_course.regularization) and their checks.

The layers are compared with torch (float64) and with numerical gradients; the checks must pass
correct code (the package's and an independent one) and name each typical bug.
"""

from __future__ import annotations

import re

import buggy_regularization as B
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_course import checks
from mnist_course.gradcheck import numerical_gradient, rel_error
from mnist_course.regularization import (
    batchnorm2d_backward,
    batchnorm2d_forward,
    dropout_backward,
    dropout_forward,
)


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def bn_data(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = 2 * rng.standard_normal(shape) + rng.standard_normal((1, c, 1, 1))
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    state = {"running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 2, c)}
    return x, gamma, beta, state, rng.standard_normal(shape)


def torch_bn(x, gamma, beta, state, train, momentum, eps, dout):
    tx, tg, tb = t(x, True), t(gamma, True), t(beta, True)
    rm, rv = t(state["running_mean"]), t(state["running_var"])
    out = F.batch_norm(tx, rm, rv, tg, tb, training=train, momentum=momentum, eps=eps)
    out.backward(t(dout))
    return (out.detach().numpy(), rm.numpy(), rv.numpy(), tx.grad.numpy(), tg.grad.numpy(),
            tb.grad.numpy())


# --------------------------------------------------------------------------------------------
# Batch norm
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "train", "momentum", "eps"), [
    ((4, 3, 5, 5), True, 0.1, 1e-5),
    ((2, 4, 3, 6), True, 0.3, 1e-3),
    ((1, 2, 4, 4), True, 1.0, 1e-5),
    ((5, 2, 1, 1), True, 0.0, 1e-5),
    ((4, 3, 5, 5), False, 0.1, 1e-5),
    ((2, 4, 3, 6), False, 0.5, 1e-2),
])
def test_batchnorm_matches_torch(shape, train, momentum, eps):
    x, gamma, beta, state, dout = bn_data(shape)
    ref = torch_bn(x, gamma, beta, state, train, momentum, eps, dout)
    arrays = dict(state)
    before = {k: v.copy() for k, v in state.items()}
    out, cache = batchnorm2d_forward(x, gamma, beta, state, train=train, momentum=momentum,
                                     eps=eps)
    dx, dgamma, dbeta = batchnorm2d_backward(dout, cache)
    assert rel_error(out, ref[0]) < 1e-10
    for k, r in zip(("running_mean", "running_var"), ref[1:3]):
        assert state[k] is arrays[k]                      # updated in place, never replaced
        assert rel_error(state[k], r) < 1e-12
        if not train:
            assert np.array_equal(state[k], before[k])
    for got, r in zip((dx, dgamma, dbeta), ref[3:]):
        assert rel_error(got, r) < 1e-9


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients_match_numerical_gradients(train):
    x, gamma, beta, state, dout = bn_data((2, 3, 3, 2), seed=1)
    state0 = {k: v.copy() for k, v in state.items()}

    def loss():
        fresh = {k: v.copy() for k, v in state0.items()}   # training mode updates the state
        out, _ = batchnorm2d_forward(x, gamma, beta, fresh, train=train)
        return float(np.sum(out * dout))

    _, cache = batchnorm2d_forward(x, gamma, beta, state, train=train)
    dx, dgamma, dbeta = batchnorm2d_backward(dout, cache)
    for analytic, a in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        assert rel_error(analytic, numerical_gradient(lambda _: loss(), a)) < 1e-7


def test_batchnorm_running_statistics_follow_torch_over_several_batches():
    rng = np.random.default_rng(2)
    layer = torch.nn.BatchNorm2d(3, momentum=0.2, dtype=torch.float64)
    state = {"running_mean": np.zeros(3), "running_var": np.ones(3)}
    gamma, beta = np.ones(3), np.zeros(3)
    for _ in range(4):
        x = 3 * rng.standard_normal((8, 3, 4, 4)) + 1
        batchnorm2d_forward(x, gamma, beta, state, momentum=0.2)
        layer(t(x))
    assert rel_error(state["running_mean"], layer.running_mean.numpy()) < 1e-12
    assert rel_error(state["running_var"], layer.running_var.numpy()) < 1e-12
    x = rng.standard_normal((2, 3, 4, 4))
    layer.eval()
    out, _ = batchnorm2d_forward(x, gamma, beta, state, train=False)
    assert rel_error(out, layer(t(x)).detach().numpy()) < 1e-10


def test_batchnorm_normalises_each_channel_in_training():
    x, _, _, state, _ = bn_data((6, 2, 4, 4))
    out, _ = batchnorm2d_forward(x, np.ones(2), np.zeros(2), state)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-4)


def test_batchnorm_keeps_float32():
    x, gamma, beta, state, dout = bn_data((2, 3, 4, 4))
    state = {k: v.astype(np.float32) for k, v in state.items()}
    out, cache = batchnorm2d_forward(x.astype(np.float32), gamma.astype(np.float32),
                                     beta.astype(np.float32), state)
    dx, dgamma, _ = batchnorm2d_backward(dout.astype(np.float32), cache)
    assert out.dtype == dx.dtype == dgamma.dtype == np.float32
    assert state["running_var"].dtype == np.float32


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: {**a, "x": a["x"][0]}, r"x must be a NumPy array of shape \(N, C, H, W\)"),
    (lambda a: {**a, "gamma": np.ones(4)}, r"gamma must be a NumPy array of shape \(3,\)"),
    (lambda a: {**a, "beta": 0.0}, r"beta must be a NumPy array of shape \(3,\)"),
    (lambda a: {**a, "state": {}}, r"state must be a dict with the arrays 'running_mean'"),
    (lambda a: {**a, "state": {"running_mean": np.zeros(3), "running_var": np.ones((1, 3))}},
     r"state\['running_var'\] must be a NumPy array of shape \(3,\)"),
    (lambda a: {**a, "momentum": 1.5}, r"momentum must be in \[0, 1\]"),
    (lambda a: {**a, "eps": 0.0}, r"eps must be positive"),
    (lambda a: {**a, "x": a["x"][:1, :, :1, :1]}, r"more than one value per channel"),
])
def test_batchnorm_input_errors(change, message):
    x, gamma, beta, state, _ = bn_data((2, 3, 4, 4))
    args = change({"x": x, "gamma": gamma, "beta": beta, "state": state})
    with pytest.raises(ValueError, match=message):
        batchnorm2d_forward(**args)


def test_batchnorm_eval_accepts_a_single_value_per_channel():
    x, gamma, beta, state, _ = bn_data((1, 3, 1, 1))
    out, _ = batchnorm2d_forward(x, gamma, beta, state, train=False)
    assert out.shape == x.shape


def test_batchnorm_backward_rejects_a_wrong_dout():
    x, gamma, beta, state, _ = bn_data((2, 3, 4, 4))
    _, cache = batchnorm2d_forward(x, gamma, beta, state)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3, 4, 4\)"):
        batchnorm2d_backward(np.ones((2, 3, 4)), cache)


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_drops_a_fraction_p_and_scales_the_rest(p):
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 2, (100, 100))
    out, cache = dropout_forward(x, p, rng=np.random.default_rng(1))
    kept = out != 0
    assert abs((1 - kept.mean()) - p) < 6 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-15)
    dout = rng.standard_normal(x.shape)
    np.testing.assert_allclose(dropout_backward(dout, cache), dout * kept / (1 - p), rtol=1e-15)


def test_dropout_mask_is_reproducible_with_a_seeded_generator():
    x = np.ones((20, 30))
    a, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(7))
    b, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(7))
    c, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d, _ = dropout_forward(x, 0.5)          # rng=None: a fresh generator
    assert 0.3 < np.mean(d == 0) < 0.7


def test_dropout_expectation_is_preserved_like_torch():
    # torch's dropout draws another mask, but both keep E[out] = x
    x = np.full((400, 500), 3.0)
    out, _ = dropout_forward(x, 0.3, rng=np.random.default_rng(0))
    ref = F.dropout(t(x), 0.3, training=True).numpy()
    assert abs(out.mean() - 3.0) < 0.03 and abs(ref.mean() - 3.0) < 0.03
    assert set(np.unique(out)) == set(np.unique(ref)) == {0.0, 3.0 / 0.7}


@pytest.mark.parametrize(("p", "train"), [(0.5, False), (0.0, True), (0.0, False)])
def test_dropout_identity_in_eval_and_for_p_zero(p, train):
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    out, cache = dropout_forward(x, p, train=train, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert out is not x
    dout = np.ones_like(x)
    dx = dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx, dout)
    assert dx is not dout


def test_dropout_p_one_drops_everything():
    out, cache = dropout_forward(np.ones((4, 5)), 1.0, rng=np.random.default_rng(0))
    assert not np.any(out) and not np.any(dropout_backward(np.ones((4, 5)), cache))


def test_dropout_keeps_float32():
    x = np.ones((10, 10), dtype=np.float32)
    out, cache = dropout_forward(x, 0.5, rng=np.random.default_rng(0))
    assert out.dtype == np.float32
    assert dropout_backward(np.ones((10, 10), np.float32), cache).dtype == np.float32


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"p": -0.1}, ValueError, r"p is the probability of dropping a value and must be in \[0, 1\]"),
    ({"p": 1.5}, ValueError, r"must be in \[0, 1\]"),
    ({"p": 0.5, "rng": 3}, TypeError, r"rng must be a np.random.Generator"),
    ({"p": 0.5, "x": [1.0, 2.0]}, TypeError, r"x must be a NumPy array"),
])
def test_dropout_input_errors(kwargs, error, message):
    kwargs = {"x": np.ones(3), **kwargs}
    with pytest.raises(error, match=message):
        dropout_forward(**kwargs)


def test_dropout_backward_rejects_a_wrong_dout():
    _, cache = dropout_forward(np.ones((3, 4)), 0.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dout must have shape \(3, 4\)"):
        dropout_backward(np.ones((4, 3)), cache)


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------

CORRECT = {
    "check_batchnorm2d": [(batchnorm2d_forward, batchnorm2d_backward), B.make_batchnorm()],
    "check_dropout": [(dropout_forward, dropout_backward), B.make_dropout()],
}


@pytest.mark.parametrize(("name", "which"), [(n, i) for n in CORRECT for i in (0, 1)])
def test_correct_implementation_passes_with_one_line(name, which, capsys):
    getattr(checks, name)(*CORRECT[name][which])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"✓ {name}: ")


def test_check_names_are_exported():
    assert {"check_batchnorm2d", "check_dropout"} <= set(checks.__all__)


BN_BUGS = [
    ("running_var_biased", r"running_var uses the biased batch variance"),
    ("normalise_unbiased", r"normalised with the unbiased variance"),
    ("axis0", r"statistics over the wrong axes"),
    ("all_axes", r"statistics over the wrong axes"),
    ("eval_batch_stats", (r"case 3 of 6[\s\S]*evaluation mode \(train=False\) must normalise with "
                         r"state\['running_mean'\]")),
    ("eval_updates", r"evaluation mode \(train=False\) changed state\['running_mean'\]"),
    ("keras_momentum", r"momentum used the Keras way"),
    ("eps_outside", r"eps outside the square root"),
    ("state_replaced", r"state\['running_mean'\] was replaced by a new array"),
    ("backward_constants", r"dx treats the mean and the variance as constants"),
    ("no_variance_path", r"the gradient through the variance is missing"),
    ("backward_always_train", r"in evaluation mode the running mean and variance are constants"),
    ("dgamma_axis0", (r"dgamma has shape \(3, 5, 5\); expected \(3,\)[\s\S]*dgamma summed over "
                     r"the wrong axes")),
    ("dgamma_x", r"with the NORMALISED x_hat, not with x"),
    ("dbeta_keepdims", (r"dbeta has shape \(1, C, 1, 1\): sum over axes \(0, 2, 3\) "
                       r"without keepdims")),
    # issue 23: the running variance, the statistics used in training, dx's constant factors
    ("unbiased_over_n", r"unbiased factor uses N = 4 instead of m = N\*H\*W = 100"),
    ("unbiased_over_hw", r"unbiased factor uses H\*W = 25 instead of m = N\*H\*W = 100"),
    ("eps_in_running_var", r"eps was added to the running variance"),
    ("normalise_updated_running", r"normalised with the running statistics just updated"),
    ("normalise_updated_mean", r"normalised with the running statistics just updated"),
    ("var_path_half", r"the term through the variance has a wrong constant factor \(0\.5 times"),
    ("var_path_minus", r"the term through the variance has a wrong constant factor \(-1 times"),
    ("mean_path_over_n", r"the term through the mean divides by N = 4 instead of m = N\*H\*W"),
]

DROPOUT_BUGS = [
    ("not_scaled", r"not scaled \(non-inverted dropout\)"),
    ("keep_prob", r"p is the probability of DROPPING a value"),
    ("eval_scaled", r"scaled in evaluation mode"),
    ("eval_dropped", r"values were dropped with train=False"),
    ("new_mask_backward", r"the mask is drawn again in backward"),
    ("backward_not_scaled", r"dx is masked but not scaled"),
    ("global_random", r"draw the mask from the rng argument"),
    # p = 1 and float32 (issue 23)
    ("p_one_nan", (r"case 7 of 10 failed: x \(12, 5, 3, 3\) float64, p=1.0[\s\S]*out contains "
                   r"nan[\s\S]*with p = 1 every value is dropped and 1 / \(1 - p\) divides by "
                   r"zero: use the scale 0")),
    ("p_one_zero_division", (r"case 7 of 10[\s\S]*raised ZeroDivisionError[\s\S]*1 / \(1 - p\) "
                             r"divides by zero")),
    ("p_one_identity", r"case 7 of 10[\s\S]*outputs are not zero with p = 1"),
    ("p_one_backward_nan", r"case 7 of 10[\s\S]*dx contains nan or inf[\s\S]*scale 0"),
    ("float64_mask", (r"case 8 of 10 failed: x \(60, 40\) float32[\s\S]*out has dtype float64; "
                      r"expected float32[\s\S]*cast the mask")),
    ("backward_float64", r"case 8 of 10[\s\S]*dx has dtype float64; expected float32"),
]


@pytest.mark.parametrize(("check", "make", "bug", "phrase"),
                         [("check_batchnorm2d", B.make_batchnorm, *b) for b in BN_BUGS]
                         + [("check_dropout", B.make_dropout, *b) for b in DROPOUT_BUGS],
                         ids=[b[0] for b in BN_BUGS + DROPOUT_BUGS])
def test_typical_bug_is_named(check, make, bug, phrase, capsys):
    with pytest.raises(AssertionError) as info:
        getattr(checks, check)(*make(bug))
    message = str(info.value)
    assert message.startswith(f"{check}: case "), message
    assert re.search(phrase, message), message
    assert "✓" not in capsys.readouterr().out


def test_failure_shows_the_case_and_the_error_size():
    with pytest.raises(AssertionError) as info:
        checks.check_batchnorm2d(*B.make_batchnorm("keras_momentum"))
    message = str(info.value)
    assert "case 1 of 6 failed: train: x (4, 3, 5, 5), train=True, momentum=0.1" in message
    assert re.search(r"max rel\. error \d\.\de[+-]\d\d \(tolerance 1e-07\)", message)


def test_not_implemented_error_propagates():
    for name, (fwd, bwd) in ((n, c[0]) for n, c in CORRECT.items()):
        with pytest.raises(NotImplementedError):
            getattr(checks, name)(B.not_implemented, bwd)
        with pytest.raises(NotImplementedError):
            getattr(checks, name)(fwd, B.not_implemented)
