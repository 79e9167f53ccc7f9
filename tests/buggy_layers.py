"""Correct and deliberately buggy layer implementations for tests/test_checks.py.

The correct versions are written here from scratch (not imported from mnist_course.numpy_cnn),
so the check functions are tested against an implementation of their own. Each buggy version
holds one typical mistake; the matching test asserts that the check names it.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

# --------------------------------------------------------------------------------------------
# Correct implementations
# --------------------------------------------------------------------------------------------


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def linear_forward(x, w, b):
    return x @ w + b, (x, w)


def linear_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def softmax_cross_entropy(logits, y):
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(n), y].mean()
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    return loss, d / n


def numerical_gradient(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def _windows(xp, kh, kw, stride):
    """(N, C, Ho, Wo, KH, KW) view of the windows of an already padded xp."""
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def _pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv2d_forward(x, w, b, stride=1, pad=0):
    _, _, kh, kw = w.shape
    win = _windows(_pad(x, pad), kh, kw, stride)
    out = np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]
    return out, (x, w, b, stride, pad)


def conv2d_backward(dout, cache):
    x, w, _b, stride, pad = cache
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    xp = _pad(x, pad)
    win = _windows(xp, kh, kw, stride)
    ho, wo = dout.shape[2:]
    db = dout.sum(axis=(0, 2, 3))
    dw = np.einsum("nchwij,nfhw->fcij", win, dout)
    dwin = np.einsum("nfhw,fcij->nchwij", dout, w)
    dxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride] += dwin[..., i, j]
    return dxp[:, :, pad:pad + h, pad:pad + wd], dw, db


def maxpool2d_forward(x, size=2, stride=2):
    win = _windows(x, size, size, stride)
    return win.max(axis=(4, 5)), (x, size, stride)


def _route(dout, x, size, stride, index):
    """Add dout[n, c, i, j] to x's element number index[n, c, i, j] of window (i, j)."""
    n, c, ho, wo = dout.shape
    di, dj = np.divmod(index, size)
    nn, cc, ii, jj = np.indices((n, c, ho, wo))
    dx = np.zeros_like(x)
    np.add.at(dx, (nn, cc, ii * stride + di, jj * stride + dj), dout)
    return dx


def _flat_windows(x, size, stride, shape):
    n, c, ho, wo = shape
    return _windows(x, size, size, stride).reshape(n, c, ho, wo, size * size)


def maxpool2d_backward(dout, cache):
    x, size, stride = cache
    first = np.argmax(_flat_windows(x, size, stride, dout.shape), axis=-1)  # first max
    return _route(dout, x, size, stride, first)


def _cnn(params, x, y, conv_bwd=conv2d_backward, flatten_hwc=False, reduce="mean"):
    """Course CNN loss and gradients from the layers above; options inject bugs."""
    caches = []
    h = x
    for i in (1, 2, 3):
        h, c_conv = conv2d_forward(h, params[f"conv{i}_w"], params[f"conv{i}_b"])
        h, c_relu = relu_forward(h)
        c_pool = None
        if i < 3:
            h, c_pool = maxpool2d_forward(h)
        caches.append((c_conv, c_relu, c_pool))
    shape = h.shape
    if flatten_hwc:
        h = h.transpose(0, 2, 3, 1)
    flat = h.reshape(h.shape[0], -1)
    a, c_fc1 = linear_forward(flat, params["fc1_w"], params["fc1_b"])
    a, c_r = relu_forward(a)
    logits, c_fc2 = linear_forward(a, params["fc2_w"], params["fc2_b"])
    loss, d = softmax_cross_entropy(logits, y)
    if reduce == "sum":
        loss, d = loss * len(y), d * len(y)
    grads = {}
    d, grads["fc2_w"], grads["fc2_b"] = linear_backward(d, c_fc2)
    d = relu_backward(d, c_r)
    d, grads["fc1_w"], grads["fc1_b"] = linear_backward(d, c_fc1)
    if flatten_hwc:
        d = d.reshape(shape[0], shape[2], shape[3], shape[1]).transpose(0, 3, 1, 2)
    else:
        d = d.reshape(shape)
    for i in (3, 2, 1):
        c_conv, c_relu, c_pool = caches[i - 1]
        if c_pool is not None:
            d = maxpool2d_backward(d, c_pool)
        d = relu_backward(d, c_relu)
        bwd = conv_bwd if i == 2 else conv2d_backward
        d, grads[f"conv{i}_w"], grads[f"conv{i}_b"] = bwd(d, c_conv)
    return loss, grads


def cnn_loss_and_grads(params, x, y):
    return _cnn(params, x, y)


def one_hot(y, num_classes=10):
    out = np.zeros((len(y), num_classes), dtype=np.float32)
    out[np.arange(len(y)), y] = 1
    return out


def train_val_split(x, y, n_val=5000, seed=0):
    perm = np.random.default_rng(seed).permutation(len(x))
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


def mean_std(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1))


def step_decay(epoch, base_lr=0.01, drop=0.5, epochs_per_drop=2):
    return base_lr * drop ** (epoch // epochs_per_drop)


def _shift_batch(x, sy, sx, m, fill):
    """Image i cut from the padded batch at window start (sy[i], sx[i]): moved down by
    m - sy[i] and right by m - sx[i], with fill shifted in."""
    n, c, h, w = x.shape
    padded = torch.full((n, c, h + 2 * m, w + 2 * m), fill, dtype=x.dtype)
    padded[..., m:m + h, m:m + w] = x
    return torch.stack([padded[i, :, sy[i]:sy[i] + h, sx[i]:sx[i] + w] for i in range(n)])


def random_shift(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    dy = torch.randint(-m, m + 1, (n,), generator=generator)
    dx = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m - dy, m - dx, m, float(x.min())), y   # window start m - d


# --------------------------------------------------------------------------------------------
# Buggy implementations: one typical mistake each
# --------------------------------------------------------------------------------------------

# 1. true convolution: the kernel is flipped
def conv_flipped(x, w, b, stride=1, pad=0):
    return conv2d_forward(x, w[:, :, ::-1, ::-1], b, stride, pad)


# 2. output size (H + 2P - K + 1) // S: right for stride 1, one short for stride > 1
def conv_off_by_one(x, w, b, stride=1, pad=0):
    out, cache = conv2d_forward(x, w, b, stride, pad)
    ho = (x.shape[2] + 2 * pad - w.shape[2] + 1) // stride
    wo = (x.shape[3] + 2 * pad - w.shape[3] + 1) // stride
    return out[:, :, :ho, :wo], cache


# 3. padding ignored
def conv_no_pad(x, w, b, stride=1, pad=0):
    return conv2d_forward(x, w, b, stride, 0)


# 4. db not summed over the batch and spatial positions
def conv_backward_db_unsummed(dout, cache):
    dx, dw, _ = conv2d_backward(dout, cache)
    return dx, dw, dout.sum(axis=(2, 3))


def conv_backward_db_raw(dout, cache):
    dx, dw, _ = conv2d_backward(dout, cache)
    return dx, dw, dout


# dx cropped with [pad:-pad], which is empty when pad == 0
def conv_backward_crop_bug(dout, cache):
    x, w, _b, stride, pad = cache
    xp_cache = (_pad(x, pad), w, _b, stride, 0)
    dxp, dw, db = conv2d_backward(dout, xp_cache)
    return dxp[:, :, pad:-pad, pad:-pad], dw, db


# conv2 backward with dw flipped, to test that check_cnn_loss_and_grads names the layer
def conv_backward_dw_flipped(dout, cache):
    dx, dw, db = conv2d_backward(dout, cache)
    return dx, dw[:, :, ::-1, ::-1].copy(), db


# the course CNN with one bug each
def cnn_summed_loss(params, x, y):
    return _cnn(params, x, y, reduce="sum")


def cnn_flatten_hwc(params, x, y):
    return _cnn(params, x, y, flatten_hwc=True)


def cnn_conv2_dw_flipped(params, x, y):
    return _cnn(params, x, y, conv_bwd=conv_backward_dw_flipped)


# 5. pooling gradient sent to every position in the window
def pool_backward_everywhere(dout, cache):
    x, size, _stride = cache
    dx = np.zeros_like(x)
    up = dout.repeat(size, axis=2).repeat(size, axis=3)
    dx[:, :, :up.shape[2], :up.shape[3]] = up
    return dx


# 6. pooling gradient sent to every tied maximum
def pool_backward_all_ties(dout, cache):
    x, size, stride = cache
    ho, wo = dout.shape[2:]
    dx = np.zeros_like(x)
    for i in range(ho):
        for j in range(wo):
            win = x[:, :, i * stride:i * stride + size, j * stride:j * stride + size]
            mask = win == win.max(axis=(2, 3), keepdims=True)
            dx[:, :, i * stride:i * stride + size, j * stride:j * stride + size] += \
                mask * dout[:, :, i:i + 1, j:j + 1]
    return dx


# ties resolved to the LAST maximum instead of the first
def pool_backward_last_tie(dout, cache):
    x, size, stride = cache
    win = _flat_windows(x, size, stride, dout.shape)
    last = size * size - 1 - np.argmax(win[..., ::-1], axis=-1)
    return _route(dout, x, size, stride, last)


# 7. softmax without subtracting the max: overflows for large logits
def softmax_no_max(logits, y):
    n = logits.shape[0]
    e = np.exp(logits)
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean()
    p[np.arange(n), y] -= 1
    return loss, p / n


# log(softmax + eps): finite but wrong for large logits
def softmax_log_clip(logits, y):
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    d = p.copy()
    d[np.arange(n), y] -= 1
    return loss, d / n


# 8. loss summed instead of averaged: gradient N times too large
def softmax_summed(logits, y):
    loss, d = softmax_cross_entropy(logits, y)
    n = logits.shape[0]
    return loss * n, d * n


# dlogits not divided by N although the loss is a mean
def softmax_grad_not_averaged(logits, y):
    loss, d = softmax_cross_entropy(logits, y)
    return loss, d * logits.shape[0]


# 9. linear backward with dw transposed
def linear_backward_dw_transposed(dout, cache):
    x, w = cache
    return dout @ w.T, dout.T @ x, dout.sum(axis=0)


def linear_backward_db_unsummed(dout, cache):
    dx, dw, _ = linear_backward(dout, cache)
    return dx, dw, dout


# 10. a numerical gradient that does not restore x
def numgrad_no_restore(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = f(x)
        x[i] = old - h
        minus = f(x)
        grad[i] = (plus - minus) / (2 * h)
    return grad


def numgrad_forward_difference(f, x, h=1e-5):
    grad = np.zeros_like(x)
    f0 = f(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        grad[i] = (f(x) - f0) / h
        x[i] = old
    return grad


def numgrad_divided_by_h(f, x, h=1e-5):
    return 2 * numerical_gradient(f, x, h)


# ReLU backward that lets the gradient through where x <= 0
def relu_backward_passthrough(dout, cache):
    return dout.copy()


# ReLU forward that clobbers its input
def relu_forward_inplace(x):
    x[x < 0] = 0
    return x, x


def one_hot_int(y, num_classes=10):
    return np.eye(num_classes, dtype=np.int64)[y]


def one_hot_transposed(y, num_classes=10):
    return one_hot(y, num_classes).T


def split_separate_perms(x, y, n_val=5000, seed=0):
    rng = np.random.default_rng(seed)
    px, py = rng.permutation(len(x)), rng.permutation(len(y))
    return x[px[n_val:]], y[py[n_val:]], x[px[:n_val]], y[py[:n_val]]


def split_inplace_shuffle(x, y, n_val=5000, seed=0):
    rng = np.random.default_rng(seed)
    state = rng.bit_generator.state
    rng.shuffle(x)
    rng.bit_generator.state = state
    rng.shuffle(y)
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def split_unseeded(x, y, n_val=5000, seed=0):
    perm = np.random.permutation(len(x))
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


def step_decay_off_by_one(epoch, base_lr=0.01, drop=0.5, epochs_per_drop=2):
    return base_lr * drop ** ((epoch + 1) // epochs_per_drop)


def step_decay_every_epoch(epoch, base_lr=0.01, drop=0.5, epochs_per_drop=2):
    return base_lr * drop ** epoch


def shift_roll(x, y, max_shift=2, generator=None):
    n = x.shape[0]
    s = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator)
    out = torch.stack([torch.roll(x[i], (int(s[i, 0]), int(s[i, 1])), dims=(-2, -1))
                       for i in range(n)])
    return out, y


def shift_exclusive_high(x, y, max_shift=2, generator=None):
    # torch.randint's upper bound is exclusive: shifts fall in [-m, m - 1], never +m
    n, m = x.shape[0], max_shift
    s = torch.randint(-m, m, (n, 2), generator=generator)
    return _shift_batch(x, s[:, 0] + m, s[:, 1] + m, m, float(x.min())), y


def shift_zero_fill(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    sy = torch.randint(0, 2 * m + 1, (n,), generator=generator)
    sx = torch.randint(0, 2 * m + 1, (n,), generator=generator)
    return _shift_batch(x, sy, sx, m, 0.0), y


def shift_same_for_all(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    s = torch.randint(0, 2 * m + 1, (2,), generator=generator)
    return _shift_batch(x, s[0].repeat(n), s[1].repeat(n), m, float(x.min())), y


def shift_unseeded(x, y, max_shift=2, generator=None):
    return random_shift(x, y, max_shift, None)


def mean_std_population(values):                         # np.std's default, ddof=0
    v = np.asarray(values, dtype=float)
    return v.mean(), v.std()


def mean_std_variance(values):
    v = np.asarray(values, dtype=float)
    return v.mean(), v.var(ddof=1)


def mean_std_swapped(values):
    v = np.asarray(values, dtype=float)
    return v.std(ddof=1), v.mean()


def mean_std_sorts_input(values):
    if isinstance(values, np.ndarray):
        values.sort()
    return mean_std(values)


def shift_reversed(x, y, max_shift=2, generator=None):       # moves up by dy, left by dx
    n, m = x.shape[0], max_shift
    dy = torch.randint(-m, m + 1, (n,), generator=generator)
    dx = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m + dy, m + dx, m, float(x.min())), y


def shift_swapped(x, y, max_shift=2, generator=None):        # dy moves columns, dx rows
    n, m = x.shape[0], max_shift
    dy = torch.randint(-m, m + 1, (n,), generator=generator)
    dx = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m - dx, m - dy, m, float(x.min())), y


# --------------------------------------------------------------------------------------------
# Learner-style failures that the checks must report well
# --------------------------------------------------------------------------------------------

def not_implemented(*args, **kwargs):
    # YOUR CODE HERE
    raise NotImplementedError()


def conv_value_error(x, w, b, stride=1, pad=0):
    return x.reshape(-1, 7) @ w.reshape(7, -1), None


def conv_returns_array(x, w, b, stride=1, pad=0):
    return conv2d_forward(x, w, b, stride, pad)[0]


# --------------------------------------------------------------------------------------------
# Holes closed in the checks (issue 11): a numerical gradient on a copy, ReLU's gradient at 0,
# conv backward assigning into overlapping windows, a bias gradient averaged
# --------------------------------------------------------------------------------------------

# perturbs a COPY of x: right for an f that reads its argument, all zeros for one that reads x
# from outside (as lesson 01's loss reads the network's parameters)
def numgrad_on_copy(f, x, h=1e-5):
    return numerical_gradient(f, x.copy(), h)


# lets the gradient through at exactly x == 0
def relu_backward_ge_zero(dout, cache):
    return dout * (cache >= 0)


# dx assigned (=) into the windows instead of accumulated (+=)
def conv_backward_assign(dout, cache):
    x, w, _b, stride, pad = cache
    _, _, h, wd = x.shape
    _, _, kh, kw = w.shape
    xp = _pad(x, pad)
    _, dw, db = conv2d_backward(dout, cache)
    dwin = np.einsum("nfhw,fcij->nchwij", dout, w)
    ho, wo = dout.shape[2:]
    dxp = np.zeros_like(xp)
    for i in range(ho):
        for j in range(wo):
            dxp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] = dwin[:, :, i, j]
    return dxp[:, :, pad:pad + h, pad:pad + wd], dw, db


# db averaged over the batch and positions instead of summed
def conv_backward_db_mean(dout, cache):
    dx, dw, _ = conv2d_backward(dout, cache)
    return dx, dw, dout.mean(axis=(0, 2, 3))


# --------------------------------------------------------------------------------------------
# Lesson 03: initialisation and the forward pass
# --------------------------------------------------------------------------------------------

SHAPES = {
    "conv1_w": (32, 1, 3, 3), "conv1_b": (32,),
    "conv2_w": (64, 32, 3, 3), "conv2_b": (64,),
    "conv3_w": (64, 64, 3, 3), "conv3_b": (64,),
    "fc1_w": (576, 64), "fc1_b": (64,),
    "fc2_w": (64, 10), "fc2_b": (10,),
}


def _init(seed=0, scheme="he", std=None, uniform_a=None, dtype=np.float32, rng=None):
    """init_params with the rule for each weight injectable: std(shape) or uniform_a(shape)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    params = {}
    for name, shape in SHAPES.items():
        if name.endswith("_b"):
            params[name] = np.zeros(shape, dtype=dtype)
            continue
        if len(shape) == 4:
            fan_in, fan_out = shape[1] * shape[2] * shape[3], shape[0] * shape[2] * shape[3]
        else:
            fan_in, fan_out = shape
        if scheme == "he":
            s = np.sqrt(2 / fan_in) if std is None else std(name, shape, fan_in, fan_out)
            w = rng.standard_normal(shape) * s
        else:
            a = np.sqrt(6 / (fan_in + fan_out)) if uniform_a is None else \
                uniform_a(name, shape, fan_in, fan_out)
            w = rng.uniform(-a, a, shape)
        params[name] = w.astype(dtype)
    return params


def init_params(seed=0, scheme="he"):
    return _init(seed, scheme)


def init_lecun(seed=0, scheme="he"):
    return _init(seed, scheme, std=lambda n, s, fi, fo: np.sqrt(1 / fi))


def init_lecun_last_layer(seed=0, scheme="he"):
    # He everywhere but the last layer
    return _init(seed, scheme, std=lambda n, s, fi, fo: np.sqrt((1 if n == "fc2_w" else 2) / fi))


def init_variance_as_std(seed=0, scheme="he"):
    return _init(seed, scheme, std=lambda n, s, fi, fo: 2 / fi)


def init_fan_wrong_axes(seed=0, scheme="he"):
    # fan_in = shape[0] * KH * KW for a conv, shape[1] for a linear layer
    return _init(seed, scheme, std=lambda n, s, fi, fo: np.sqrt(2 / fo))


def init_glorot_no_fan_out(seed=0, scheme="he"):
    return _init(seed, scheme, uniform_a=lambda n, s, fi, fo: np.sqrt(6 / fi))


def init_glorot_normal(seed=0, scheme="he"):
    if scheme == "he":
        return _init(seed, scheme)
    return _init(seed, "he", std=lambda n, s, fi, fo: np.sqrt(2 / (fi + fo)))


def init_ignores_scheme(seed=0, scheme="he"):
    return _init(seed, "he")


def init_float64(seed=0, scheme="he"):
    return _init(seed, scheme, dtype=np.float64)


def init_global_state(seed=0, scheme="he"):
    np.random.seed(seed)
    return _init(seed, scheme, rng=np.random.mtrand._rand)


def init_fixed_seed(seed=0, scheme="he"):
    return _init(0, scheme)


def init_default_glorot(seed=0, scheme="glorot"):
    return _init(seed, scheme)


def init_no_scheme(seed=0):
    return _init(seed, "he")


def init_bias_ones(seed=0, scheme="he"):
    params = _init(seed, scheme)
    params["fc1_b"] += 1
    return params


def cnn_forward(params, x, relu_logits=False, pool1=True, flatten_hwc=False, relu_fc1=True):
    p, caches = params, []
    h = x
    for i in (1, 2, 3):
        h, c = conv2d_forward(h, p[f"conv{i}_w"], p[f"conv{i}_b"])
        h, r = relu_forward(h)
        caches += [c, r]
        if i == 2 or (i == 1 and pool1):
            h, m = maxpool2d_forward(h)
            caches.append(m)
    if flatten_hwc:
        h = h.transpose(0, 2, 3, 1)
    h = h.reshape(h.shape[0], -1)
    h, f1 = linear_forward(h, p["fc1_w"], p["fc1_b"])
    if relu_fc1:
        h, _ = relu_forward(h)
    logits, f2 = linear_forward(h, p["fc2_w"], p["fc2_b"])
    if relu_logits:
        logits, _ = relu_forward(logits)
    return logits, (caches, f1, f2)


def cnn_forward_relu_logits(params, x):
    return cnn_forward(params, x, relu_logits=True)


def cnn_forward_no_pool1(params, x):
    return cnn_forward(params, x, pool1=False)


def cnn_forward_flatten_hwc(params, x):
    return cnn_forward(params, x, flatten_hwc=True)


def cnn_forward_no_relu_fc1(params, x):
    return cnn_forward(params, x, relu_fc1=False)


def cnn_forward_logits_only(params, x):
    return cnn_forward(params, x)[0]


# --------------------------------------------------------------------------------------------
# The course CNN as an nn.Module, and MyCNNs of the wrong structure
# --------------------------------------------------------------------------------------------

class MyCNN(torch.nn.Module):
    def __init__(self, c2=(32, 64), fc1_in=576, layers=("conv1", "conv2", "conv3", "fc1", "fc2")):
        super().__init__()
        make = {
            "conv1": lambda: torch.nn.Conv2d(1, 32, 3),
            "conv2": lambda: torch.nn.Conv2d(*c2, 3),
            "conv3": lambda: torch.nn.Conv2d(64, 64, 3),
            "fc1": lambda: torch.nn.Linear(fc1_in, 64),
            "fc2": lambda: torch.nn.Linear(64, 10),
        }
        for name in layers:
            setattr(self, name, make[name]())

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class MyCNNNoConv3(MyCNN):
    def __init__(self):
        super().__init__(layers=("conv1", "conv2", "fc1", "fc2"))


class MyCNNChannelsSwapped(MyCNN):
    def __init__(self):
        super().__init__(c2=(64, 32))


class MyCNNFlatten1600(MyCNN):
    # fc1 sized for the activations before conv3
    def __init__(self):
        super().__init__(fc1_in=1600)


class MyCNNNoPool1(MyCNN):
    # the forward pass raises: conv1's output is not pooled
    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(torch.relu(self.conv3(x)), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class MyCNNNoFlatten(MyCNN):
    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x))
        return self.fc2(torch.relu(self.fc1(x)))


class MyCNNReluLogits(MyCNN):
    def forward(self, x):
        return torch.relu(super().forward(x))


class MyCNNNoSuperInit(torch.nn.Module):
    def __init__(self):
        self.conv1 = torch.nn.Conv2d(1, 32, 3)


# ---- lesson 06, section 13: the centre of mass of a drawing ----------------------------------

def center_of_mass(image):
    """Correct: the ink-weighted mean row and column."""
    img = np.asarray(image, dtype=float)
    r, c = np.indices(img.shape)
    return float((r * img).sum() / img.sum()), float((c * img).sum() / img.sum())


def com_swapped(image):
    row, col = center_of_mass(image)
    return col, row


def com_one_based(image):
    row, col = center_of_mass(image)
    return row + 1, col + 1


def com_unweighted(image):                  # every inked pixel counts the same
    r, c = np.nonzero(image)
    return r.mean(), c.mean()


def com_bounding_box(image):
    r, c = np.nonzero(image)
    return (r.min() + r.max()) / 2, (c.min() + c.max()) / 2


def com_not_normalised(image):
    img = np.asarray(image, dtype=float)
    r, c = np.indices(img.shape)
    return (r * img).sum(), (c * img).sum()


def com_divided_by_size(image):
    img = np.asarray(image, dtype=float)
    return (img.sum(axis=1) @ np.arange(img.shape[0]) / img.shape[0],
            img.sum(axis=0) @ np.arange(img.shape[1]) / img.shape[1])


def com_in_place(image):
    image /= image.sum()                    # normalises the caller's image
    r, c = np.indices(image.shape)
    return (r * image).sum(), (c * image).sum()


# issue 23: the order and the number of the draws
def shift_dx_drawn_first(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    dx = torch.randint(-m, m + 1, (n,), generator=generator)
    dy = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m - dy, m - dx, m, float(x.min())), y


def shift_one_draw_for_both(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    d = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m - d, m - d, m, float(x.min())), y


def shift_one_draw_opposite(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    d = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m - d, m + d, m, float(x.min())), y


def shift_dx_first_reversed(x, y, max_shift=2, generator=None):
    n, m = x.shape[0], max_shift
    dx = torch.randint(-m, m + 1, (n,), generator=generator)
    dy = torch.randint(-m, m + 1, (n,), generator=generator)
    return _shift_batch(x, m + dy, m + dx, m, float(x.min())), y


def shift_pairs_per_image(x, y, max_shift=2, generator=None):
    """Correct too: another draw order, (dy, dx) pairs of one (N, 2) draw."""
    n, m = x.shape[0], max_shift
    d = torch.randint(-m, m + 1, (n, 2), generator=generator)
    return _shift_batch(x, m - d[:, 0], m - d[:, 1], m, float(x.min())), y


# --------------------------------------------------------------------------------------------
# issue 23: im2col (lesson 02's vectorised convolution) and its mistakes
# --------------------------------------------------------------------------------------------

def _im2col(xp, kh, kw, stride, oh, ow, order="cij"):
    """(N, C*KH*KW, OH*OW) columns; order: how a window's values are listed."""
    n, c = xp.shape[:2]
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    axes = {"cij": (0, 1, 2, 3), "cji": (0, 1, 3, 2), "ijc": (0, 2, 3, 1), "jic": (0, 3, 2, 1)}
    cols = cols.transpose(*axes[order], 4, 5)
    return cols.reshape(n, c * kh * kw, oh * ow)


def _col2im(dcols, xp_shape, kh, kw, stride, oh, ow, order="cij"):
    n, c = xp_shape[:2]
    shape = {"cij": (c, kh, kw), "cji": (c, kw, kh), "ijc": (kh, kw, c), "jic": (kw, kh, c)}
    back = {"cij": (0, 1, 2, 3), "cji": (0, 1, 3, 2), "ijc": (0, 3, 1, 2), "jic": (0, 3, 2, 1)}
    d = dcols.reshape(n, *shape[order], oh, ow).transpose(*back[order], 4, 5)
    dxp = np.zeros(xp_shape, dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += d[:, :, i, j]
    return dxp


def make_conv_im2col(bug=None):
    """(forward, backward) of conv2d with im2col and one named mistake (None: correct)."""

    def forward(x, w, b, stride=1, pad=0):
        n, _, h, wd = x.shape
        f, _, kh, kw = w.shape
        oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
        if bug == "pad_all_axes":
            xp = np.pad(x, pad)
        else:
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        order = bug if bug in ("cji", "ijc", "jic") else "cij"
        cols = _im2col(xp, kh, kw, stride, oh, ow, order)          # (N, CKK, P)
        rows = cols.transpose(0, 2, 1).reshape(n * oh * ow, -1)     # (N*P, CKK)
        out = rows @ w.reshape(f, -1).T + b                         # (N*P, F)
        if bug == "no_transpose":
            out = out.reshape(n, f, oh, ow)
        else:
            out = out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out), (x, w, b, stride, pad)

    def backward(dout, cache):
        x, w, _, stride, pad = cache
        n, c, h, wd = x.shape
        f, _, kh, kw = w.shape
        oh, ow = dout.shape[2:]
        repad = 0 if bug == "windows_not_padded" else pad
        xp = np.pad(x, ((0, 0), (0, 0), (repad, repad), (repad, repad)))
        order = bug[9:] if bug and bug.startswith("backward_") and bug[9:] in (
            "cji", "ijc", "jic") else "cij"
        cols = _im2col(np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))), kh, kw, stride,
                       oh, ow, order)
        if bug == "windows_not_padded":
            cols = _im2col(xp, kh, kw, stride, oh, ow)               # raises for pad > 0
        rows = cols.transpose(0, 2, 1).reshape(n * oh * ow, -1)
        if bug == "dout_no_transpose":
            d = dout.reshape(-1, f)
        else:
            d = dout.transpose(0, 2, 3, 1).reshape(-1, f)           # (N*P, F)
        db = dout.sum(axis=(0, 2, 3))
        dw = (d.T @ rows).reshape(w.shape)
        drows = d @ w.reshape(f, -1)                                # (N*P, CKK)
        dcols = drows.reshape(n, oh * ow, -1).transpose(0, 2, 1)
        xp_shape = (n, c, h + 2 * pad, wd + 2 * pad)
        dxp = _col2im(dcols, xp_shape, kh, kw, stride, oh, ow, order)
        if bug == "crop_from_zero":
            dx = dxp[:, :, :h, :wd]
        else:
            dx = dxp[:, :, pad:pad + h, pad:pad + wd]
        return dx, dw, db

    forward.__name__ = f"conv2d_forward_im2col_{bug or 'correct'}"
    backward.__name__ = f"conv2d_backward_im2col_{bug or 'correct'}"
    return forward, backward
