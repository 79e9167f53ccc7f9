"""Checks of the optimisers written in NumPy: SGD, RMSprop, Adam (lessons 03 and 04).

Each check builds the learner's class, takes a few steps on a small dict of float64 parameters
with random gradients, and compares the parameters after every step with ``torch.optim`` (the
class of the same name, float64) given the same gradients. When they differ it replays the
typical mistakes (written here in a few lines of NumPy, used only to name the bug) and says which
one the learner's numbers match.
"""

from __future__ import annotations

import numpy as np
import torch

from mnist_course._oracle import _single_thread
from mnist_course.checks._core import _Check, _fmt_shape, _rng

_SHAPES = {"w": (3, 4), "b": (5,)}


# --------------------------------------------------------------------------------------------
# The oracle: torch.optim, and the typical mistakes replayed in NumPy
# --------------------------------------------------------------------------------------------

@_single_thread
def _torch_trajectory(name: str, kwargs: dict, params0: dict, grads_seq: list) -> list:
    """Parameters after each step of ``torch.optim.<name>(**kwargs)`` (float64)."""
    tensors = {k: torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True)
               for k, v in params0.items()}
    opt = getattr(torch.optim, name)(list(tensors.values()), **kwargs)
    trajectory = []
    for grads in grads_seq:
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k].copy(), dtype=torch.float64)
        opt.step()
        trajectory.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    return trajectory


def _decayed(g, p, weight_decay: float, bug: str | None):
    """g + weight_decay * p, or one of the weight-decay mistakes."""
    factor = {"wd_sign": -1.0, "wd_ignored": 0.0, "wd_double": 2.0,
              "wd_decoupled": 0.0}.get(bug, 1.0)
    return g + factor * weight_decay * p


def _replay(kind: str, hp: dict, params0: dict, grads_seq: list, bug: str) -> list:
    """Parameters after each step of optimiser `kind` with hyper-parameters hp and one bug."""
    p = {k: v.copy() for k, v in params0.items()}
    lr, wd = hp.get("lr", {"RMSprop": 0.01, "Adam": 1e-3}.get(kind)), hp.get("weight_decay", 0.0)
    state: dict = {}
    t_global = 0
    trajectory = []
    for step, grads in enumerate(grads_seq, 1):
        for k, g in grads.items():
            g = _decayed(g, p[k], wd, bug)
            if kind == "SGD":
                mom = hp.get("momentum", 0.0)
                if mom and bug != "momentum_ignored":
                    if k not in state:
                        state[k] = (1 - mom) * g if bug == "ema_from_zero" else g.copy()
                    else:
                        damp = 1 - mom if bug in ("dampening", "ema_from_zero") else 1.0
                        state[k] = mom * state[k] + damp * g
                    g = state[k]
                update = lr * g
            elif kind == "RMSprop":
                a, eps = hp.get("alpha", 0.99), hp.get("eps", 1e-8)
                if k not in state and bug == "v_from_g2":
                    v = g * g
                else:
                    start = np.ones_like(g) if bug == "v_from_ones" else np.zeros_like(g)
                    v = state.get(k, start)
                    if bug == "alpha_swapped":
                        v = (1 - a) * v + a * g * g
                    elif bug == "no_one_minus_alpha":
                        v = a * v + g * g
                    else:
                        v = a * v + (1 - a) * g * g
                state[k] = np.sqrt(v) if bug == "sqrt_stored" else v
                if bug in ("bias_corrected", "bias_corrected_stored"):
                    v = v / (1 - a ** step)
                    if bug == "bias_corrected_stored":
                        state[k] = v
                denom = {"eps_inside": np.sqrt(v + eps), "no_sqrt": v + eps}.get(
                    bug, np.sqrt(v) + eps)
                update = lr * g / denom
            else:  # Adam
                b1, b2 = hp.get("betas", (0.9, 0.999))
                eps = hp.get("eps", 1e-8)
                t_global += 1
                t = {"t_per_key": t_global, "t_plus_one": step + 1,
                     "t_twice": 2 * step, "t_constant": 1}.get(bug, step)
                m, v = state.get(k, (np.zeros_like(g), np.zeros_like(g)))
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                state[k] = (m, v)
                c1, c2 = {"power_one_minus": ((1 - b1) ** t, (1 - b2) ** t),
                          "power_no_one_minus": (b1 ** t, b2 ** t),
                          "corrections_swapped": (1 - b2 ** t, 1 - b1 ** t),
                          "power_times": (1 - b1 * t, 1 - b2 * t)}.get(
                    bug, (1 - b1 ** t, 1 - b2 ** t))
                m_hat = m if bug in ("no_bias_correction", "no_m_correction") else m / c1
                v_hat = v if bug in ("no_bias_correction", "no_v_correction") else v / c2
                if bug == "corrected_stored":
                    state[k] = (m_hat, v_hat)
                denom = np.sqrt(v_hat + eps) if bug == "eps_inside" else np.sqrt(v_hat) + eps
                update = lr * g if bug == "sgd" else lr * m_hat / denom
            if bug == "wd_decoupled":
                update = update + lr * wd * p[k]
            p[k] = p[k] - update
        trajectory.append({k: v.copy() for k, v in p.items()})
    return trajectory


_WD_HINTS = {
    "wd_sign": "weight decay has the wrong sign: g = g + weight_decay * p pulls weights "
               "towards 0.",
    "wd_ignored": "weight_decay is ignored: add it to the gradient first, "
                  "g = g + weight_decay * p.",
    "wd_double": "weight decay is twice too strong: torch adds weight_decay * p to the gradient "
                 "(the gradient of weight_decay / 2 * ||p||²), not 2 * weight_decay * p.",
}

_HINTS = {
    "SGD": {
        "momentum_ignored": "momentum is ignored: keep a velocity per key, v = momentum * v + g, "
                            "and step p -= lr * v.",
        "dampening": "momentum with dampening (v = momentum * v + (1 - momentum) * g): torch's "
                     "SGD uses v = momentum * v + g.",
        "ema_from_zero": "the velocity is a running average that starts at 0 (v = momentum * v "
                         "+ (1 - momentum) * g): torch starts with v = g on the first step, "
                         "then v = momentum * v + g.",
        "wd_decoupled": "weight decay added after the momentum: add it to the gradient first "
                        "(g = g + weight_decay * p), then update the velocity.",
        **_WD_HINTS,
    },
    "RMSprop": {
        "eps_inside": "eps inside the square root: torch divides by sqrt(v) + eps.",
        "alpha_swapped": "alpha and 1 - alpha swapped: v = alpha * v + (1 - alpha) * g², alpha "
                         "is the weight of the old average.",
        "bias_corrected": "v is bias-corrected as in Adam: torch's RMSprop has no bias "
                          "correction, p -= lr * g / (sqrt(v) + eps).",
        "no_sqrt": "divided by v instead of its square root: p -= lr * g / (sqrt(v) + eps).",
        "v_from_g2": "the square average starts at g² on the first step: torch starts it at "
                     "zero, v = zeros, then v = alpha * v + (1 - alpha) * g² on every step, "
                     "the first one included.",
        "v_from_ones": "the square average starts at ones: start it at zeros "
                       "(np.zeros_like(p)).",
        "no_one_minus_alpha": "the new g² is added without the factor (1 - alpha): "
                              "v = alpha * v + (1 - alpha) * g².",
        "sqrt_stored": "the square root of v is stored as the running average: keep v itself "
                       "in self.square_avg and take sqrt(v) only for the update.",
        "bias_corrected_stored": "v is bias-corrected (as in Adam) and the corrected value is "
                                 "stored: torch's RMSprop has no bias correction; keep v = "
                                 "alpha * v + (1 - alpha) * g² and divide by sqrt(v) + eps.",
        "wd_decoupled": "weight decay applied to the weights directly (decoupled, p -= lr * wd * "
                        "p): torch adds it to the gradient first, g = g + weight_decay * p.",
        **_WD_HINTS,
    },
    "Adam": {
        "sgd": "each weight moves by lr * g (proportional to |g|): that is SGD, not Adam.",
        "no_bias_correction": "no bias correction? Then early steps are ~3x too large: "
                              "m̂ = m / (1 - β₁ᵗ), v̂ = v / (1 - β₂ᵗ).",
        "no_v_correction": "v is not bias-corrected: v̂ = v / (1 - β₂ᵗ).",
        "no_m_correction": "m is not bias-corrected: m̂ = m / (1 - β₁ᵗ).",
        "t_per_key": "t is counted once per key instead of once per step: increment it once per "
                     "step() call, before the loop over the parameters.",
        "eps_inside": "eps inside the square root: divide by sqrt(v̂) + eps.",
        "corrected_stored": "the bias-corrected m̂ and v̂ are stored as the running averages: "
                            "store m and v (self.m[k] = m) and compute m̂ = m / (1 - β₁ᵗ), "
                            "v̂ = v / (1 - β₂ᵗ) in local variables, for this step only.",
        "t_plus_one": "the step count is one ahead (t = 2 on the first step: it starts at 1 and "
                      "is incremented before the update, or is incremented twice): t must be 1 "
                      "on the first step, so start at 0 and add 1 once at the start of step().",
        "t_constant": "t is 1 on every step (set inside step() instead of counted): keep it in "
                      "self.t, start at 0 in __init__ and add 1 at the start of each step().",
        "t_twice": "t grows by 2 per step (incremented in two places?): add 1 once per "
                   "step() call.",
        "power_one_minus": "wrong power in the bias correction: (1 - β)ᵗ instead of 1 - βᵗ; "
                           "m̂ = m / (1 - β₁ ** t), v̂ = v / (1 - β₂ ** t).",
        "power_no_one_minus": "the bias correction divides by βᵗ instead of 1 - βᵗ: "
                              "m̂ = m / (1 - β₁ ** t), v̂ = v / (1 - β₂ ** t).",
        "power_times": "the bias correction uses β * t instead of β to the power t: "
                       "m̂ = m / (1 - β₁ ** t), v̂ = v / (1 - β₂ ** t) (** is the power).",
        "corrections_swapped": "the two corrections are swapped: m̂ = m / (1 - β₁ᵗ) with β₁, "
                               "v̂ = v / (1 - β₂ᵗ) with β₂.",
        "wd_decoupled": "weight decay applied as in AdamW (decoupled, p -= lr * wd * p): Adam "
                        "adds it to the gradient first, g = g + weight_decay * p (L2).",
        **_WD_HINTS,
    },
}


def _bugs_for(kind: str, hp: dict) -> list:
    """The mistakes that change the result for these hyper-parameters."""
    bugs = [b for b in _HINTS[kind] if not b.startswith("wd")]
    if kind == "SGD":
        bugs = bugs if hp.get("momentum") else []
    if hp.get("weight_decay"):
        bugs += [b for b in _HINTS[kind] if b.startswith("wd")]
    return bugs


# --------------------------------------------------------------------------------------------
# Running the learner's optimiser
# --------------------------------------------------------------------------------------------

def _random_grads(rng, steps: int, scaled: bool) -> list:
    """Random gradients; scaled: each key's gradient times 10**k, k in -3..2, a new k per step."""
    return [{k: rng.standard_normal(s) * (10.0 ** int(rng.integers(-3, 3)) if scaled else 1.0)
             for k, s in _SHAPES.items()} for _ in range(steps)]


def _describe_hp(hp: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.items())


_STATE_NAMES = {"SGD": "velocity", "RMSprop": "square average", "Adam": "moment"}


def _state_arrays(obj, path: str = "self", depth: int = 0):
    """(path, array) for every NumPy array the optimiser keeps: attributes, dict values, items
    of lists and tuples, two levels deep."""
    if isinstance(obj, np.ndarray):
        yield path, obj
        return
    if depth > 2:
        return
    if isinstance(obj, dict):
        items = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    elif depth == 0:
        items = [(f"self.{k}", v) for k, v in vars(obj).items()] if hasattr(obj, "__dict__") \
            else []
    else:
        return
    for sub, value in items:
        yield from _state_arrays(value, sub, depth + 1)


def _aliasing(chk: _Check, opt, kind: str, grads: dict, step: int) -> None:
    """Fail when the optimiser's state shares memory with the caller's gradient arrays."""
    __tracebackhide__ = True
    for path, arr in _state_arrays(opt):
        for k, g in grads.items():
            if isinstance(g, np.ndarray) and np.shares_memory(arr, g):
                what = _STATE_NAMES[kind]
                chk.fail(f"after step {step}, {path} is the caller's gradient array grads[{k!r}] "
                         f"(they share memory).",
                         f"Likely bug: the {what} starts as the gradient array itself "
                         f"(e.g. self.velocity[k] = g, or self.square_avg[k] = grads[k] then "
                         f"*= in place) without a copy; updating it in place "
                         f"later (v *= momentum; v += g) writes into the caller's gradients, and "
                         f"whoever refills or zeroes the gradient buffer changes your {what}. "
                         f"Start from a copy: g.copy() (or np.array(g)), or build new arrays "
                         f"(v = momentum * v + g).")


_NONFINITE = {
    "Adam": ("is t 0 when the corrections are computed? Then 1 - β₁ᵗ = 0 and m̂ = m / 0. "
             "Increment t at the START of step() (so the first step has t = 1), before the "
             "loop over the parameters."),
    "RMSprop": ("a division by zero: divide by sqrt(v) + eps, with v = alpha * v + (1 - alpha) "
                "* g² starting from zeros."),
}


def _run(chk: _Check, cls, kind: str, hp: dict, params0: dict, grads_seq: list,
         signature: str, fallback: str | None = None) -> None:
    """Step the learner's optimiser and compare the parameters with torch after every step."""
    __tracebackhide__ = True
    opt = chk.call(cls, signature=signature, **hp)
    if not callable(getattr(opt, "step", None)):
        chk.fail(f"{getattr(cls, '__name__', 'your class')}(...) has no method step(params, "
                 f"grads).")
    ref = _torch_trajectory(kind, hp, params0, grads_seq)
    params = {k: v.copy() for k, v in params0.items()}
    arrays = dict(params)
    earlier = []                                   # (step, grads given, their copies)
    trajectory = []                                # the learner's params after each step
    for step, grads in enumerate(grads_seq, 1):
        grads = {k: g.copy() for k, g in grads.items()}
        before = {k: g.copy() for k, g in grads.items()}
        chk.call(opt.step, params, grads, signature="step(params, grads)")
        _aliasing(chk, opt, kind, grads, step)
        for k in grads:
            chk.unchanged(before[k], grads[k],
                          f"step() changed grads[{k!r}] in place (e.g. g += weight_decay * p): "
                          f"leave the gradients alone and compute a new array, "
                          f"g = g + weight_decay * p.")
            if params.get(k) is not arrays[k]:
                chk.fail(f"step() replaced params[{k!r}] by a new array (params[k] = params[k] "
                         f"- ...): update it in place, params[k] -= ..., because the network "
                         f"holds references to these arrays.")
        for old_step, old_grads, old_before in earlier:
            for k in old_grads:
                if not np.array_equal(old_grads[k], old_before[k]):
                    chk.fail(f"step {step} changed grads[{k!r}] of step {old_step}, an array "
                             f"the optimiser should no longer touch.",
                             f"Likely bug: the {_STATE_NAMES[kind]} kept the caller's gradient "
                             f"array from step {old_step} (self.velocity[k] = g without a copy) "
                             f"and was then updated in place (v *= momentum; v += g), writing "
                             f"into the caller's gradients. Start from a copy, g.copy().")
        earlier.append((step, grads, before))
        trajectory.append({k: chk.array(params[k], f"params[{k!r}] after step {step}", p0.shape)
                           .copy() for k, p0 in params0.items()})
    for step, got_params in enumerate(trajectory, 1):
        for k in params0:
            chk.compare(f"params[{k!r}] after step {step}", got_params[k], ref[step - 1][k],
                        alternatives=_alternatives(kind, hp, params0, grads_seq, trajectory,
                                                   step, k),
                        fallback_hint=fallback, nonfinite_hint=_nonfinite_hint(kind, step))


def _nonfinite_hint(kind: str, step: int) -> str | None:
    if kind == "Adam" and step == 1:
        return ("is t 0 when the corrections are computed (incremented after the update)? "
                "Then 1 - β₁ᵗ = 0 and m̂ = m / 0. Increment t at the START of step() (so the "
                "first step has t = 1), before the loop over the parameters.")
    if kind == "Adam":
        return (f"nan or inf from step {step} on: is the correction 1 - β * t instead of "
                f"1 - β ** t? From t = 2 on it is negative, and the square root of a negative "
                f"v̂ is nan. m̂ = m / (1 - β₁ ** t), v̂ = v / (1 - β₂ ** t).")
    return _NONFINITE.get(kind)


def _alternatives(kind, hp, params0, grads_seq, trajectory, step, k) -> list:
    """(value at this step, hint) pairs; the mistakes whose replay matches the learner's
    whole trajectory come first (two mistakes may agree on the first steps only)."""
    bugs = _bugs_for(kind, hp)
    with np.errstate(all="ignore"):
        replays = {b: _replay(kind, hp, params0, grads_seq[:len(trajectory)], b) for b in bugs}

    def whole(b) -> bool:
        with np.errstate(all="ignore"):
            return all(np.all(np.isfinite(r[key])) and
                       np.allclose(got[key], r[key], rtol=1e-6, atol=1e-12)
                       for got, r in zip(trajectory, replays[b]) for key in got)
    ordered = [b for b in bugs if whole(b)] + [b for b in bugs if not whole(b)]
    return [(replays[b][step - 1][k], _HINTS[kind][b]) for b in ordered]


def _check_optimizer(name: str, cls, kind: str, cases: list, signature: str) -> None:
    chk = _Check(name, len(cases))
    rng = _rng(40)
    for i, (hp, steps, scaled) in enumerate(cases, 1):
        chk.case(i, f"{kind}({_describe_hp(hp)}), {steps} steps, params "
                    + ", ".join(f"{k!r} {_fmt_shape(s)}" for k, s in _SHAPES.items())
                    + (", gradients from 1e-3 to 1e2" if scaled else ""))
        params0 = {k: rng.standard_normal(s) for k, s in _SHAPES.items()}
        _run(chk, cls, kind, hp, params0, _random_grads(rng, steps, scaled), signature)
    chk.passed()


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------

def check_sgd(cls) -> None:
    """Check ``SGD(lr, momentum=0.0, weight_decay=0.0)`` and its ``.step(params, grads)`` against
    ``torch.optim.SGD`` (float64, several steps, with and without momentum and weight decay)."""
    cases = [({"lr": 0.1}, 3, False),
             ({"lr": 0.05, "momentum": 0.9}, 5, False),
             ({"lr": 0.1, "weight_decay": 0.1}, 3, False),
             ({"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05}, 5, False)]
    _check_optimizer("check_sgd", cls, "SGD", cases,
                     "SGD(lr, momentum=0.0, weight_decay=0.0) with .step(params, grads)")


def check_rmsprop(cls) -> None:
    """Check ``RMSprop(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0)`` and its
    ``.step(params, grads)`` against ``torch.optim.RMSprop`` (float64, several steps)."""
    cases = [({"lr": 0.01}, 3, True),
             ({"lr": 0.01, "alpha": 0.9, "eps": 1e-3}, 4, False),
             ({"lr": 0.005, "alpha": 0.95, "eps": 1e-6, "weight_decay": 0.1}, 4, True)]
    _check_optimizer("check_rmsprop", cls, "RMSprop", cases,
                     "RMSprop(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0) with "
                     ".step(params, grads)")


def check_adam(cls, weight_decay: bool = False) -> None:
    """Check ``Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)`` and its ``.step(params, grads)``
    against ``torch.optim.Adam`` (float64).

    Case 1 is worked out by hand: with a constant gradient the bias-corrected averages are
    exactly m̂ = g and v̂ = g², so every step moves each weight by lr, against the sign of its
    gradient. Then a few steps with random gradients of very different sizes.
    weight_decay=True also checks the ``weight_decay`` argument (L2 added to the gradient, as
    torch's Adam; not AdamW).
    """
    signature = ("Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8"
                 + (", weight_decay=0.0" if weight_decay else "") + ") with .step(params, grads)")
    cases = [({"lr": 1e-2}, 5, True),
             ({"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-3}, 4, False)]
    if weight_decay:
        cases += [({"lr": 0.01, "weight_decay": 0.1}, 4, True),
                  ({"lr": 0.02, "betas": (0.85, 0.995), "eps": 1e-6, "weight_decay": 0.05}, 3,
                   True)]
    chk = _Check("check_adam", 1 + len(cases))
    lr = 0.1
    chk.case(1, f"Adam(lr={lr}), 2 steps with the same gradient: with a constant gradient "
                f"m̂ = g and v̂ = g², so each step moves every weight by lr = {lr}, against "
                f"the sign of its gradient")
    params0 = {"w": np.array([1.0, -2.0, 0.5]), "b": np.array([0.0])}
    g = {"w": np.array([0.5, -1.0, 1e-3]), "b": np.array([4.0])}
    _run(chk, cls, "Adam", {"lr": lr}, params0, [g, g], signature,
         fallback="is t counted once per step() call, and used in both corrections? Keep one "
                  "m and one v per key.")
    rng = _rng(41)
    for i, (hp, steps, scaled) in enumerate(cases, 2):
        chk.case(i, f"Adam({_describe_hp(hp)}), {steps} steps, params "
                    + ", ".join(f"{k!r} {_fmt_shape(s)}" for k, s in _SHAPES.items())
                    + (", gradients from 1e-3 to 1e2" if scaled else ""))
        params0 = {k: rng.standard_normal(s) for k, s in _SHAPES.items()}
        _run(chk, cls, "Adam", hp, params0, _random_grads(rng, steps, scaled), signature)
    chk.passed()
