"""Correct and deliberately buggy batch norm, dropout and optimisers, for the check tests.

The correct versions are written here again (not imported from mnist_course), in a different
form: batch norm's backward goes step by step through the graph, the optimisers are written the
way a learner would. Each buggy version holds one typical mistake, chosen by name; the tests
assert that the check names it.
"""

from __future__ import annotations

import numpy as np

AXES = (0, 2, 3)


def _c(v):
    return v[None, :, None, None]


# --------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------

def make_batchnorm(bug: str | None = None):
    """(forward, backward) of batch norm with one named bug (None: correct)."""
    axes = AXES
    if bug == "axis0":
        axes = (0,)
    elif bug == "all_axes":
        axes = (0, 1, 2, 3)

    def forward(x, gamma, beta, state, train=True, momentum=0.1, eps=1e-5):
        if train or bug == "eval_batch_stats":
            mu = x.mean(axis=axes)
            var = x.var(axis=axes, ddof=1 if bug == "normalise_unbiased" else 0)
            if train or bug == "eval_updates":
                stat_var = x.var(axis=axes) if bug == "running_var_biased" \
                    else x.var(axis=axes, ddof=1)
                if bug == "unbiased_over_n":                  # n / (n - 1) with n = N only
                    stat_var = x.var(axis=axes) * x.shape[0] / (x.shape[0] - 1)
                elif bug == "unbiased_over_hw":
                    hw = x.shape[2] * x.shape[3]
                    stat_var = x.var(axis=axes) * hw / (hw - 1)
                elif bug == "eps_in_running_var":
                    stat_var = stat_var + eps
                for key, stat in (("running_mean", mu), ("running_var", stat_var)):
                    if bug == "keras_momentum":
                        new = momentum * state[key] + (1 - momentum) * stat
                    else:
                        new = (1 - momentum) * state[key] + momentum * stat
                    if bug == "state_replaced":
                        state[key] = new
                    else:
                        state[key][...] = new
        else:
            mu, var = state["running_mean"], state["running_var"]
            if bug == "eval_updates":
                state["running_mean"] *= 1 - momentum
                state["running_mean"] += momentum * x.mean(axis=axes)
        if train and bug in ("normalise_updated_running", "normalise_updated_mean"):
            mu = state["running_mean"].copy()          # the statistics just updated
            if bug == "normalise_updated_running":
                var = state["running_var"].copy()
        if axes == AXES or np.ndim(mu) == 1:
            mu_b, var_b = _c(mu), _c(var)
        else:
            mu_b, var_b = mu, var
        std = np.sqrt(var_b) + eps if bug == "eps_outside" else np.sqrt(var_b + eps)
        xc = x - mu_b
        x_hat = xc / std
        out = _c(gamma) * x_hat + _c(beta)
        return out, (x, xc, std, x_hat, gamma, train)

    def backward(dout, cache):
        x, xc, std, x_hat, gamma, train = cache
        m = x.shape[0] * x.shape[2] * x.shape[3]
        dbeta = dout.sum(axis=AXES)
        dgamma = (dout * (x if bug == "dgamma_x" else x_hat)).sum(axis=AXES)
        if bug == "dgamma_axis0":
            dgamma = (dout * x_hat).sum(axis=0)
        if bug == "dbeta_keepdims":
            dbeta = dout.sum(axis=AXES, keepdims=True)
        dx_hat = dout * _c(gamma)
        if (not train and bug != "backward_always_train") or bug == "backward_constants":
            return dx_hat / std, dgamma, dbeta
        # step by step: x_hat = xc / std, std = sqrt(var + eps), var = mean(xc²), xc = x - mu
        dxc = dx_hat / std
        dstd = -(dx_hat * xc / std ** 2).sum(axis=AXES, keepdims=True)
        dvar = dstd / (2 * std)
        factor = {"var_path_half": 1.0, "var_path_minus": -2.0}.get(bug, 2.0)
        if bug == "mean_path_over_n":
            m_mean = x.shape[0]
        else:
            m_mean = m
        if bug != "no_variance_path":
            dxc = dxc + dvar * factor * xc / m
        dmu = -dxc.sum(axis=AXES, keepdims=True)
        dx = dxc + dmu / m_mean
        return dx, dgamma, dbeta

    forward.__name__ = f"batchnorm2d_forward_{bug or 'correct'}"
    backward.__name__ = f"batchnorm2d_backward_{bug or 'correct'}"
    return forward, backward


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------

def make_dropout(bug: str | None = None):
    """(forward, backward) of inverted dropout with one named bug (None: correct)."""

    def forward(x, p, train=True, rng=None):
        if not train and bug not in ("eval_dropped", "eval_scaled"):
            return x.copy(), (None, p)
        if not train and bug == "eval_scaled":
            return x / (1 - p), (None, p)
        if rng is None:
            rng = np.random.default_rng()
        if bug == "global_random":
            u = np.random.random(x.shape)
        else:
            u = rng.random(x.shape)
        if bug == "keep_prob":
            mask = (u < p) / p
        elif bug == "not_scaled":
            mask = (u >= p) * 1.0
        elif bug == "p_one_nan":                 # 0 / 0 when p = 1
            mask = (u >= p) / (1 - p)
        elif bug == "p_one_zero_division":       # a Python float: ZeroDivisionError
            mask = (u >= p) * (1.0 / (1.0 - p))
        elif bug == "p_one_identity":            # `if p in (0, 1)`: nothing dropped at p = 1
            mask = np.ones_like(u) if p == 1 else (u >= p) / (1 - p)
        else:
            mask = (u >= p) * (0.0 if p == 1 else 1 / (1 - p))
        if bug not in ("float64_mask", "p_one_nan", "p_one_zero_division", "p_one_identity"):
            mask = mask.astype(x.dtype)
        return x * mask, (mask, p)

    def backward(dout, cache):
        mask, p = cache
        if mask is None:
            return dout.copy()
        if bug == "new_mask_backward":
            mask = (np.random.default_rng().random(dout.shape) >= p) / (1 - p)
        if bug == "backward_not_scaled":
            mask = mask != 0
        if bug == "p_one_backward_nan":          # forward is right, backward divides again
            return dout * (mask != 0) / (1 - p)
        if bug == "backward_float64":
            return dout * mask.astype(np.float64)
        return dout * mask

    forward.__name__ = f"dropout_forward_{bug or 'correct'}"
    backward.__name__ = f"dropout_backward_{bug or 'correct'}"
    return forward, backward


# --------------------------------------------------------------------------------------------
# Optimisers
# --------------------------------------------------------------------------------------------

def make_sgd(bug: str | None = None):
    outside = {}                                     # velocities kept outside the instance

    class SGD:
        def __init__(self, lr, momentum=0.0, weight_decay=0.0):
            self.lr, self.momentum, self.wd = lr, momentum, weight_decay
            self.v = {}

        def step(self, params, grads):
            for k in params:
                g = grads[k]
                if bug == "grads_modified":
                    g += self.wd * params[k]
                elif bug == "wd_sign":
                    g = g - self.wd * params[k]
                elif bug == "wd_double":
                    g = g + 2 * self.wd * params[k]
                elif bug != "wd_after_momentum" and (self.wd or not bug or "alias" not in bug):
                    g = g + self.wd * params[k]
                if self.momentum and bug == "velocity_alias_outside":
                    if k not in outside:
                        outside[k] = g
                    else:
                        outside[k] *= self.momentum
                        outside[k] += g
                    g = outside[k]
                elif self.momentum and bug in ("velocity_alias", "velocity_alias_setdefault"):
                    if bug == "velocity_alias_setdefault":   # the caller's array as default
                        v = self.v.setdefault(k, grads[k])
                        if v is not grads[k]:
                            v *= self.momentum
                            v += g
                    elif k not in self.v:
                        self.v[k] = g                # no copy: g may be the caller's array
                    else:
                        self.v[k] *= self.momentum   # in place: writes into that array
                        self.v[k] += g
                    g = self.v[k]
                elif self.momentum and bug != "momentum_ignored":
                    if bug == "ema_from_zero":
                        old = self.v.get(k, np.zeros_like(g))
                        self.v[k] = self.momentum * old + (1 - self.momentum) * g
                    elif k not in self.v:
                        self.v[k] = g.copy()
                    elif bug == "dampening":
                        self.v[k] = self.momentum * self.v[k] + (1 - self.momentum) * g
                    else:
                        self.v[k] = self.momentum * self.v[k] + g
                    g = self.v[k]
                if bug == "wd_after_momentum":
                    g = g + self.wd * params[k]
                if bug == "not_in_place":
                    params[k] = params[k] - self.lr * g
                else:
                    params[k] -= self.lr * g
    return SGD


def make_rmsprop(bug: str | None = None):
    class RMSprop:
        def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0):
            self.lr, self.alpha, self.eps, self.wd = lr, alpha, eps, weight_decay
            self.sq, self.t = {}, 0

        def step(self, params, grads):
            self.t += 1
            a = self.alpha
            for k in params:
                g = grads[k] + (-1 if bug == "wd_sign" else 1) * self.wd * params[k]
                if bug == "alias" and k not in self.sq:
                    self.sq[k] = grads[k]            # the caller's array as the average
                    self.sq[k] *= self.sq[k]
                    self.sq[k] *= 1 - a
                    v = self.sq[k]
                elif bug == "v_from_g2" and k not in self.sq:
                    v = g ** 2
                elif bug == "v_from_ones" and k not in self.sq:
                    v = a * np.ones_like(g) + (1 - a) * g ** 2
                else:
                    v = self.sq.get(k, 0.0)
                    if bug == "alpha_swapped":
                        v = (1 - a) * v + a * g ** 2
                    elif bug == "no_one_minus_alpha":
                        v = a * v + g ** 2
                    else:
                        v = a * v + (1 - a) * g ** 2
                self.sq[k] = np.sqrt(v) if bug == "sqrt_stored" else v
                if bug in ("bias_corrected", "bias_corrected_stored"):
                    v = v / (1 - a ** self.t)
                    if bug == "bias_corrected_stored":
                        self.sq[k] = v
                if bug == "eps_inside":
                    denom = np.sqrt(v + self.eps)
                elif bug == "no_sqrt":
                    denom = v + self.eps
                else:
                    denom = np.sqrt(v) + self.eps
                params[k] -= self.lr * g / denom
    return RMSprop


def make_adam(bug: str | None = None, weight_decay: bool = True):
    """A learner's Adam; weight_decay=False: the lesson 03 signature, without the argument."""

    class Adam:
        def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, **kw):
            if kw and not weight_decay:
                raise TypeError(f"__init__() got an unexpected keyword argument {next(iter(kw))!r}")
            self.lr, self.betas, self.eps = lr, betas, eps
            self.wd = kw.get("weight_decay", 0.0)
            self.m, self.v, self.t = {}, {}, 0

        def step(self, params, grads):
            if bug == "t_constant":
                self.t = 1
            elif bug == "t_plus_one" and self.t == 0:
                self.t = 2                           # started at 1, incremented first
            elif bug == "t_twice":
                self.t += 2
            elif bug not in ("t_per_key", "t_after"):
                self.t += 1
            b1, b2 = self.betas
            for k, g in grads.items():
                if bug == "t_per_key":
                    self.t += 1
                if bug == "wd_sign":
                    g = g - self.wd * params[k]
                elif bug != "adamw":
                    g = g + self.wd * params[k]
                if k not in self.m:
                    self.m[k], self.v[k] = np.zeros_like(g), np.zeros_like(g)
                self.m[k] = b1 * self.m[k] + (1 - b1) * g
                self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
                m_hat, v_hat = self.m[k], self.v[k]
                t = self.t
                c1, c2 = {"power_one_minus": ((1 - b1) ** t, (1 - b2) ** t),
                          "power_no_one_minus": (b1 ** t, b2 ** t),
                          "corrections_swapped": (1 - b2 ** t, 1 - b1 ** t),
                          "power_times": (1 - b1 * t, 1 - b2 * t)}.get(
                    bug, (1 - b1 ** t, 1 - b2 ** t))
                if bug not in ("no_bias_correction", "no_m_correction"):
                    m_hat = m_hat / c1
                if bug not in ("no_bias_correction", "no_v_correction"):
                    v_hat = v_hat / c2
                if bug == "corrected_stored":
                    self.m[k], self.v[k] = m_hat, v_hat
                denom = np.sqrt(v_hat + self.eps) if bug == "eps_inside" \
                    else np.sqrt(v_hat) + self.eps
                step = self.lr * g if bug == "sgd" else self.lr * m_hat / denom
                if bug == "adamw":
                    step = step + self.lr * self.wd * params[k]
                if bug == "not_in_place":
                    params[k] = params[k] - step
                else:
                    params[k] -= step
            if bug == "t_after":                     # t starts at 0, counted after the update
                self.t += 1
    return Adam


class NotImplementedOptimizer:
    """What a lesson's optimiser looks like before the learner fills it in."""

    def __init__(self, lr=1e-3, **kwargs):
        self.lr = lr

    def step(self, params, grads):
        raise NotImplementedError()


def not_implemented(*args, **kwargs):
    raise NotImplementedError()
