"""The lesson-05 checks pass correct code and name the classic mistakes of buggy code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mnist_course import checks


def torch_forward(tp, x, relu_last=False, permute=False, detach=False):
    h = F.max_pool2d(F.relu(F.conv2d(x, tp["conv1_w"], tp["conv1_b"])), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, tp["conv2_w"], tp["conv2_b"])), 2)
    h = F.relu(F.conv2d(h, tp["conv3_w"], tp["conv3_b"]))
    if permute:
        h = h.permute(0, 2, 3, 1)
    h = h.reshape(len(h), -1)
    h = F.relu(h @ tp["fc1_w"] + tp["fc1_b"])
    out = h @ tp["fc2_w"] + tp["fc2_b"]
    out = F.relu(out) if relu_last else out
    return out.detach() if detach else out


def sgd_step(tp, x, y, lr, zero_grad=True, sign=1.0, rebind=False, as_tensor=False):
    if zero_grad:
        for p in tp.values():
            p.grad = None
    loss = F.cross_entropy(torch_forward(tp, x), y)
    loss.backward()
    with torch.no_grad():
        for p in tp.values():
            if rebind:
                p = p - lr * p.grad
            else:
                p -= sign * lr * p.grad
    return loss if as_tensor else loss.item()


def test_check_torch_forward_passes_correct_code(capsys):
    checks.check_torch_forward(torch_forward)
    assert "✓ check_torch_forward" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, words", [
    ({"relu_last": True}, "ReLU after fc2"),
    ({"permute": True}, "flatten"),
    ({"detach": True}, "not connected"),
])
def test_check_torch_forward_names_the_bug(kwargs, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_torch_forward(lambda tp, x: torch_forward(tp, x, **kwargs))


def test_check_torch_forward_rejects_numpy_output():
    with pytest.raises(AssertionError, match="return the torch tensor"):
        checks.check_torch_forward(lambda tp, x: torch_forward(tp, x).detach().numpy())


def test_check_sgd_step_passes_correct_code(capsys):
    checks.check_sgd_step(sgd_step)
    assert "✓ check_sgd_step" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, words", [
    ({"zero_grad": False}, "clear"),
    ({"sign": -1.0}, "uphill"),
    ({"rebind": True}, "in place"),
    ({"as_tensor": True}, "loss.item"),
])
def test_check_sgd_step_names_the_bug(kwargs, words):
    with pytest.raises(AssertionError, match=words):
        checks.check_sgd_step(lambda tp, x, y, lr: sgd_step(tp, x, y, lr, **kwargs))


def test_check_sgd_step_names_a_missing_no_grad():
    def outside_no_grad(tp, x, y, lr):
        for p in tp.values():
            p.grad = None
        loss = F.cross_entropy(torch_forward(tp, x), y)
        loss.backward()
        for p in tp.values():
            p -= lr * p.grad
        return loss.item()

    with pytest.raises(AssertionError, match="no_grad"):
        checks.check_sgd_step(outside_no_grad)
