"""The NumPy optimisers (mnist_course.optim) against torch.optim, and their checks."""

from __future__ import annotations

import itertools
import re

import buggy_regularization as B
import numpy as np
import pytest
import torch

from mnist_course import checks
from mnist_course.optim import SGD, Adam, RMSprop


def trajectories(make, torch_cls, kwargs, steps=6, seed=0, scaled=True):
    """(ours, torch's): the parameters after each of `steps` steps with the same gradients."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt, topt = make(**kwargs), torch_cls(list(tensors.values()), **kwargs)
    ours, theirs = [], []
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape) * (10.0 ** rng.integers(-3, 3) if scaled else 1)
                 for k, v in params.items()}
        opt.step(params, grads)
        for k, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[k])
        topt.step()
        ours.append({k: v.copy() for k, v in params.items()})
        theirs.append({k: v.detach().numpy().copy() for k, v in tensors.items()})
    return ours, theirs


def assert_same(ours, theirs, tol=1e-9):
    for step, (a, b) in enumerate(zip(ours, theirs), 1):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=1e-12,
                                       err_msg=f"{k} after step {step}")


def grid(**options):
    return [dict(zip(options, values)) for values in itertools.product(*options.values())]


# --------------------------------------------------------------------------------------------
# Trajectories against torch.optim (float64)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", grid(lr=[0.05], momentum=[0.0, 0.9],
                                        weight_decay=[0.0, 0.01]), ids=str)
def test_sgd_matches_torch(kwargs):
    assert_same(*trajectories(SGD, torch.optim.SGD, kwargs, scaled=False))


@pytest.mark.parametrize("kwargs", grid(lr=[0.01], alpha=[0.99, 0.9], eps=[1e-8, 1e-3],
                                        weight_decay=[0.0, 0.1]), ids=str)
def test_rmsprop_matches_torch(kwargs):
    assert_same(*trajectories(RMSprop, torch.optim.RMSprop, kwargs))


@pytest.mark.parametrize("kwargs", grid(lr=[0.01], betas=[(0.9, 0.999), (0.8, 0.99)],
                                        eps=[1e-8, 1e-3], weight_decay=[0.0, 0.1]), ids=str)
def test_adam_matches_torch(kwargs):
    assert_same(*trajectories(Adam, torch.optim.Adam, kwargs))


@pytest.mark.parametrize(("cls", "torch_cls"), [(SGD, torch.optim.SGD),
                                                (RMSprop, torch.optim.RMSprop),
                                                (Adam, torch.optim.Adam)])
def test_defaults_match_torch(cls, torch_cls):
    kwargs = {"lr": 0.1} if cls is SGD else {}
    assert_same(*trajectories(cls, torch_cls, kwargs, steps=3))


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9, weight_decay=0.1),
                                  lambda: RMSprop(weight_decay=0.1),
                                  lambda: Adam(weight_decay=0.1)])
def test_step_updates_in_place_and_leaves_grads_alone(make):
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 2)), "h": rng.standard_normal(4).astype(np.float32)}
    arrays = dict(params)
    before = {k: v.copy() for k, v in params.items()}
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    grads_before = {k: g.copy() for k, g in grads.items()}
    opt = make()
    for _ in range(2):
        opt.step(params, grads)
    for k, value in params.items():
        assert value is arrays[k]
        assert not np.array_equal(value, before[k])
        np.testing.assert_array_equal(grads[k], grads_before[k])
    assert params["h"].dtype == np.float32


def test_adam_first_step_moves_every_weight_by_lr():
    params = {"w": np.zeros(4)}
    g = np.array([1e-4, -1.0, 1e3, -1e5])
    Adam(lr=0.01).step(params, {"w": g})
    np.testing.assert_allclose(params["w"], -0.01 * np.sign(g), rtol=1e-3)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SGD(0), r"lr must be a positive learning rate"),
    (lambda: SGD(-1e-3), r"lr must be a positive learning rate"),
    (lambda: SGD(0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda: SGD(0.1, weight_decay=-1), r"weight_decay must be >= 0"),
    (lambda: RMSprop(alpha=1.0), r"alpha must be in \[0, 1\)"),
    (lambda: RMSprop(eps=-1e-8), r"eps must be >= 0"),
    (lambda: RMSprop(lr=0), r"lr must be a positive"),
    (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
    (lambda: Adam(betas=(-0.1, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
    (lambda: Adam(betas=0.9), r"betas must be a pair"),
    (lambda: Adam(weight_decay=-0.1), r"weight_decay must be >= 0"),
])
def test_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("cls", [SGD, RMSprop, Adam])
def test_step_errors_name_the_key(cls):
    opt = cls(lr=0.1)
    params = {"w": np.zeros((2, 3))}
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(3,\); expected \(2, 3\)"):
        opt.step(params, {"w": np.zeros(3)})
    with pytest.raises(KeyError, match=r"grads has the key 'v', which params lacks"):
        opt.step(params, {"v": np.zeros((2, 3))})
    with pytest.raises(TypeError, match=r"params\['w'\] must be a NumPy array"):
        opt.step({"w": [0.0, 1.0]}, {"w": np.zeros(2)})


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------

CORRECT = [
    ("check_sgd", SGD, {}), ("check_sgd", B.make_sgd(), {}),
    ("check_rmsprop", RMSprop, {}), ("check_rmsprop", B.make_rmsprop(), {}),
    ("check_adam", Adam, {}), ("check_adam", Adam, {"weight_decay": True}),
    ("check_adam", B.make_adam(), {"weight_decay": True}),
    ("check_adam", B.make_adam(weight_decay=False), {}),      # lesson 03's Adam
]


@pytest.mark.parametrize(("name", "cls", "kwargs"), CORRECT,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(CORRECT)])
def test_correct_optimizer_passes_with_one_line(name, cls, kwargs, capsys):
    getattr(checks, name)(cls, **kwargs)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"✓ {name}: ")


def test_check_names_are_exported():
    assert {"check_sgd", "check_rmsprop", "check_adam"} <= set(checks.__all__)


# (check, class, check kwargs, phrase the message must contain)
BUGS = [
    ("sgd dampening", "check_sgd", B.make_sgd("dampening"), {}, r"momentum with dampening"),
    ("sgd velocity from 0", "check_sgd", B.make_sgd("ema_from_zero"), {},
     r"running average that starts at 0"),
    ("sgd momentum ignored", "check_sgd", B.make_sgd("momentum_ignored"), {},
     r"momentum is ignored"),
    ("sgd weight decay sign", "check_sgd", B.make_sgd("wd_sign"), {},
     r"case 3 of 4[\s\S]*weight decay has the wrong sign"),
    ("sgd weight decay doubled", "check_sgd", B.make_sgd("wd_double"), {},
     r"weight decay is twice too strong"),
    ("sgd weight decay after momentum", "check_sgd", B.make_sgd("wd_after_momentum"), {},
     r"case 4 of 4[\s\S]*weight decay added after the momentum"),
    ("sgd grads modified", "check_sgd", B.make_sgd("grads_modified"), {},
     r"step\(\) changed grads\['w'\] in place"),
    ("sgd not in place", "check_sgd", B.make_sgd("not_in_place"), {},
     r"step\(\) replaced params\['w'\] by a new array"),
    ("rmsprop eps inside", "check_rmsprop", B.make_rmsprop("eps_inside"), {},
     r"eps inside the square root"),
    ("rmsprop alpha swapped", "check_rmsprop", B.make_rmsprop("alpha_swapped"), {},
     r"alpha and 1 - alpha swapped"),
    ("rmsprop bias corrected", "check_rmsprop", B.make_rmsprop("bias_corrected"), {},
     r"no bias correction"),
    ("rmsprop no sqrt", "check_rmsprop", B.make_rmsprop("no_sqrt"), {},
     r"divided by v instead of its square root"),
    ("rmsprop weight decay sign", "check_rmsprop", B.make_rmsprop("wd_sign"), {},
     r"weight decay has the wrong sign"),
    ("adam no bias correction", "check_adam", B.make_adam("no_bias_correction"), {},
     (r"case 1 of 3[\s\S]*each step moves every weight by lr[\s\S]*no bias correction\? Then "
     r"early steps are ~3x too large")),
    ("adam no m correction", "check_adam", B.make_adam("no_m_correction"), {},
     r"m is not bias-corrected"),
    ("adam no v correction", "check_adam", B.make_adam("no_v_correction"), {},
     r"v is not bias-corrected"),
    ("adam t per key", "check_adam", B.make_adam("t_per_key"), {},
     r"params\['b'\] after step 1[\s\S]*t is counted once per key instead of once per step"),
    ("adam eps inside", "check_adam", B.make_adam("eps_inside"), {},
     r"eps inside the square root"),
    ("adam is sgd", "check_adam", B.make_adam("sgd"), {}, r"that is SGD, not Adam"),
    ("adam not in place", "check_adam", B.make_adam("not_in_place"), {},
     r"update it in place, params\[k\] -= "),
    ("adamw", "check_adam", B.make_adam("adamw"), {"weight_decay": True},
     r"case 4 of 5[\s\S]*weight decay applied as in AdamW"),
    ("adam weight decay sign", "check_adam", B.make_adam("wd_sign"), {"weight_decay": True},
     r"weight decay has the wrong sign"),
    # issue 23: aliasing and bookkeeping
    ("sgd velocity aliases the gradient", "check_sgd", B.make_sgd("velocity_alias"), {},
     (r"case 2 of 4[\s\S]*after step 1, self\.v\['w'\] is the caller's gradient array "
      r"grads\['w'\][\s\S]*Start from a copy")),
    ("sgd velocity defaults to the gradient", "check_sgd",
     B.make_sgd("velocity_alias_setdefault"), {},
     r"case 2 of 4[\s\S]*self\.v\['w'\] is the caller's gradient array"),
    ("sgd velocity kept outside aliases the gradient", "check_sgd",
     B.make_sgd("velocity_alias_outside"), {},
     (r"case 2 of 4[\s\S]*step 2 changed grads\['w'\] of step 1[\s\S]*kept the caller's gradient "
      r"array from step 1")),
    ("rmsprop average aliases the gradient", "check_rmsprop", B.make_rmsprop("alias"), {},
     r"after step 1, self\.sq\['w'\] is the caller's gradient array grads\['w'\]"),
    ("rmsprop v from g squared", "check_rmsprop", B.make_rmsprop("v_from_g2"), {},
     r"starts at g² on the first step"),
    ("rmsprop v from ones", "check_rmsprop", B.make_rmsprop("v_from_ones"), {},
     r"starts at ones"),
    ("rmsprop no 1 - alpha", "check_rmsprop", B.make_rmsprop("no_one_minus_alpha"), {},
     r"without the factor \(1 - alpha\)"),
    ("rmsprop sqrt stored", "check_rmsprop", B.make_rmsprop("sqrt_stored"), {},
     r"square root of v is stored"),
    ("rmsprop corrected v stored", "check_rmsprop", B.make_rmsprop("bias_corrected_stored"),
     {}, r"corrected value is stored"),
    ("adam corrected moments stored", "check_adam", B.make_adam("corrected_stored"), {},
     r"case 1 of 3[\s\S]*after step 2[\s\S]*m̂ and v̂ are stored as the running averages"),
    ("adam t one ahead", "check_adam", B.make_adam("t_plus_one"), {},
     r"step count is one ahead"),
    ("adam t counted after the update", "check_adam", B.make_adam("t_after"), {},
     r"contains inf or nan[\s\S]*is t 0 when the corrections are computed"),
    ("adam t twice", "check_adam", B.make_adam("t_twice"), {}, r"t grows by 2 per step"),
    ("adam t constant", "check_adam", B.make_adam("t_constant"), {}, r"t is 1 on every step"),
    ("adam power (1 - b)^t", "check_adam", B.make_adam("power_one_minus"), {},
     r"wrong power in the bias correction: \(1 - β\)ᵗ"),
    ("adam power b^t", "check_adam", B.make_adam("power_no_one_minus"), {},
     r"divides by βᵗ instead of 1 - βᵗ"),
    ("adam power b * t", "check_adam", B.make_adam("power_times"), {},
     r"after step 2 contains inf or nan[\s\S]*1 - β \* t instead of 1 - β \*\* t"),
    ("adam corrections swapped", "check_adam", B.make_adam("corrections_swapped"), {},
     r"the two corrections are swapped"),
    ("adam without weight_decay", "check_adam", B.make_adam(weight_decay=False),
     {"weight_decay": True},
     (r"raised TypeError[\s\S]*expected signature is Adam\(lr=1e-3, betas=\(0.9, 0.999\), "
     r"eps=1e-8, weight_decay=0.0\)")),
]


@pytest.mark.parametrize(("check", "cls", "kwargs", "phrase"), [b[1:] for b in BUGS],
                         ids=[b[0] for b in BUGS])
def test_typical_bug_is_named(check, cls, kwargs, phrase, capsys):
    with pytest.raises(AssertionError) as info:
        getattr(checks, check)(cls, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{check}: case "), message
    assert re.search(phrase, message), message
    assert "✓" not in capsys.readouterr().out


def test_failure_shows_the_step_and_the_error_size():
    with pytest.raises(AssertionError) as info:
        checks.check_rmsprop(B.make_rmsprop("alpha_swapped"))
    message = str(info.value)
    assert "case 1 of 3 failed: RMSprop(lr=0.01), 3 steps" in message
    assert re.search(r"params\['w'\] after step 1: max rel\. error \d\.\de[+-]\d\d "
                     r"\(tolerance 1e-07\)", message)


@pytest.mark.parametrize("name", ["check_sgd", "check_rmsprop", "check_adam"])
def test_not_implemented_error_propagates(name):
    with pytest.raises(NotImplementedError):
        getattr(checks, name)(B.NotImplementedOptimizer)
