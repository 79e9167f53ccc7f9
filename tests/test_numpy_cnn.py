"""The reference NumPy layers and CNN against torch.nn.functional (autograd) and numerical
gradients, in float64 on small seeded inputs."""

from __future__ import annotations

import zipfile
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mnist_course import numpy_cnn as nc
from mnist_course.gradcheck import numerical_gradient, rel_error

RNG = np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fresh_rng(request):
    """Each test draws its own numbers, seeded by its name: the same in any order, so the data a
    test sees does not depend on which tests ran before it (pytest-xdist splits them up)."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def randn(*shape):
    return RNG.standard_normal(shape)


def t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------

CONV_CASES = [  # (N, C, H, W), (F, KH, KW), stride, pad
    ((2, 3, 7, 7), (4, 3, 3), 1, 0),
    ((2, 3, 7, 7), (4, 3, 3), 1, 1),
    ((2, 2, 9, 8), (3, 3, 3), 2, 1),
    ((1, 2, 10, 11), (2, 3, 2), 3, 2),
    ((3, 1, 5, 6), (2, 2, 3), 2, 0),
    ((2, 4, 6, 5), (5, 5, 1), 1, 2),
    ((1, 1, 4, 4), (1, 1, 1), 3, 0),
    ((2, 2, 8, 8), (3, 4, 4), 3, 0),  # stride does not divide: floor, like torch
]


@pytest.mark.parametrize("xshape, wshape, stride, pad", CONV_CASES)
def test_conv2d_matches_torch(xshape, wshape, stride, pad):
    x, w, b = randn(*xshape), randn(wshape[0], xshape[1], *wshape[1:]), randn(wshape[0])
    out, cache = nc.conv2d_forward(x, w, b, stride=stride, pad=pad)
    xt, wt, bt = t(x, True), t(w, True), t(b, True)
    ref = F.conv2d(xt, wt, bt, stride=stride, padding=pad)
    assert out.shape == tuple(ref.shape)
    assert rel_error(out, ref.detach().numpy()) < 1e-10
    dout = randn(*out.shape)
    ref.backward(t(dout))
    dx, dw, db = nc.conv2d_backward(dout, cache)
    assert rel_error(dx, xt.grad.numpy()) < 1e-10
    assert rel_error(dw, wt.grad.numpy()) < 1e-10
    assert rel_error(db, bt.grad.numpy()) < 1e-10
    assert out.dtype == dx.dtype == dw.dtype == np.float64


def test_conv2d_backward_matches_numerical_gradient():
    x, w, b = randn(2, 2, 5, 6), randn(3, 2, 3, 2), randn(3)
    dout = randn(*nc.conv2d_forward(x, w, b, stride=2, pad=1)[0].shape)
    _, cache = nc.conv2d_forward(x, w, b, stride=2, pad=1)
    dx, dw, db = nc.conv2d_backward(dout, cache)

    def f(_):
        return float((nc.conv2d_forward(x, w, b, stride=2, pad=1)[0] * dout).sum())

    assert rel_error(dx, numerical_gradient(f, x)) < 1e-7
    assert rel_error(dw, numerical_gradient(f, w)) < 1e-7
    assert rel_error(db, numerical_gradient(f, b)) < 1e-7


def test_conv2d_keeps_float32():
    x = randn(2, 3, 6, 6).astype(np.float32)
    w, b = randn(4, 3, 3, 3).astype(np.float32), np.zeros(4, np.float32)
    out, cache = nc.conv2d_forward(x, w, b, pad=1)
    dx, dw, db = nc.conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == np.float32


@pytest.mark.parametrize("x, w, b, kwargs, words", [
    (np.zeros((2, 3, 5, 5)), np.zeros((4, 2, 3, 3)), np.zeros(4), {}, ["3 channels", "expects 2"]),
    (np.zeros((3, 5, 5)), np.zeros((4, 3, 3, 3)), np.zeros(4), {}, ["(3, 5, 5)", "(N, C, H, W)"]),
    (np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), np.zeros(1), {}, ["3x3", "2x2"]),
    (np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3)), np.zeros(3), {}, ["(2,)", "(3,)"]),
    (np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3)), np.zeros(2), {"stride": 0}, ["stride"]),
    (np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3)), np.zeros(2), {"pad": -1}, ["pad"]),
])
def test_conv2d_shape_errors_name_the_shapes(x, w, b, kwargs, words):
    with pytest.raises(ValueError) as err:
        nc.conv2d_forward(x, w, b, **kwargs)
    for word in words:
        assert word in str(err.value)


def test_conv2d_padding_makes_small_inputs_fit():
    out, _ = nc.conv2d_forward(randn(1, 1, 2, 2), randn(1, 1, 3, 3), randn(1), pad=1)
    assert out.shape == (1, 1, 2, 2)


# --------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------

POOL_CASES = [  # (N, C, H, W), size, stride
    ((2, 3, 8, 8), 2, 2),
    ((2, 3, 11, 11), 2, 2),   # odd size: last row and column dropped
    ((1, 2, 9, 7), 3, 2),     # overlapping windows
    ((2, 2, 10, 9), 3, 3),
    ((1, 1, 6, 6), 2, 1),
    ((1, 2, 5, 5), 1, 2),
]


@pytest.mark.parametrize("xshape, size, stride", POOL_CASES)
def test_maxpool_matches_torch(xshape, size, stride):
    x = randn(*xshape)
    out, cache = nc.maxpool2d_forward(x, size=size, stride=stride)
    xt = t(x, True)
    ref = F.max_pool2d(xt, size, stride)
    assert rel_error(out, ref.detach().numpy()) == 0
    dout = randn(*out.shape)
    ref.backward(t(dout))
    assert rel_error(nc.maxpool2d_backward(dout, cache), xt.grad.numpy()) < 1e-12


@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2), (2, 1), (3, 3)])
def test_maxpool_ties_go_to_the_first_maximum_like_torch(size, stride):
    # integers from a small range: most windows hold tied maxima
    x = RNG.integers(0, 3, size=(2, 2, 9, 8)).astype(np.float64)
    out, cache = nc.maxpool2d_forward(x, size=size, stride=stride)
    xt = t(x, True)
    ref = F.max_pool2d(xt, size, stride)
    dout = randn(*out.shape)
    ref.backward(t(dout))
    dx = nc.maxpool2d_backward(dout, cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-12)


def test_maxpool_all_equal_window_sends_gradient_to_top_left():
    x = np.ones((1, 1, 2, 2))
    _, cache = nc.maxpool2d_forward(x)
    dx = nc.maxpool2d_backward(np.full((1, 1, 1, 1), 5.0), cache)
    assert dx[0, 0].tolist() == [[5.0, 0.0], [0.0, 0.0]]


def test_maxpool_backward_matches_numerical_gradient():
    x = randn(2, 2, 6, 5)
    dout = randn(2, 2, 3, 2)
    _, cache = nc.maxpool2d_forward(x)
    dx = nc.maxpool2d_backward(dout, cache)
    num = numerical_gradient(lambda _: float((nc.maxpool2d_forward(x)[0] * dout).sum()), x)
    assert rel_error(dx, num) < 1e-8


def test_maxpool_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        nc.maxpool2d_forward(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="larger than the input"):
        nc.maxpool2d_forward(np.zeros((1, 1, 3, 3)), size=4)
    _, cache = nc.maxpool2d_forward(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\)"):
        nc.maxpool2d_backward(np.zeros((1, 2, 3, 3)), cache)


# --------------------------------------------------------------------------------------------
# ReLU, linear, softmax cross-entropy
# --------------------------------------------------------------------------------------------

def test_relu_forward_backward():
    x = np.array([[-2.0, 0.0, 3.0]])
    out, cache = nc.relu_forward(x)
    assert out.tolist() == [[0.0, 0.0, 3.0]]
    assert nc.relu_backward(np.array([[1.0, 1.0, 1.0]]), cache).tolist() == [[0.0, 0.0, 1.0]]
    x = randn(3, 4, 5)
    dout = randn(3, 4, 5)
    _, cache = nc.relu_forward(x)
    num = numerical_gradient(lambda _: float((nc.relu_forward(x)[0] * dout).sum()), x)
    assert rel_error(nc.relu_backward(dout, cache), num) < 1e-8


def test_linear_matches_torch_and_numerical_gradient():
    x, w, b = randn(5, 7), randn(7, 3), randn(3)
    out, cache = nc.linear_forward(x, w, b)
    xt, wt, bt = t(x, True), t(w.T, True), t(b, True)  # torch stores (D_out, D_in)
    ref = F.linear(xt, wt, bt)
    assert rel_error(out, ref.detach().numpy()) < 1e-12
    dout = randn(5, 3)
    ref.backward(t(dout))
    dx, dw, db = nc.linear_backward(dout, cache)
    assert dw.shape == w.shape
    assert rel_error(dx, xt.grad.numpy()) < 1e-12
    assert rel_error(dw, wt.grad.numpy().T) < 1e-12
    assert rel_error(db, bt.grad.numpy()) < 1e-12

    def f(_):
        return float((nc.linear_forward(x, w, b)[0] * dout).sum())

    assert rel_error(dw, numerical_gradient(f, w)) < 1e-8


def test_linear_shape_errors():
    with pytest.raises(ValueError, match=r"x has 4 features but w expects 5"):
        nc.linear_forward(np.zeros((2, 4)), np.zeros((5, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, D_in\)"):
        nc.linear_forward(np.zeros((2, 2, 2)), np.zeros((4, 3)), np.zeros(3))


def test_softmax_cross_entropy_matches_torch():
    logits, y = randn(6, 10), RNG.integers(0, 10, 6)
    loss, dlogits = nc.softmax_cross_entropy(logits, y)
    lt = t(logits, True)
    ref = F.cross_entropy(lt, torch.tensor(y))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    assert rel_error(dlogits, lt.grad.numpy()) < 1e-10
    num = numerical_gradient(lambda _: nc.softmax_cross_entropy(logits, y)[0], logits)
    assert rel_error(dlogits, num) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    y = np.array([0, 0, 1])
    loss, dlogits = nc.softmax_cross_entropy(logits, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    ref = F.cross_entropy(torch.tensor(logits, dtype=torch.float64), torch.tensor(y)).item()
    assert abs(loss - ref) <= 1e-6 * ref
    assert dlogits.dtype == dtype


def test_softmax_cross_entropy_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        nc.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        nc.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2]))


# --------------------------------------------------------------------------------------------
# The course CNN
# --------------------------------------------------------------------------------------------

def test_init_cnn_keys_shapes_dtypes_and_count():
    params = nc.init_cnn(0)
    assert list(params) == list(nc.PARAM_NAMES)
    expected = {"conv1_w": (32, 1, 3, 3), "conv2_w": (64, 32, 3, 3), "conv3_w": (64, 64, 3, 3),
                "fc1_w": (576, 64), "fc2_w": (64, 10), "conv1_b": (32,), "conv2_b": (64,),
                "conv3_b": (64,), "fc1_b": (64,), "fc2_b": (10,)}
    for k, shape in expected.items():
        assert params[k].shape == shape
        assert params[k].dtype == np.float32
    assert sum(v.size for v in params.values()) == 93_322
    # Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    a = np.sqrt(6 / (288 + 576))
    assert params["conv2_w"].max() <= a and params["conv2_w"].min() >= -a
    assert abs(params["conv2_w"].std() - a / np.sqrt(3)) < 0.05 * a / np.sqrt(3)
    assert not params["conv1_b"].any()
    # He: N(0, 2 / fan_in)
    he = nc.init_cnn(0, scheme="he")
    assert abs(he["conv2_w"].std() - np.sqrt(2 / 288)) < 0.05 * np.sqrt(2 / 288)
    assert all(v.dtype == np.float32 for v in he.values())
    with pytest.raises(ValueError, match="glorot"):
        nc.init_cnn(0, scheme="xavier")


def test_init_cnn_is_deterministic():
    a, b, c = nc.init_cnn(0), nc.init_cnn(0), nc.init_cnn(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1_w"], c["conv1_w"])


def _torch_cnn_logits(params, x):
    h = F.max_pool2d(F.relu(F.conv2d(x, params["conv1_w"], params["conv1_b"])), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, params["conv2_w"], params["conv2_b"])), 2)
    h = F.relu(F.conv2d(h, params["conv3_w"], params["conv3_b"])).flatten(1)
    h = F.relu(h @ params["fc1_w"] + params["fc1_b"])
    return h @ params["fc2_w"] + params["fc2_b"]


def test_cnn_forward_and_grads_match_torch_autograd():
    params = {k: v.astype(np.float64) for k, v in nc.init_cnn(3).items()}
    x, y = randn(4, 1, 28, 28), RNG.integers(0, 10, 4)
    logits, _ = nc.cnn_forward(params, x)
    pt = {k: t(v, True) for k, v in params.items()}
    ref = _torch_cnn_logits(pt, t(x))
    assert logits.shape == (4, 10)
    assert rel_error(logits, ref.detach().numpy()) < 1e-10
    loss, grads = nc.cnn_loss_and_grads(params, x, y)
    ref_loss = F.cross_entropy(ref, torch.tensor(y))
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) < 1e-12
    assert list(grads) == list(nc.PARAM_NAMES)
    for k, value in params.items():
        assert grads[k].shape == value.shape
        assert rel_error(grads[k], pt[k].grad.numpy()) < 1e-8, k


def test_cnn_loss_and_grads_match_numerical_gradient():
    params = {k: v.astype(np.float64) for k, v in nc.init_cnn(5).items()}
    x, y = randn(2, 1, 28, 28), np.array([3, 7])
    _, grads = nc.cnn_loss_and_grads(params, x, y)
    idx = np.random.default_rng(0)
    for k, value in params.items():
        # a numerical gradient of every entry is slow: check a few entries of each tensor
        flat = value.reshape(-1)
        picks = idx.choice(flat.size, size=min(3, flat.size), replace=False)
        for i in picks:
            old = flat[i]
            flat[i] = old + 1e-5
            plus = nc.cnn_loss_and_grads(params, x, y)[0]
            flat[i] = old - 1e-5
            minus = nc.cnn_loss_and_grads(params, x, y)[0]
            flat[i] = old
            num = (plus - minus) / 2e-5
            assert rel_error(grads[k].reshape(-1)[i], num) < 1e-5, (k, i)
    # and a whole small tensor with numerical_gradient
    num = numerical_gradient(lambda _: nc.cnn_loss_and_grads(params, x, y)[0], params["fc2_b"])
    assert rel_error(grads["fc2_b"], num) < 1e-5  # tiny entries: float64 noise of the loss


def test_cnn_float32_stays_float32():
    params = nc.init_cnn(0)
    x = randn(3, 1, 28, 28).astype(np.float32)
    logits, _ = nc.cnn_forward(params, x)
    _, grads = nc.cnn_loss_and_grads(params, x, np.array([1, 2, 3]))
    assert logits.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_cnn_input_errors():
    params = nc.init_cnn(0)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\), got \(2, 28, 28\)"):
        nc.cnn_forward(params, np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match="normalize"):
        nc.cnn_forward(params, np.zeros((2, 1, 28, 28), np.uint8))
    bad = dict(params)
    del bad["fc1_b"]
    with pytest.raises(ValueError, match="fc1_b"):
        nc.cnn_forward(bad, np.zeros((2, 1, 28, 28), np.float32))
    bad = dict(params, fc1_w=params["fc1_w"].T)
    with pytest.raises(ValueError, match=r"\(576, 64\)"):
        nc.cnn_forward(bad, np.zeros((2, 1, 28, 28), np.float32))


def test_predict_batches_agree_with_forward():
    params = nc.init_cnn(0)
    x = randn(7, 1, 28, 28).astype(np.float32)
    pred = nc.predict(params, x, batch_size=3)
    assert pred.shape == (7,) and pred.dtype == np.int64
    assert np.array_equal(pred, nc.cnn_forward(params, x)[0].argmax(axis=1))


def _random_cnn64(seed):
    """float64 parameters with non-zero biases (so that bias gradients are not trivial)."""
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float64) for k, v in nc.init_cnn(seed, scheme="he").items()}
    for k, value in params.items():
        if k.endswith("_b"):
            params[k] = 0.1 * rng.standard_normal(value.shape)
    return params


def _tie_images(rng, n):
    """Images with large constant areas: after ReLU many pooling windows hold tied maxima (equal
    positive values, or all zeros), so the first-maximum rule decides where gradients go."""
    x = rng.standard_normal((n, 1, 28, 28))
    x[:, :, 4:20, 2:16] = 1.5        # a bright block: equal conv outputs inside it
    x[:, :, 18:28, 10:28] = -2.0     # a dark block: negative conv outputs, ReLU zeros
    x[0] = 0.0                        # an all-black image: every map is constant
    return x


@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, True), (3, True)])
def test_composed_and_fused_paths_agree_in_float64(seed, ties):
    rng = np.random.default_rng(100 + seed)
    params = _random_cnn64(seed)
    x = _tie_images(rng, 5) if ties else rng.standard_normal((5, 1, 28, 28))
    y = rng.integers(0, 10, 5)
    logits, cache = nc.cnn_forward(params, x)
    assert isinstance(cache, dict) and {"conv1", "pool1", "relu3", "fc2"} <= set(cache)
    assert rel_error(nc.fused_forward(params, x), logits) < 1e-12
    loss, grads = nc.cnn_loss_and_grads(params, x, y)
    fused_loss, fused_grads = nc.fused_loss_and_grads(params, x, y)
    assert abs(loss - fused_loss) <= 1e-12 * abs(loss)
    assert list(grads) == list(fused_grads) == list(nc.PARAM_NAMES)
    for k in nc.PARAM_NAMES:
        assert grads[k].shape == fused_grads[k].shape == nc.PARAM_SHAPES[k]
        assert grads[k].dtype == fused_grads[k].dtype == np.float64
        assert rel_error(grads[k], fused_grads[k]) < 1e-10, k
    if ties:  # the batch really has tied windows, and the gradient is not all zeros there
        pooled = cache["pool1"].windows
        assert (pooled[0] == pooled[1]).mean() > 0.05
        assert np.abs(grads["conv1_w"]).max() > 0


def test_cnn_backward_is_the_second_half_of_cnn_loss_and_grads():
    params = _random_cnn64(4)
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((3, 1, 28, 28)), np.array([0, 4, 9])
    logits, cache = nc.cnn_forward(params, x)
    loss, dlogits = nc.softmax_cross_entropy(logits, y)
    grads = nc.cnn_backward(dlogits, cache)
    ref_loss, ref = nc.cnn_loss_and_grads(params, x, y)
    assert loss == ref_loss
    assert all(np.array_equal(grads[k], ref[k]) for k in nc.PARAM_NAMES)


def test_fused_paths_keep_float32_and_check_their_inputs():
    params = nc.init_cnn(0)
    x = randn(3, 1, 28, 28).astype(np.float32)
    assert nc.fused_forward(params, x).dtype == np.float32
    _, grads = nc.fused_loss_and_grads(params, x, np.array([1, 2, 3]))
    assert all(g.dtype == np.float32 for g in grads.values())
    for fn in (nc.fused_forward, lambda p, x: nc.fused_loss_and_grads(p, x, np.zeros(2, int))):
        with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\), got \(2, 28, 28\)"):
            fn(params, np.zeros((2, 28, 28), np.float32))
        with pytest.raises(ValueError, match="normalize"):
            fn(params, np.zeros((2, 1, 28, 28), np.uint8))
        with pytest.raises(ValueError, match=r"\(576, 64\)"):
            fn(dict(params, fc1_w=params["fc1_w"].T), np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        nc.fused_loss_and_grads(params, np.zeros((2, 1, 28, 28), np.float32), np.array([0, 10]))


@pytest.mark.parametrize("xshape, wshape", [((2, 1, 9, 9), (3, 1, 3, 3)),   # channels-first
                                            ((2, 8, 5, 5), (4, 8, 3, 3))])  # channels-last
def test_conv2d_both_im2col_layouts_match_torch(xshape, wshape):
    # conv2d_forward picks an im2col layout from the shapes; both must give torch's numbers
    x, w, b = randn(*xshape), randn(*wshape), randn(wshape[0])
    for stride, pad in ((1, 0), (2, 1)):
        out, cache = nc.conv2d_forward(x, w, b, stride=stride, pad=pad)
        xt, wt, bt = t(x, True), t(w, True), t(b, True)
        ref = F.conv2d(xt, wt, bt, stride=stride, padding=pad)
        assert rel_error(out, ref.detach().numpy()) < 1e-10
        dout = randn(*out.shape)
        ref.backward(t(dout))
        dx, dw, db = nc.conv2d_backward(dout, cache)
        for mine, theirs in ((dx, xt), (dw, wt), (db, bt)):
            assert rel_error(mine, theirs.grad.numpy()) < 1e-10
        assert out.flags.c_contiguous and dx.flags.c_contiguous


def test_layers_do_not_change_their_inputs():
    x, w, b = randn(2, 3, 8, 8), randn(4, 3, 3, 3), randn(4)
    copies = [a.copy() for a in (x, w, b)]
    out, cache = nc.conv2d_forward(x, w, b, pad=1)
    dout = randn(*out.shape)
    dout_copy = dout.copy()
    nc.conv2d_backward(dout, cache)
    _, pcache = nc.maxpool2d_forward(x)
    dp = randn(2, 3, 4, 4)
    dp_copy = dp.copy()
    nc.maxpool2d_backward(dp, pcache)
    assert all(np.array_equal(a, c) for a, c in zip((x, w, b), copies))
    assert np.array_equal(dout, dout_copy) and np.array_equal(dp, dp_copy)


def test_summary_prints_table_and_returns_count(capsys):
    assert nc.summary(nc.init_cnn(0)) == 93_322
    out = capsys.readouterr().out
    for text in ("conv1", "(None, 32, 26, 26)", "(None, 64, 5, 5)", "(None, 576)", "fc2",
                 "Total params: 93,322"):
        assert text in out


# --------------------------------------------------------------------------------------------
# Optimisers against torch.optim
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, make_torch", [
    (lambda: nc.SGD(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    (lambda: nc.SGD(0.05, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    (lambda: nc.Adam(1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    (lambda: nc.Adam(), lambda ps: torch.optim.Adam(ps, lr=1e-3)),
])
def test_optimisers_match_torch(make, make_torch):
    params = {"a": randn(3, 4), "b": randn(5)}
    pt = {k: t(v.copy(), True) for k, v in params.items()}
    opt, opt_t = make(), make_torch(list(pt.values()))
    for _ in range(3):  # several steps: momentum and Adam's moments matter after the first
        grads = {k: randn(*v.shape) for k, v in params.items()}
        opt.step(params, grads)
        for k, tensor in pt.items():
            tensor.grad = t(grads[k])
        opt_t.step()
    for k, value in params.items():
        assert rel_error(value, pt[k].detach().numpy()) < 1e-12


def test_adam_updates_float32_in_place():
    params = nc.init_cnn(0)
    before = params["fc2_w"].copy()
    ref = params["fc2_w"]
    grads = {k: np.ones_like(v) for k, v in params.items()}
    nc.Adam(1e-3).step(params, grads)
    assert params["fc2_w"] is ref and params["fc2_w"].dtype == np.float32
    np.testing.assert_allclose(before - params["fc2_w"], 1e-3, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def test_fit_learns_on_a_small_subset(mnist):
    from mnist_course import data

    (x_train, y_train), (x_test, y_test) = mnist
    xtr, ytr = data.normalize(x_train[:2000]), y_train[:2000]
    xte, yte = data.normalize(x_test[:500]), y_test[:500]
    params = nc.init_cnn(0)
    rows = []
    history = nc.fit(params, xtr, ytr, xte, yte, epochs=1, batch_size=64, progress=False,
                     on_epoch=rows.append)
    assert set(history) >= {"epochs", "step_loss", "test_accuracy", "train_seconds",
                            "seconds_per_epoch"}
    assert len(history["step_loss"]) == 32  # ceil(2000 / 64)
    assert rows == history["epochs"]
    row = rows[0]
    assert set(row) == {"epoch", "loss", "train_acc", "test_acc", "seconds"}
    assert row["epoch"] == 1 and row["seconds"] > 0
    assert history["test_accuracy"] == row["test_acc"] > 0.7  # chance is 0.1
    assert history["step_loss"][-1] < history["step_loss"][0]


def test_fit_is_deterministic_and_rejects_raw_images():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    runs = []
    for _ in range(2):
        params = nc.init_cnn(0)
        h = nc.fit(params, x, y, x[:10], y[:10], epochs=1, batch_size=16, progress=False)
        runs.append((h["step_loss"], params["fc2_w"]))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    with pytest.raises(ValueError, match="normalize"):
        nc.fit(nc.init_cnn(0), np.zeros((4, 1, 28, 28), np.uint8), y[:4], x[:2], y[:2],
               progress=False)


# --------------------------------------------------------------------------------------------
# Saving and loading weights: atomic writes, safe and checked reads
# --------------------------------------------------------------------------------------------

MLP_SHAPES = {"w1": (784, 128), "b1": (128,), "w2": (128, 10), "b2": (10,)}


def _mlp():
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in MLP_SHAPES.items()}


def test_save_and_load_params_round_trip(tmp_path):
    params = nc.init_cnn(seed=3)
    path = nc.save_params(tmp_path / "numpy_cnn.npz", params)
    assert path == tmp_path / "numpy_cnn.npz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numpy_cnn.npz"]  # no temporary file
    loaded = nc.load_params(path)
    assert list(loaded) == list(nc.PARAM_SHAPES)
    for k in params:
        assert loaded[k].dtype == np.float32 and np.array_equal(loaded[k], params[k])
    with np.load(path, allow_pickle=False) as f:  # what the lessons read with np.load
        assert sorted(f.files) == sorted(params)


def test_mlp_params_load_with_their_own_shapes_or_none(tmp_path):
    mlp = _mlp()
    path = nc.save_params(tmp_path / "numpy_mlp.npz", mlp)
    for shapes in (None, MLP_SHAPES):
        loaded = nc.load_params(path, shapes=shapes)
        assert sorted(loaded) == sorted(mlp)
        assert all(np.array_equal(loaded[k], mlp[k]) for k in mlp)


def test_save_params_keeps_the_name_and_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "weights"  # no .npz: np.savez would have written weights.npz
    nc.save_params(path, {"w": np.ones(3)})
    assert path.is_file() and not (tmp_path / "weights.npz").exists()
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nc.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        nc.save_params(path, {"w": np.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before, "an interrupted save damaged the old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]


@pytest.mark.parametrize("params, words", [
    ({}, "non-empty dict"),
    ({"w": np.array([1, 2, 3])}, "float arrays"),
    ({"w": np.array([{"a": 1}], dtype=object)}, "float arrays"),
    ({3: np.ones(2)}, "non-empty strings"),
])
def test_save_params_refuses_what_is_not_weights(tmp_path, params, words):
    with pytest.raises(ValueError, match=words):
        nc.save_params(tmp_path / "w.npz", params)
    assert list(tmp_path.iterdir()) == []


def test_save_params_into_a_missing_folder(tmp_path):
    with pytest.raises(nc.WeightsFileError, match="cannot write .*Does the folder"):
        nc.save_params(tmp_path / "nope" / "w.npz", {"w": np.ones(2)})


def _load_error(path, shapes=nc.PARAM_SHAPES) -> str:
    with pytest.raises(nc.WeightsFileError) as info:
        nc.load_params(path, shapes)
    msg = str(info.value)
    assert str(path) in msg
    assert isinstance(info.value, ValueError) and "Traceback" not in msg
    return msg


def test_missing_weights_file_says_which_lesson_writes_it(tmp_path):
    with pytest.raises(nc.MissingWeightsError) as info:
        nc.load_params(tmp_path / "numpy_cnn.npz")
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert "numpy_cnn.npz does not exist" in msg and "lesson 03 (03_numpy_cnn.ipynb)" in msg
    with pytest.raises(nc.MissingWeightsError, match="lesson 01"):
        nc.load_params(tmp_path / "numpy_mlp.npz", shapes=None)
    with pytest.raises(nc.MissingWeightsError, match="train it again"):
        nc.load_params(tmp_path / "mine.npz", remedy="train it again")
    assert "is not a file" in _load_error(tmp_path)


def _good_bytes(tmp_path) -> bytes:
    return nc.save_params(tmp_path / "good.npz", nc.init_cnn(seed=0)).read_bytes()


@pytest.mark.parametrize("damage, words", [
    ("empty", "is empty"),
    ("a few bytes", "truncated or damaged"),
    ("half", "truncated or damaged"),
    ("flipped byte", "truncated or damaged"),
    ("text", "pickled Python objects"),
])
def test_damaged_weights_file(tmp_path, damage, words):
    good = _good_bytes(tmp_path)
    content = {"empty": b"", "a few bytes": good[:5], "half": good[: len(good) // 2],
               "text": b"these are not weights\n"}.get(damage)
    if damage == "flipped byte":  # inside the data of the last array: the CRC catches it
        content = bytearray(good)
        content[len(good) - 300] ^= 0xFF
        content = bytes(content)
    path = tmp_path / "numpy_cnn.npz"
    path.write_bytes(content)
    msg = _load_error(path)
    assert words in msg and "lesson 03" in msg


def test_pickled_objects_are_refused_not_run(tmp_path):
    ran = tmp_path / "ran"
    payload = np.array([_Evil(str(ran))], dtype=object)
    as_npy = tmp_path / "evil.npy"
    np.save(as_npy, payload, allow_pickle=True)
    as_npz = tmp_path / "numpy_cnn.npz"
    np.savez(as_npz, **{**nc.init_cnn(seed=0), "conv1_b": payload})
    for path in (as_npy, as_npz):
        msg = _load_error(path, shapes=None)
        assert "pickled Python objects" in msg and "refused" in msg
    assert not ran.exists(), "loading ran code from the file"


class _Evil:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_single_array_or_a_foreign_zip_is_not_a_weights_file(tmp_path):
    np.save(tmp_path / "one.npy", np.ones(3))
    assert "single array" in _load_error(tmp_path / "one.npy", shapes=None)
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    assert "not a NumPy array" in _load_error(tmp_path / "other.npz", shapes=None)


def test_names_shapes_and_dtypes_are_checked(tmp_path):
    mlp = nc.save_params(tmp_path / "numpy_mlp.npz", _mlp())
    msg = _load_error(mlp)  # the MLP where the CNN is expected
    assert "missing conv1_w" in msg and "unexpected w1, b1, w2, b2" in msg
    assert "another network" in msg and "lesson 01" in msg

    params = nc.init_cnn(seed=0)
    params["fc1_w"] = params["fc1_w"].T.copy()
    wrong = nc.save_params(tmp_path / "numpy_cnn.npz", params)
    assert "fc1_w has shape (64, 576), expected (576, 64)" in _load_error(wrong)

    np.savez(tmp_path / "ints.npz", w=np.arange(3))
    assert "w has dtype int64, not floating-point" in _load_error(tmp_path / "ints.npz", None)
    np.savez(tmp_path / "none.npz")
    assert "holds no arrays" in _load_error(tmp_path / "none.npz", None)


def test_an_oversized_member_is_refused_before_it_is_inflated(tmp_path):
    big = {**nc.init_cnn(seed=0), "fc2_b": np.zeros(1_000_000, np.float32)}
    np.savez_compressed(tmp_path / "numpy_cnn.npz", **big)
    assert "fc2_b takes 4,000,128 bytes" in _load_error(tmp_path / "numpy_cnn.npz")
