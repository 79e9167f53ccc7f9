"""Checks of lesson 05: the course CNN written with ``torch.nn.functional``, and one SGD step.

The oracle is independent of the learner's code and of the course's NumPy layers: the forward
pass of :mod:`mnist_course._oracle` (torch functional, float64) for the logits, and for the SGD
step the update ``p - lr * grad`` with gradients from the same oracle.
"""

from __future__ import annotations

import numpy as np

from mnist_course import _oracle
from mnist_course.checks._core import _Check, _describe


def _oracle_logits(params: dict, x: np.ndarray) -> np.ndarray:
    """Logits (N, 10) of the course CNN by torch functional in float64 (no autograd needed)."""
    import torch
    import torch.nn.functional as F

    p = {k: torch.tensor(np.asarray(params[k], dtype=np.float64)) for k in _oracle.CNN_KEYS}
    with torch.no_grad():
        h = torch.tensor(np.asarray(x, dtype=np.float64))
        h = F.max_pool2d(F.relu(F.conv2d(h, p["conv1_w"], p["conv1_b"])), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p["conv2_w"], p["conv2_b"])), 2)
        h = F.relu(F.conv2d(h, p["conv3_w"], p["conv3_b"])).reshape(len(h), -1)
        h = F.relu(h @ p["fc1_w"] + p["fc1_b"])
        return (h @ p["fc2_w"] + p["fc2_b"]).numpy()


def check_torch_forward(fn) -> None:
    """Check ``torch_forward(tparams, x) -> logits``: the course CNN with torch.nn.functional.

    tparams: dict of tensors with the NumPy keys and shapes (conv (F, C, KH, KW), dense
    (D_in, D_out)); x: (N, 1, 28, 28). The logits must equal the oracle's and stay connected to
    the parameters (autograd must be able to reach them).
    """
    import torch

    chk = _Check("check_torch_forward", 2)
    for case, dtype in enumerate((np.float32, np.float64), 1):
        chk.case(case, f"5 random images, random weights, {np.dtype(dtype).name}")
        params = {k: v.astype(dtype) for k, v in _oracle.init_cnn_params(seed=case).items()}
        x = np.random.default_rng(case).standard_normal((5, 1, 28, 28)).astype(dtype)
        tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        out = chk.call(fn, tparams, torch.from_numpy(x),
                       signature="torch_forward(tparams, x) -> logits tensor")
        if not isinstance(out, torch.Tensor):
            chk.fail(f"torch_forward returned {_describe(out)}: return the torch tensor of "
                     "logits (no .numpy(), no tuple).")
        if tuple(out.shape) != (5, 10):
            chk.fail(f"5 images gave logits of shape {tuple(out.shape)}, expected (5, 10).",
                     "Print h.shape after each step and compare with 26, 13, 11, 5, 3 and 576: "
                     "is a pooling missing or doubled, or the flatten wrong?")
        if out.grad_fn is None:
            chk.fail("the logits are not connected to the parameters, so autograd cannot reach "
                     "them: did you use .numpy(), .detach(), torch.tensor(...) or "
                     "torch.no_grad() on the way?")
        ref = _oracle_logits(params, x)
        got = out.detach().numpy()
        alternatives = [(np.maximum(ref, 0), ("all the logits are >= 0: is there a ReLU after "
                                             "fc2? Logits must be able to be negative."))]
        chk.compare("logits", got, ref, alternatives=alternatives,
                    fallback_hint="check the order conv → ReLU → pool (pool after conv1 and "
                                  "conv2 only), the biases, the ReLU after conv3 and fc1, the "
                                  "flatten (reshape the (N, C, H, W) tensor, no permute) and "
                                  "`h @ w` with w of shape (D_in, D_out).")
    chk.passed()


def check_sgd_step(fn, lr: float = 0.01) -> None:
    """Check ``sgd_step(tparams, x, y, lr) -> float``: one plain SGD step, in place.

    Two steps of fn are compared with two steps of ``p - lr * grad`` (float64, gradients by the
    oracle). Names the classic mistakes: gradients not cleared between steps, an update that
    rebinds the name instead of changing the tensor, an update outside ``torch.no_grad()``, the
    wrong sign, and a loss returned as a tensor or after the step.
    """
    import torch

    chk = _Check("check_sgd_step", 2)
    p0 = _oracle.init_cnn_params(seed=3)
    rng = np.random.default_rng(3)
    x = 0.3 * rng.standard_normal((16, 1, 28, 28))  # small enough that the loss falls
    y = rng.integers(0, 10, 16)
    refs, ref_losses, p = [], [], p0
    for _ in range(2):
        loss, g = _oracle.cnn_loss_and_grads(p, x, y)
        p = {k: p[k] - lr * g[k] for k in _oracle.CNN_KEYS}
        refs.append(p)
        ref_losses.append(loss)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    prev = p0
    for step in range(2):
        chk.case(step + 1, f"step {step + 1} of 2, lr={lr}, 16 random images, float64")
        try:
            loss = fn(tp, torch.from_numpy(x), torch.from_numpy(y), lr)
        except RuntimeError as exc:
            if "in-place" in str(exc) or "inplace" in str(exc) or "leaf" in str(exc):
                chk.fail("torch refused the in-place update of a parameter that requires grad: "
                         "do the update inside `with torch.no_grad():`.")
            raise
        now = {k: tp[k].detach().numpy().copy() for k in _oracle.CNN_KEYS}
        if all(np.array_equal(now[k], prev[k]) for k in now):
            chk.fail("the parameters did not change: `p = p - lr * p.grad` binds a new tensor to "
                     "the name p and leaves the dict alone; update in place with "
                     "`p -= lr * p.grad`.")
        if isinstance(loss, torch.Tensor):
            chk.fail("sgd_step returned a tensor; return the loss before the update as a Python "
                     "float: loss.item().")
        if not isinstance(loss, float) or abs(loss - ref_losses[step]) > 1e-8:
            chk.fail(f"sgd_step returned loss {loss!r}, expected {ref_losses[step]:.6f}: the loss "
                     "on the batch BEFORE the update, as a float (loss.item()).")
        grad = {k: (prev[k] - refs[step][k]) / lr for k in now}
        alternatives = [
            ({k: prev[k] + lr * grad[k] for k in now}, ("the parameters moved uphill: subtract "
                                                       "lr * grad.")),
        ]
        if step == 1:
            g1 = {k: (p0[k] - refs[0][k]) / lr for k in now}
            alternatives.append(({k: prev[k] - lr * (grad[k] + g1[k]) for k in now},
                                 ("the gradients of step 1 were added to those of step 2: clear "
                                 "them (p.grad = None, or optimizer.zero_grad()) before "
                                 "backward().")))
        err = max(float(np.abs(now[k] - refs[step][k]).max()) for k in now)
        if err > 1e-10:
            hint = next((text for alt, text in alternatives
                         if max(float(np.abs(now[k] - alt[k]).max()) for k in now) < 1e-10),
                        "compare your update with p - lr * p.grad.")
            chk.fail(f"after step {step + 1} the parameters differ from p - lr * grad by up to "
                     f"{err:.1e}.", f"Likely bug: {hint}")
        chk.max_err = max(chk.max_err, err)
        prev = now
    print(f"✓ check_sgd_step: 2 steps match p - lr * grad (losses {ref_losses[0]:.4f} → "
          f"{ref_losses[1]:.4f})")
