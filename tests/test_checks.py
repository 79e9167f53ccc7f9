"""The check functions accept correct code and name the cause of typical bugs.

buggy_layers.py holds a correct implementation of every exercise (written independently of
mnist_course.numpy_cnn) and one function per typical mistake.
"""

from __future__ import annotations

import re

import buggy_layers as L
import numpy as np
import pytest

from mnist_course import _oracle, checks
from mnist_course.checks._core import _rel_error
from mnist_course.gradcheck import numerical_gradient, rel_error

CORRECT = {
    "check_relu": (L.relu_forward, L.relu_backward),
    "check_linear": (L.linear_forward, L.linear_backward),
    "check_softmax_cross_entropy": (L.softmax_cross_entropy,),
    "check_numerical_gradient": (L.numerical_gradient,),
    "check_conv2d_forward": (L.conv2d_forward,),
    "check_conv2d_backward": (L.conv2d_forward, L.conv2d_backward),
    "check_maxpool2d": (L.maxpool2d_forward, L.maxpool2d_backward),
    "check_cnn_loss_and_grads": (L.cnn_loss_and_grads,),
    "check_init": (L.init_params,),
    "check_cnn_forward": (L.cnn_forward,),
    "check_my_cnn": (L.MyCNN,),
    "check_one_hot": (L.one_hot,),
    "check_train_val_split": (L.train_val_split,),
    "check_mean_std": (L.mean_std,),
    "check_step_decay": (L.step_decay,),
    "check_random_shift": (L.random_shift,),
    "check_center_of_mass": (L.center_of_mass,),
}


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_implementation_passes_with_one_line(name, capsys):
    getattr(checks, name)(*CORRECT[name])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"✓ {name}: ")


def test_contract_names_are_exported():
    for name in CORRECT:
        assert name in checks.__all__


# (id, check, arguments, phrase the failure message must contain: a regular expression)
BUGS = [
    # the ten typical bugs of issue 3
    ("1 flipped kernel", "check_conv2d_forward", (L.conv_flipped,),
     r"flipped: convolution instead of cross-correlation\?"),
    ("2 output size off by one for stride > 1", "check_conv2d_forward", (L.conv_off_by_one,),
     r"stride 2, pad 0[\s\S]*off by one when stride > 1"),
    ("3 padding ignored", "check_conv2d_forward", (L.conv_no_pad,), r"padding ignored"),
    ("4 db not summed", "check_conv2d_backward", (L.conv2d_forward, L.conv_backward_db_unsummed),
     r"db not summed over the batch and spatial positions"),
    ("4b db is dout", "check_conv2d_backward", (L.conv2d_forward, L.conv_backward_db_raw),
     r"db not summed over the batch and spatial positions"),
    ("5 pool gradient everywhere", "check_maxpool2d",
     (L.maxpool2d_forward, L.pool_backward_everywhere), r"every position in the window"),
    ("6 pool gradient to every tie", "check_maxpool2d",
     (L.maxpool2d_forward, L.pool_backward_all_ties), r"many tied maxima[\s\S]*every tied maximum"),
    ("7 softmax overflow", "check_softmax_cross_entropy", (L.softmax_no_max,),
     r"inf/nan for large logits: subtract the max before exp"),
    ("8 loss summed", "check_softmax_cross_entropy", (L.softmax_summed,),
     r"loss is 4 times too large \(N = 4\): a sum over the batch instead of the mean"),
    ("9 dw transposed", "check_linear", (L.linear_forward, L.linear_backward_dw_transposed),
     r"dw has shape \(3, 5\); expected \(5, 3\)[\s\S]*dw is transposed"),
    ("10 x not restored", "check_numerical_gradient", (L.numgrad_no_restore,),
     r"did not restore x"),
    # more typical mistakes
    ("relu gradient passes where x <= 0", "check_relu",
     (L.relu_forward, L.relu_backward_passthrough), r"must be 0 where x <= 0"),
    ("relu forward in place", "check_relu", (L.relu_forward_inplace, L.relu_backward),
     r"changed its input x in place"),
    ("conv dx cropped with [pad:-pad]", "check_conv2d_backward",
     (L.conv2d_forward, L.conv_backward_crop_bug), r"\[pad:-pad\] is \[0:0\]"),
    ("backward check reports a wrong forward", "check_conv2d_backward",
     (L.conv_flipped, L.conv2d_backward), r"make check_conv2d_forward pass first"),
    ("pool ties to the last maximum", "check_maxpool2d",
     (L.maxpool2d_forward, L.pool_backward_last_tie), r"first maximum in row-major order"),
    ("log of clipped softmax", "check_softmax_cross_entropy", (L.softmax_log_clip,),
     r"1e4[\s\S]*wrong only for large logits"),
    ("dlogits not divided by N", "check_softmax_cross_entropy", (L.softmax_grad_not_averaged,),
     r"dlogits is 4 times too large"),
    ("linear db not summed", "check_linear", (L.linear_forward, L.linear_backward_db_unsummed),
     r"sum dout over the batch"),
    ("forward differences", "check_numerical_gradient", (L.numgrad_forward_difference,),
     r"one-sided differences"),
    ("divided by h", "check_numerical_gradient", (L.numgrad_divided_by_h,),
     r"twice too large: divide by 2 \* h"),
    ("cnn loss summed", "check_cnn_loss_and_grads", (L.cnn_summed_loss,),
     r"loss is 3 times too large"),
    ("cnn flatten order", "check_cnn_loss_and_grads", (L.cnn_flatten_hwc,),
     r"flatten order"),
    ("cnn conv2 backward", "check_cnn_loss_and_grads", (L.cnn_conv2_dw_flipped,),
     r"wrong gradients: conv2_w;[\s\S]*look first at conv2"),
    ("one-hot int64", "check_one_hot", (L.one_hot_int,), r"int64; expected float32"),
    ("one-hot transposed", "check_one_hot", (L.one_hot_transposed,), r"transposed"),
    ("split with two permutations", "check_train_val_split", (L.split_separate_perms,),
     r"labels no longer belong to their images"),
    ("split shuffles in place", "check_train_val_split", (L.split_inplace_shuffle,),
     r"modified in place"),
    ("split ignores the seed", "check_train_val_split", (L.split_unseeded,),
     r"same seed gave a different split"),
    ("population standard deviation", "check_mean_std", (L.mean_std_population,),
     r"population standard deviation \(ddof=0[\s\S]*factor 0\.82[\s\S]*ddof=1"),
    ("variance instead of std", "check_mean_std", (L.mean_std_variance,), r"the variance"),
    ("mean and std swapped", "check_mean_std", (L.mean_std_swapped,), r"swapped"),
    # the centre of mass of a drawing (lesson 06)
    ("com row and column swapped", "check_center_of_mass", (L.com_swapped,),
     r"row and column are swapped"),
    ("com 1-based", "check_center_of_mass", (L.com_one_based,), r"indices start at 1"),
    ("com unweighted", "check_center_of_mass", (L.com_unweighted,),
     r"case 2 of 3[\s\S]*plain mean position of the inked pixels"),
    ("com bounding box", "check_center_of_mass", (L.com_bounding_box,),
     r"centre of the bounding box"),
    ("com not normalised", "check_center_of_mass", (L.com_not_normalised,),
     r"not divided by the total ink"),
    ("com divided by the size", "check_center_of_mass", (L.com_divided_by_size,),
     r"number of rows \(columns\)"),
    ("com changes the image", "check_center_of_mass", (L.com_in_place,),
     r"changed the image"),
    ("mean_std sorts its input", "check_mean_std", (L.mean_std_sorts_input,),
     r"changed its input"),
    ("step decay off by one", "check_step_decay", (L.step_decay_off_by_one,),
     r"off by one epoch"),
    ("step decay every epoch", "check_step_decay", (L.step_decay_every_epoch,),
     r"decays every epoch"),
    ("shift with torch.roll", "check_random_shift", (L.shift_roll,), r"wrap around"),
    ("shift never reaches +max", "check_random_shift", (L.shift_exclusive_high,),
     r"upper bound is exclusive"),
    ("shift fills 0", "check_random_shift", (L.shift_zero_fill,), r"pixels shifted in are 0"),
    ("one shift for the batch", "check_random_shift", (L.shift_same_for_all,),
     r"every image got the same shift"),
    ("shift ignores the generator", "check_random_shift", (L.shift_unseeded,),
     r"same seeded generator gave different shifts"),
    ("shift the opposite way", "check_random_shift", (L.shift_reversed,),
     r"moved the opposite way \(up by dy, left by dx\)"),
    ("shift rows and columns swapped", "check_random_shift", (L.shift_swapped,),
     r"dy moved the images sideways"),
    # issue 23: the order and the number of the draws
    ("shift dx drawn first", "check_random_shift", (L.shift_dx_drawn_first,),
     r"either dx was drawn before dy \(draw dy first, then dx"),
    ("shift dx first and reversed", "check_random_shift", (L.shift_dx_first_reversed,),
     r"reversed, and rows and columns exchanged[\s\S]*dx was drawn before dy"),
    ("shift one draw for both", "check_random_shift", (L.shift_one_draw_for_both,),
     r"moved along a diagonal \(dy == dx[\s\S]*one draw was used for both directions"),
    ("shift one draw, opposite signs", "check_random_shift", (L.shift_one_draw_opposite,),
     r"moved along a diagonal[\s\S]*Draw dy and dx separately"),
    # holes closed (issue 11)
    ("numerical gradient on a copy of x", "check_numerical_gradient", (L.numgrad_on_copy,),
     r"reads x from outside[\s\S]*grad is all zeros[\s\S]*perturb a copy of x[\s\S]*in place"),
    ("relu gradient passes at x == 0", "check_relu", (L.relu_forward, L.relu_backward_ge_zero),
     r"exact zeros[\s\S]*passes at x == 0: use the mask \(x > 0\), not \(x >= 0\)"),
    ("conv dx assigned, not accumulated", "check_conv2d_backward",
     (L.conv2d_forward, L.conv_backward_assign),
     r"dx is wrong only where windows overlap[\s\S]*accumulate with \+="),
    ("conv db averaged", "check_conv2d_backward", (L.conv2d_forward, L.conv_backward_db_mean),
     (r"db is dout averaged over the batch and positions[\s\S]*the bias gradient is the SUM "
     r"over the batch and positions")),
    # issue 23: im2col (lesson 02's vectorised convolution)
    *[(f"im2col columns in the order {order}", "check_conv2d_forward",
       (L.make_conv_im2col(bug)[0],),
       (rf"case 1 of 7[\s\S]*the im2col columns list each window's values in the order "
        rf"\({order}\), but w is flattened as w\.reshape\(F, -1\), in the order \(C, KH, KW\)"))
      for bug, order in (("cji", "C, KW, KH"), ("ijc", "KH, KW, C"), ("jic", "KW, KH, C"))],
    ("im2col output reshaped without the transpose", "check_conv2d_forward",
     (L.make_conv_im2col("no_transpose")[0],),
     r"values are right but in the wrong places[\s\S]*transpose\(0, 3, 1, 2\)"),
    ("np.pad on every axis", "check_conv2d_forward", (L.make_conv_im2col("pad_all_axes")[0],),
     (r"case 2 of 7[\s\S]*an error with pad = 1 \(the cases with pad = 0 passed\): np\.pad\(x, "
      r"pad\) pads every axis, N and C too")),
    *[(f"col2im in the order {order}", "check_conv2d_backward",
       (L.make_conv_im2col()[0], L.make_conv_im2col(f"backward_{bug}")[1]),
       rf"in backward, the columns \(col2im\) list each window's values in the order \({order}\)")
      for bug, order in (("cji", "C, KW, KH"), ("ijc", "KH, KW, C"), ("jic", "KW, KH, C"))],
    ("dout reshaped without the transpose", "check_conv2d_backward",
     (L.make_conv_im2col()[0], L.make_conv_im2col("dout_no_transpose")[1]),
     r"dout is turned into a matrix with a reshape alone"),
    ("backward windows not re-padded", "check_conv2d_backward",
     (L.make_conv_im2col()[0], L.make_conv_im2col("windows_not_padded")[1]),
     r"case 2 of 7[\s\S]*are the windows in backward taken from x without the padding"),
    ("dx cropped from 0", "check_conv2d_backward",
     (L.make_conv_im2col()[0], L.make_conv_im2col("crop_from_zero")[1]),
     r"cut at \[0:H, 0:W\] instead of \[pad:pad \+ H, pad:pad \+ W\]"),
    # lesson 03: initialisation
    ("init LeCun", "check_init", (L.init_lecun,),
     (r"conv1_w[\s\S]*LeCun's rule\. He uses 2 / fan_in for every layer in this course, the last "
     r"one included")),
    ("init LeCun in the last layer only", "check_init", (L.init_lecun_last_layer,),
     r"fc2_w[\s\S]*LeCun's rule[\s\S]*the last one included"),
    ("init variance as std", "check_init", (L.init_variance_as_std,),
     r"the variance 2 / fan_in was used as the std"),
    ("init fan_in from the wrong axes", "check_init", (L.init_fan_wrong_axes,),
     r"fan_in taken from the wrong axes"),
    ("glorot without fan_out", "check_init", (L.init_glorot_no_fan_out,),
     r"scheme='glorot'[\s\S]*fan_out missing in Glorot"),
    ("glorot drawn from a normal", "check_init", (L.init_glorot_normal,),
     r"outside \(-a, a\)[\s\S]*uniform U\(-a, a\)"),
    ("init ignores the scheme", "check_init", (L.init_ignores_scheme,),
     r"scheme argument ignored"),
    ("init float64", "check_init", (L.init_float64,),
     r"dtype float64; expected float32[\s\S]*astype\(np\.float32\)"),
    ("init from the global random state", "check_init", (L.init_global_state,),
     r"global random state[\s\S]*default_rng\(seed\)"),
    ("init ignores the seed", "check_init", (L.init_fixed_seed,), r"the seed has no effect"),
    ("init default scheme glorot", "check_init", (L.init_default_glorot,),
     r"the default is scheme='he'"),
    ("init without a scheme argument", "check_init", (L.init_no_scheme,),
     r"expected signature is init_params\(seed=0, scheme='he'\)"),
    ("init bias not zero", "check_init", (L.init_bias_ones,), r"fc1_b is not zero"),
    # lesson 03: the forward pass
    ("forward ReLU on the logits", "check_cnn_forward", (L.cnn_forward_relu_logits,),
     r"ReLU on the logits"),
    ("forward without the first pooling", "check_cnn_forward", (L.cnn_forward_no_pool1,),
     (r"raised ValueError[\s\S]*the max pooling after conv1 is missing: the flattened "
     r"activations have 6400 features")),
    ("forward flatten (H, W, C)", "check_cnn_forward", (L.cnn_forward_flatten_hwc,),
     r"flatten order[\s\S]*\(C, H, W\)"),
    ("forward without the ReLU after fc1", "check_cnn_forward", (L.cnn_forward_no_relu_fc1,),
     r"the ReLU after fc1 is missing"),
    ("forward returns the logits only", "check_cnn_forward", (L.cnn_forward_logits_only,),
     r"should return a tuple \(logits, cache\)[\s\S]*return logits, cache"),
    # the course CNN as an nn.Module
    ("MyCNN without conv3", "check_my_cnn", (L.MyCNNNoConv3,),
     r"no layer attribute 'conv3'[\s\S]*nn\.Conv2d\(64, 64, kernel_size=3\)"),
    ("MyCNN channels swapped", "check_my_cnn", (L.MyCNNChannelsSwapped,),
     r"self\.conv2\.weight has shape \(32, 64, 3, 3\)[\s\S]*swapped"),
    ("MyCNN wrong flatten size", "check_my_cnn", (L.MyCNNFlatten1600,),
     r"self\.fc1\.weight has shape \(64, 1600\)[\s\S]*flattens to 64 \* 3 \* 3 = 576"),
    ("MyCNN forward raises", "check_my_cnn", (L.MyCNNNoPool1,),
     (r"MyCNNNoPool1\.forward raised RuntimeError[\s\S]*self\.conv2 receives \(4, 32, 26, 26\), "
     r"expected \(4, 32, 13, 13\): a max pooling is missing before conv2")),
    ("MyCNN without flatten", "check_my_cnn", (L.MyCNNNoFlatten,),
     r"self\.fc1 receives \(4, 64, 3, 3\)[\s\S]*torch\.flatten\(x, 1\)"),
    ("MyCNN ReLU on the logits", "check_my_cnn", (L.MyCNNReluLogits,),
     r"ReLU after fc2"),
    ("MyCNN without super().__init__()", "check_my_cnn", (L.MyCNNNoSuperInit,),
     r"call super\(\)\.__init__\(\) first"),
]


@pytest.mark.parametrize(("check", "args", "phrase"), [b[1:] for b in BUGS],
                         ids=[b[0] for b in BUGS])
def test_typical_bug_is_named(check, args, phrase, capsys):
    with pytest.raises(AssertionError) as info:
        getattr(checks, check)(*args)
    message = str(info.value)
    assert re.search(phrase, message), message
    assert message.startswith(f"{check}"), message
    assert "✓" not in capsys.readouterr().out


def test_failure_names_the_case_and_the_error_size():
    with pytest.raises(AssertionError) as info:
        checks.check_conv2d_forward(L.conv_flipped)
    message = str(info.value)
    assert "case 1 of 7 failed: x (2, 3, 5, 5), w (4, 3, 3, 3), stride 1, pad 0" in message
    assert re.search(r"max rel\. error \d\.\de[+-]\d\d \(tolerance 1e-07\)", message)


def test_not_implemented_error_propagates_unchanged():
    for name, args in CORRECT.items():
        stubbed = (L.not_implemented,) + args[1:]
        with pytest.raises(NotImplementedError):
            getattr(checks, name)(*stubbed)
    with pytest.raises(NotImplementedError):
        checks.check_relu(L.relu_forward, L.not_implemented)


def test_learner_exception_is_wrapped_with_the_case():
    with pytest.raises(AssertionError) as info:
        checks.check_conv2d_forward(L.conv_value_error)
    message = str(info.value)
    assert "case 1 of 7 failed: x (2, 3, 5, 5)" in message
    assert "conv_value_error raised ValueError" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_wrong_signature_shows_the_expected_one():
    def conv(x, w, b, s=1, p=0):
        return L.conv2d_forward(x, w, b, s, p)

    with pytest.raises(AssertionError, match=r"expected signature is conv2d_forward\(x, w, b, "
                                             r"stride=1, pad=0\)"):
        checks.check_conv2d_forward(conv)


def test_wrong_return_type_says_what_was_expected():
    with pytest.raises(AssertionError, match=r"should return a tuple \(out, cache\); it "
                                             r"returned an array of shape \(2, 4, 3, 3\)"):
        checks.check_conv2d_forward(L.conv_returns_array)
    with pytest.raises(AssertionError, match=r"a missing `return`"):
        checks.check_softmax_cross_entropy(lambda logits, y: None)
    with pytest.raises(AssertionError, match=r"one value per sample"):
        checks.check_softmax_cross_entropy(
            lambda z, y: (np.ones(len(y)), L.softmax_cross_entropy(z, y)[1]))


def test_float32_results_pass_with_a_looser_tolerance(capsys):
    def conv32(x, w, b, stride=1, pad=0):
        out, cache = L.conv2d_forward(x.astype(np.float32), w.astype(np.float32),
                                      b.astype(np.float32), stride, pad)
        return out, cache

    checks.check_conv2d_forward(conv32)
    assert "(float32 results)" in capsys.readouterr().out

    def cnn32(params, x, y):
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        return L.cnn_loss_and_grads(p32, x.astype(np.float32), y)

    checks.check_cnn_loss_and_grads(cnn32)


def test_oracle_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 4))
    w = rng.standard_normal((2, 2, 2, 3))
    b = rng.standard_normal(2)
    stride, pad = 2, 1
    dout = rng.standard_normal(_oracle.conv2d(x, w, b, stride, pad).shape)
    dx, dw, db = _oracle.conv2d_grads(x, w, b, stride, pad, dout)

    def loss_x(v):
        return float(np.sum(_oracle.conv2d(v, w, b, stride, pad) * dout))

    def loss_w(v):
        return float(np.sum(_oracle.conv2d(x, v, b, stride, pad) * dout))

    np.testing.assert_allclose(dx, numerical_gradient(loss_x, x), atol=1e-7)
    np.testing.assert_allclose(dw, numerical_gradient(loss_w, w), atol=1e-7)
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), atol=1e-12)

    logits = rng.standard_normal((3, 4))
    y = np.array([0, 3, 1])
    _, dlogits = _oracle.softmax_cross_entropy(logits, y)
    numeric = numerical_gradient(lambda z: _oracle.softmax_cross_entropy(z, y)[0], logits)
    np.testing.assert_allclose(dlogits, numeric, atol=1e-8)


def test_oracle_pooling_sends_ties_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    dx = _oracle.maxpool2d_grad(x, 2, 2, np.ones((1, 1, 1, 1)))
    assert dx.ravel().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_checks_leave_their_inputs_alone_and_are_deterministic(capsys):
    checks.check_conv2d_backward(L.conv2d_forward, L.conv2d_backward)
    checks.check_conv2d_backward(L.conv2d_forward, L.conv2d_backward)
    first, second = capsys.readouterr().out.splitlines()
    assert first == second


def test_the_course_reference_passes_the_checks(capsys):
    """The package's NumPy reference, run through the checks (not used as an oracle)."""
    ref = pytest.importorskip("mnist_course.numpy_cnn")
    checks.check_relu(ref.relu_forward, ref.relu_backward)
    checks.check_linear(ref.linear_forward, ref.linear_backward)
    checks.check_softmax_cross_entropy(ref.softmax_cross_entropy)
    checks.check_conv2d_forward(ref.conv2d_forward)
    checks.check_conv2d_backward(ref.conv2d_forward, ref.conv2d_backward)
    checks.check_maxpool2d(ref.maxpool2d_forward, ref.maxpool2d_backward)
    checks.check_cnn_loss_and_grads(ref.cnn_loss_and_grads)
    checks.check_cnn_forward(ref.cnn_forward)
    checks.check_init(lambda seed=0, scheme="he": ref.init_cnn(seed, scheme))
    gradcheck = pytest.importorskip("mnist_course.gradcheck")
    checks.check_numerical_gradient(gradcheck.numerical_gradient)
    torch_cnn = pytest.importorskip("mnist_course.torch_cnn")
    checks.check_my_cnn(torch_cnn.CourseCNN)
    assert len(capsys.readouterr().out.splitlines()) == 11


def test_relu_checks_the_gradient_at_exact_zeros():
    # torch's convention, and the course's: the gradient of ReLU at x == 0 is 0
    with pytest.raises(AssertionError, match=r"passes at x == 0"):
        checks.check_relu(L.relu_forward, lambda dout, x: dout * (x >= 0))


def test_conv_assign_bug_is_harmless_without_overlap():
    # stride 3 with a 3x3 kernel: no input belongs to two windows, so = and += agree
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9))
    w = np.random.default_rng(1).standard_normal((2, 2, 3, 3))
    out, cache = L.conv2d_forward(x, w, np.zeros(2), stride=3)
    dout = np.ones_like(out)
    assert rel_error(L.conv_backward_assign(dout, cache)[0],
                     L.conv2d_backward(dout, cache)[0]) < 1e-12


def _init_variant(draw):
    """A correct init_params written another way: draw(rng, shape, scheme, fan_in, fan_out)."""
    def init_params(seed=0, scheme="he"):
        rng = np.random.default_rng(seed)
        params = {}
        for name in reversed(list(L.SHAPES)):        # another drawing order
            shape = L.SHAPES[name]
            if name.endswith("_b"):
                params[name] = np.zeros(shape, np.float32)
                continue
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
            fan_out = shape[0] * int(np.prod(shape[2:])) if len(shape) == 4 else shape[1]
            params[name] = np.asarray(draw(rng, shape, scheme, fan_in, fan_out), np.float32)
        return params
    return init_params


@pytest.mark.parametrize("draw", [
    lambda rng, s, scheme, fi, fo: (rng.normal(0, np.sqrt(2 / fi), s) if scheme == "he"
                                    else rng.uniform(-1, 1, s) * np.sqrt(6 / (fi + fo))),
    lambda rng, s, scheme, fi, fo: (rng.standard_normal(s, dtype=np.float32) * np.sqrt(2 / fi)
                                    if scheme == "he" else
                                    (2 * rng.random(s) - 1) * np.sqrt(6 / (fi + fo))),
], ids=["rng.normal and rng.uniform", "float32 draws and rng.random"])
def test_check_init_accepts_other_correct_ways(draw, capsys):
    checks.check_init(_init_variant(draw))
    assert capsys.readouterr().out.startswith("✓ check_init: 2 cases")


def test_check_init_leaves_the_global_random_state_alone():
    np.random.seed(7)
    state = np.random.get_state()
    checks.check_init(L.init_params)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]
    with pytest.raises(AssertionError):
        checks.check_init(L.init_global_state)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]


def test_rel_error_of_the_checks_is_gradchecks_with_a_float32_floor():
    ref = np.array([100.0, 1e-3, -2.0])
    got = ref + np.array([0.0, 1e-3, 0.0])
    assert _rel_error(got, ref) == rel_error(got, ref)
    assert _rel_error(got, ref, low_precision=True) == rel_error(got, ref, floor=1.0)


def test_random_shift_accepts_another_draw_order(capsys):
    # (dy, dx) pairs from one (N, 2) draw: other shifts for the same seed, none of them wrong
    checks.check_random_shift(L.shift_pairs_per_image)
    assert capsys.readouterr().out.startswith("✓ check_random_shift: 4 cases")


def test_mean_std_shows_plain_numbers():
    with pytest.raises(AssertionError) as info:
        checks.check_mean_std(L.mean_std_population)
    message = str(info.value)
    assert "a list of three accuracies: [0.907, 0.922, 0.9185]" in message, message
    assert "np.float64" not in message


def test_im2col_convolution_passes(capsys):
    forward, backward = L.make_conv_im2col()
    checks.check_conv2d_forward(forward)
    checks.check_conv2d_backward(forward, backward)
    assert capsys.readouterr().out.count("✓") == 2
