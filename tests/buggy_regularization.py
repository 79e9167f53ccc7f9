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
        if bug != "no_variance_path":
            dxc = dxc + dvar * 2 * xc / m
        dmu = -dxc.sum(axis=AXES, keepdims=True)
        dx = dxc + dmu / m
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
        else:
            mask = (u >= p) / (1 - p)
        return x * mask, (mask, p)

    def backward(dout, cache):
        mask, p = cache
        if mask is None:
            return dout.copy()
        if bug == "new_mask_backward":
            mask = (np.random.default_rng().random(dout.shape) >= p) / (1 - p)
        if bug == "backward_not_scaled":
            mask = mask != 0
        return dout * mask

    forward.__name__ = f"dropout_forward_{bug or 'correct'}"
    backward.__name__ = f"dropout_backward_{bug or 'correct'}"
    return forward, backward


# --------------------------------------------------------------------------------------------
# Optimisers
# --------------------------------------------------------------------------------------------

def make_sgd(bug: str | None = None):
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
                elif bug != "wd_after_momentum":
                    g = g + self.wd * params[k]
                if self.momentum and bug != "momentum_ignored":
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
                v = self.sq.get(k, 0.0)
                v = (1 - a) * v + a * g ** 2 if bug == "alpha_swapped" \
                    else a * v + (1 - a) * g ** 2
                self.sq[k] = v
                if bug == "bias_corrected":
                    v = v / (1 - a ** self.t)
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
            if bug != "t_per_key":
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
                if bug not in ("no_bias_correction", "no_m_correction"):
                    m_hat = m_hat / (1 - b1 ** self.t)
                if bug not in ("no_bias_correction", "no_v_correction"):
                    v_hat = v_hat / (1 - b2 ** self.t)
                denom = np.sqrt(v_hat + self.eps) if bug == "eps_inside" \
                    else np.sqrt(v_hat) + self.eps
                step = self.lr * g if bug == "sgd" else self.lr * m_hat / denom
                if bug == "adamw":
                    step = step + self.lr * self.wd * params[k]
                if bug == "not_in_place":
                    params[k] = params[k] - step
                else:
                    params[k] -= step
    return Adam


class NotImplementedOptimizer:
    """What a lesson's optimiser looks like before the learner fills it in."""

    def __init__(self, lr=1e-3, **kwargs):
        self.lr = lr

    def step(self, params, grads):
        raise NotImplementedError()


def not_implemented(*args, **kwargs):
    raise NotImplementedError()
