"""The lesson-05 checks (your own autograd) pass the course's engine and name the classic
mistakes of each deliberately buggy engine of tests/buggy_engine.py."""

from __future__ import annotations

import buggy_engine as B
import numpy as np
import pytest

from mnist_course import checks, engine, numpy_cnn
from mnist_course.gradcheck import rel_error


def _sum_to_size(E):
    checks.check_sum_to_size(E.sum_to_size)


def _primitives(E):
    checks.check_primitives(E.Tensor)


def _backward(E):
    checks.check_backward(E.Tensor, E.zero_grad)


def _layer_ops(E):
    checks.check_layer_ops(E.Tensor, E.linear, E.relu, E.conv2d, E.max_pool2d, E.cross_entropy)


def _engine_forward(E):
    checks.check_engine_forward(E.Tensor, E.engine_forward, E.cross_entropy)


CHECKS = {"check_sum_to_size": _sum_to_size, "check_primitives": _primitives,
          "check_backward": _backward, "check_layer_ops": _layer_ops,
          "check_engine_forward": _engine_forward}


@pytest.mark.parametrize("name", list(CHECKS))
def test_checks_pass_the_course_engine_and_a_fresh_copy(name, capsys):
    CHECKS[name](engine)
    CHECKS[name](B.make_engine())
    out = capsys.readouterr().out
    assert out.count(f"✓ {name}:") == 2, out


@pytest.mark.parametrize("check, replace, words", [
    # a broadcast input's gradient not summed back to its shape
    ("check_sum_to_size", {"sum_to_size": B.sum_to_size_unchanged}, "SUM of the gradients"),
    ("check_sum_to_size", {"sum_to_size": B.sum_to_size_mean}, "mean of the copies"),
    ("check_sum_to_size", {"sum_to_size": B.sum_to_size_keepdims}, "keepdims=True"),
    ("check_primitives", {"add": B.add_no_sum_to_size}, "sum the gradient back to the input's"),
    ("check_backward", {"sum_to_size": B.sum_to_size_unchanged}, "sum_to_size"),
    # the primitives' rules
    ("check_primitives", {"mul": B.mul_own_input}, "the OTHER input"),
    ("check_primitives", {"reshape": B.reshape_not_back}, "reshape the gradient back"),
    ("check_primitives", {"matmul": B.matmul_records_nothing}, "recorded nothing"),
    # backward(): a tensor used twice, overwritten instead of accumulated
    ("check_backward", {"backward": B.backward_overwrites}, "used twice"),
    # a node's rule run before all of its consumers have added their gradients (the diamond)
    ("check_backward", {"backward": B.backward_queue}, "reverse topological order"),
    # a node visited twice
    ("check_backward", {"backward": B.backward_no_visited_set}, "visited twice"),
    # gradients not reset between two backward() calls: of the intermediates, and by zero_grad
    ("check_backward", {"backward": B.backward_keeps_intermediate_grads},
     "not reset between two backward() calls"),
    ("check_backward", {"zero_grad": B.zero_grad_rebinds},
     "not reset between two backward() calls"),
    # .grad replaced instead of accumulated across calls
    ("check_backward", {"backward": B.backward_replaces_leaf_grad}, "replaced x.grad"),
    # backward() on a non-scalar without a seed gradient
    ("check_backward", {"backward": B.backward_seeds_ones}, "needs a gradient to start from"),
    ("check_backward", {"backward": B.backward_every_leaf}, "requires_grad=False"),
    # the layer operations
    ("check_layer_ops", {"linear": B.linear_wrong_order}, "order of the op's inputs"),
    ("check_layer_ops", {"conv2d": B.conv2d_ignores_stride}, "stride and padding"),
    ("check_layer_ops", {"cross_entropy": B.cross_entropy_ignores_grad},
     "ignored the upstream gradient"),
    # the course CNN
    ("check_engine_forward", {"engine_forward": B.engine_forward_hwc}, "flatten order"),
    ("check_engine_forward", {"engine_forward": B.engine_forward_no_relu_fc1},
     "ReLU after fc1 is missing"),
    ("check_engine_forward", {"engine_forward": B.engine_forward_data_of_fc2},
     "never reached fc2_w"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("check") else None)
def test_checks_name_the_bug_of_a_buggy_engine(check, replace, words):
    with pytest.raises(AssertionError) as info:
        CHECKS[check](B.make_engine(**replace))
    assert words in str(info.value), str(info.value)


def test_stubs_raise_not_implemented_through_the_checks():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        checks.check_sum_to_size(stub)
    E = B.make_engine(add=stub)
    with pytest.raises(NotImplementedError):
        checks.check_primitives(E.Tensor)


def test_a_buggy_engine_is_a_copy_and_leaves_the_course_engine_alone():
    E = B.make_engine(backward=B.backward_queue)
    assert E.Tensor is not engine.Tensor
    assert engine.backward.__code__ is not E.backward.__code__
    with E.no_grad():
        assert not E.Tensor.grad_enabled and engine.Tensor.grad_enabled


def test_engine_gradients_equal_the_hand_written_composition_and_torch():
    """The reference engine on the course CNN: the same operations as numpy_cnn's hand-written
    backward composition (so equal to the last bit here), and torch's autograd."""
    params = {k: v.astype(np.float64) for k, v in numpy_cnn.init_cnn(0, "he").items()}
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4)
    tparams = {k: engine.Tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    loss = engine.cross_entropy(engine.engine_forward(tparams, x), y)
    loss.backward()
    hand_loss, hand = numpy_cnn.cnn_loss_and_grads(params, x, y)
    torch_loss, torch_grads = engine.torch_loss_and_grads(params, x, y)
    assert loss.item() == hand_loss
    assert abs(loss.item() - torch_loss) <= 1e-10
    for k in params:
        assert rel_error(tparams[k].grad, hand[k]) <= 1e-12, k
        assert rel_error(tparams[k].grad, torch_grads[k]) <= 1e-9, k


def test_no_grad_records_nothing_and_restores_the_switch():
    w = engine.Tensor(np.ones(3), requires_grad=True)
    with engine.no_grad():
        assert (w * 2.0).grad_fn is None
    out = w * 2.0
    assert out.grad_fn is not None and out.grad_fn.next_functions == (None, None)
    assert repr(out.grad_fn) == "<MulBackward>"


def test_sgd_step_changes_the_parameters_in_place_and_returns_the_loss():
    params = {k: engine.Tensor(v.astype(np.float64), requires_grad=True)
              for k, v in numpy_cnn.init_cnn(1, "he").items()}
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((3, 1, 28, 28)), rng.integers(0, 10, 3)
    before = {k: p.data.copy() for k, p in params.items()}
    loss = engine.sgd_step(params, x, y, lr=0.1)
    _, grads = numpy_cnn.cnn_loss_and_grads(before, x, y)
    assert isinstance(loss, float)
    for k, p in params.items():
        np.testing.assert_allclose(p.data, before[k] - 0.1 * grads[k], rtol=0, atol=1e-12)
