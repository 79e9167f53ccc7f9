"""Checks of lesson 10 (when training goes wrong): your sanity helpers and your repairs.

- check_loss_at_init: ``loss_at_init(model, x, y, rel_tol=0.1) -> (loss, expected, ok)``;
- check_overfit_one_batch: ``overfit_one_batch(model, x, y, steps, lr=1e-3) -> [losses]``;
- check_shuffled_batches: ``shuffled_batches(x, y, batch_size, generator) -> [(xb, yb), ...]``;
- check_make_preprocess: ``make_preprocess(train_images) -> preprocess``;
- check_count_shared: ``count_shared(train_images, val_images) -> int``.

Each check runs your function. The repairs (batches, preprocessing) are then used to train a small
seeded network, 784-64-10, for 2 epochs on 2,000 MNIST training images (the first 2,000 of
lesson 00's training part), which must reach a stated accuracy on 1,000 validation images: the
repaired code must not only look right, it must let a network learn. The check's own loops are
written here in plain torch, never with the learner's functions or the course's training
helpers. Every random draw is seeded, the checks run on one thread, and torch's global RNG state
and thread count are restored afterwards.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_course import data
from mnist_course.checks._core import _Check, _describe
from mnist_course.checks.torch_loops import _rel, _seeded

__all__ = ["check_count_shared", "check_loss_at_init", "check_make_preprocess",
           "check_overfit_one_batch", "check_shuffled_batches"]

_SIG_INIT = "loss_at_init(model, x, y, rel_tol=0.1) -> (loss, expected, ok)"
_SIG_OVERFIT = "overfit_one_batch(model, x, y, steps, lr=1e-3) -> list of floats"
_SIG_BATCHES = "shuffled_batches(x, y, batch_size, generator) -> list of (x_batch, y_batch)"
_SIG_PREP = ("make_preprocess(train_images) -> preprocess, and preprocess(images) -> float32 "
             "tensor (N, 1, 28, 28)")
_SIG_SHARED = "count_shared(train_images, val_images) -> int"

#: The subset the repairs are trained and judged on, and what they must reach.
TRAIN_N, VAL_N, EPOCHS, BATCH = 2000, 1000, 2, 64
MIN_ACCURACY = 0.85
#: What overfitting one batch must reach.
OVERFIT_IMAGES, OVERFIT_STEPS, OVERFIT_MAX_LOSS = 32, 100, 0.01
_TOL = 1e-4


# --------------------------------------------------------------------------------------------
# Data and the small network the repairs are judged with
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _subset():
    """(x_train, y_train, x_val, y_val): uint8 (N, 28, 28) and int64 (N,), lesson 00's split."""
    (x, y), _ = data.load_mnist()
    order = np.random.default_rng(0).permutation(len(x))
    train, val = order[5000:5000 + TRAIN_N], order[:VAL_N]
    return x[train], y[train].astype(np.int64), x[val], y[val].astype(np.int64)


def _mlp(seed: int = 0, inputs: int = 784, hidden: int = 64, classes: int = 10) -> nn.Module:
    """Flatten -> Linear(inputs, hidden) -> ReLU -> Linear(hidden, classes), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(),
                             nn.Linear(hidden, classes))


def _train_and_score(batches_of_epoch, x_val, y_val) -> float:
    """Train the seeded MLP with Adam(1e-3) on EPOCHS epochs of batches; validation accuracy."""
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(EPOCHS):
        for xb, yb in batches_of_epoch(epoch):
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float((model(x_val).argmax(dim=1) == y_val).float().mean())


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --------------------------------------------------------------------------------------------
# check_loss_at_init
# --------------------------------------------------------------------------------------------

class _OneHotNet(nn.Module):
    """A 'network' that already knows the answer: logits 20 * x for one-hot x (loss near 0)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(classes, classes)
        with torch.no_grad():
            self.fc.weight.copy_(20 * torch.eye(classes))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(x)


def _init_cases():
    """(description, model factory, x, y, rel_tol or None for the default)."""
    from mnist_course import numpy_cnn, torch_cnn  # the course CNN, as the lesson trains it

    x_u8, y_np, _, _ = _subset()
    x = torch.from_numpy(data.normalize(x_u8[:64]))
    y = torch.from_numpy(y_np[:64])

    def cnn(shift=0.0):
        model = torch_cnn.load_numpy_params(torch_cnn.CourseCNN(), numpy_cnn.init_cnn(seed=0))
        with torch.no_grad():
            model.fc2.bias[3] += shift
        return model

    def small_with_dropout():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    g = torch.Generator().manual_seed(2)
    x3, y3 = torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g)
    y_hot = torch.arange(12) % 3
    return [
        ("the course CNN as lesson 03 initialises it, 64 MNIST training images, rel_tol=0.1",
         cnn, x, y, 0.1),
        (("the same CNN with 8 added to the logit of class 3 (a confidently wrong start), "
         "default rel_tol"), lambda: cnn(8.0), x, y, None),
        ("the same confidently wrong CNN, rel_tol=10 (anything within 10 times ln 10 passes)",
         lambda: cnn(8.0), x, y, 10.0),
        (("a small network with 3 outputs and dropout, handed over in training mode, 30 random "
         "inputs, rel_tol=0.1"), small_with_dropout, x3, y3, 0.1),
        (("a network that already gives the right label with certainty (loss near 0), 3 "
         "classes, rel_tol=0.1"), _OneHotNet, F.one_hot(y_hot, 3).float(), y_hot, 0.1),
    ]


def check_loss_at_init(fn) -> None:
    """Check ``loss_at_init(model, x, y, rel_tol=0.1) -> (loss, expected, ok)``.

    loss: the mean cross-entropy of model's logits on (x, y), a float, measured in evaluation
    mode without gradients; expected: ln C for the C classes the logits have; ok: whether
    |loss - expected| <= rel_tol * expected. The model must not be trained or given gradients.

    Names: ln 10 hard-coded, a logarithm of the wrong base, a one-sided test, rel_tol ignored, a
    sum over the batch, a softmax before the loss, dropout left on, a tensor returned, gradients
    computed.
    """
    cases = _init_cases()
    chk = _Check("check_loss_at_init", len(cases))
    first = math.nan
    with _seeded(0):
        for i, (desc, make, x, y, rel_tol) in enumerate(cases, 1):
            chk.case(i, desc)
            model = make()
            model.train()
            before = _params(model)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                model.eval()
                logits = model(x)
                model.train()
            want = F.cross_entropy(logits, y).item()
            classes = logits.shape[1]
            want_expected = math.log(classes)
            tol = 0.1 if rel_tol is None else rel_tol
            want_ok = abs(want - want_expected) <= tol * want_expected
            args = (model, x, y) if rel_tol is None else (model, x, y, rel_tol)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(5)
                result = chk.call(fn, *args, signature=_SIG_INIT)
            loss, expected, ok = chk.unpack(result, ("loss", "expected", "ok"), "loss_at_init")
            _init_side_effects(chk, model, before)
            _init_loss(chk, loss, want, logits, y, model, x)
            _init_expected(chk, expected, classes)
            _init_ok(chk, ok, want_ok, want, want_expected, tol, i, rel_tol)
            if i == 1:
                first = want
    chk.passed(detail=f"the fresh course CNN starts at {first:.3f}, ln 10 = {math.log(10):.3f}")


def _init_side_effects(chk, model, before) -> None:
    if any(p.grad is not None for p in model.parameters()):
        chk.fail("after loss_at_init the parameters hold gradients (.grad is set).",
                 "Likely bug: backward() was called. Measuring needs no gradients: compute the "
                 "loss under torch.no_grad().")
    if any(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters())):
        chk.fail("loss_at_init changed the model's weights.",
                 "Likely bug: it trains. It should only measure: one forward pass, no optimiser.")


def _init_loss(chk, loss, want, logits, y, model, x) -> None:
    if isinstance(loss, torch.Tensor):
        chk.fail(f"loss is {_describe(loss)}; return a Python float: loss.item().")
    if not _is_number(loss):
        chk.fail(f"loss is {_describe(loss)}; return a Python float.")
    if _rel(loss, want) <= _TOL:
        chk.max_err = max(chk.max_err, _rel(loss, want))
        return
    n = len(y)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        train_loss = F.cross_entropy(model.train()(x), y).item()
    alternatives = [
        (want * n, (f"a sum over the batch ({n} samples): F.cross_entropy's default "
                   f"reduction is the mean; keep it.")),
        (F.cross_entropy(F.softmax(logits, dim=1), y).item(),
         ("a softmax before the loss: F.cross_entropy takes the raw logits and applies "
         "log-softmax itself.")),
        (F.nll_loss(logits, y).item(), ("F.nll_loss on logits: it expects log-probabilities; "
                                       "use F.cross_entropy(logits, y).")),
        (train_loss, ("the loss was measured in training mode (dropout on): call model.eval() "
                     "first.")),
    ]
    hint = next((text for value, text in alternatives if _rel(loss, value) <= _TOL), None)
    chk.fail(f"loss = {float(loss):.6g}, expected {want:.6g} (the mean cross-entropy in "
             f"evaluation mode).", f"Likely bug: {hint}" if hint else None)


def _init_expected(chk, expected, classes) -> None:
    if isinstance(expected, torch.Tensor) or not _is_number(expected):
        chk.fail(f"expected is {_describe(expected)}; return a float, math.log(C).")
    want = math.log(classes)
    if _rel(expected, want) <= 1e-9:
        return
    alternatives = [
        (math.log(10), (f"ln 10 is hard-coded: this model has {classes} classes; read C from "
                       f"the logits, logits.shape[1].")),
        (math.log10(classes), ("a base-10 logarithm: cross-entropy uses the natural logarithm, "
                              "math.log.")),
        (math.log2(classes), ("a base-2 logarithm: cross-entropy uses the natural logarithm, "
                             "math.log.")),
        (1.0 / classes, ("that is the probability of each class; the loss is its negative "
                        "logarithm, -ln(1/C) = ln C.")),
    ]
    hint = next((text for value, text in alternatives if _rel(expected, value) <= 1e-9), None)
    chk.fail(f"expected = {float(expected):.6g}; for {classes} classes a network that guesses "
             f"uniformly has loss ln {classes} = {want:.6g}.",
             f"Likely bug: {hint}" if hint else None)


def _init_ok(chk, ok, want_ok, loss, expected, tol, index, rel_tol) -> None:
    if not isinstance(ok, (bool, np.bool_)):
        chk.fail(f"ok is {_describe(ok)}; return a bool, True when the loss is close enough.")
    if bool(ok) == want_ok:
        return
    gap = abs(loss - expected) / expected
    if index == 5:
        hint = ("a one-sided test: a loss far BELOW ln C at initialisation is as suspicious as "
                "one far above (an untrained network cannot know the labels unless they leak "
                "into its inputs). Compare abs(loss - expected) with rel_tol * expected.")
    elif index == 3:
        hint = "rel_tol is ignored: use the argument, not a fixed 0.1."
    elif want_ok:
        hint = f"the loss is within {tol:g} * expected of expected; ok must be True."
    else:
        hint = "compare abs(loss - expected) with rel_tol * expected."
    chk.fail(f"ok = {bool(ok)} for loss {loss:.4g}, expected {expected:.4g} (off by "
             f"{gap:.2f} * expected) and rel_tol = {tol:g}"
             f"{'' if rel_tol is not None else ' (the default)'}.", f"Likely bug: {hint}")


# --------------------------------------------------------------------------------------------
# check_overfit_one_batch
# --------------------------------------------------------------------------------------------

def _overfit_ref(model, x, y, steps, lr, *, zero_grad=True, fresh_adam=False, sgd=False):
    """The check's own loop; the keyword arguments give the classic mistakes' curves."""
    def make():
        cls = torch.optim.SGD if sgd else torch.optim.Adam
        return cls(model.parameters(), lr=lr)

    optimizer = make()
    model.train()
    losses = []
    for _ in range(steps):
        if fresh_adam:
            optimizer = make()
        loss = F.cross_entropy(model(x), y)
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check_overfit_one_batch(fn) -> None:
    """Check ``overfit_one_batch(model, x, y, steps, lr=1e-3) -> list of floats``.

    It trains model in place with ``torch.optim.Adam(model.parameters(), lr=lr)`` for `steps`
    steps on the one batch (x, y) (``model.train()``; zero_grad, forward, cross-entropy,
    backward, step) and returns the loss of every step, as floats, each measured before that
    step's update. Case 1: the 784-64-10 MLP on 32 MNIST images for 100 steps must end below
    0.01, along the check's own curve. Case 2: another model, lr and number of steps, to see
    that the arguments are used.

    Names: zero_grad missing, Adam made anew each step, SGD instead of Adam, tensors or one
    number returned, the wrong number of steps, a copy trained instead of the model.
    """
    x_u8, y_np, _, _ = _subset()
    g = torch.Generator().manual_seed(3)
    x3, y3 = torch.randn(12, 6, generator=g), torch.randint(0, 3, (12,), generator=g)
    cases = [
        ((f"the 784-64-10 MLP (seeded), {OVERFIT_IMAGES} MNIST training images, "
         f"steps={OVERFIT_STEPS}, lr=1e-3 (the default)"),
         lambda: _mlp(seed=0), torch.from_numpy(data.normalize(x_u8[:OVERFIT_IMAGES])),
         torch.from_numpy(y_np[:OVERFIT_IMAGES]), OVERFIT_STEPS, None),
        ("a 6-16-3 MLP, 12 random inputs, steps=7, lr=0.05",
         lambda: _mlp(seed=4, inputs=6, hidden=16, classes=3), x3, y3, 7, 0.05),
    ]
    chk = _Check("check_overfit_one_batch", len(cases))
    final = None
    with _seeded(0):
        for i, (desc, make, x, y, steps, lr) in enumerate(cases, 1):
            chk.case(i, desc)
            lr_used = 1e-3 if lr is None else lr
            ref_model = make()
            want = _overfit_ref(ref_model, x, y, steps, lr_used)
            model = make()
            model.eval()                              # handed over in eval mode: train() it
            args = (model, x, y, steps) if lr is None else (model, x, y, steps, lr)
            got = chk.call(fn, *args, signature=_SIG_OVERFIT)
            _overfit_compare(chk, got, want, steps, make, x, y, lr_used)
            err = max(_rel(a.detach(), b.detach())
                      for a, b in zip(model.parameters(), ref_model.parameters()))
            if err > _TOL:
                chk.fail("the losses are right but the model passed in was not trained (its "
                         "weights are the initial ones).",
                         "Likely bug: a copy of the model is trained; train `model` itself, in "
                         "place, so the caller sees the result.")
            if i == 1:
                final = got[-1]
                if final >= OVERFIT_MAX_LOSS:
                    chk.fail(f"the final loss is {final:.4g}, not below {OVERFIT_MAX_LOSS}.")
    chk.passed(detail=f"final loss {final:.4f} after {OVERFIT_STEPS} steps on "
                      f"{OVERFIT_IMAGES} images (< {OVERFIT_MAX_LOSS})")


def _overfit_compare(chk, got, want, steps, make, x, y, lr) -> None:
    if isinstance(got, torch.Tensor) or _is_number(got):
        chk.fail(f"overfit_one_batch returned {_describe(got)}; return the list of the "
                 f"{steps} losses, one float per step (the last one is the final loss).")
    if not isinstance(got, (list, tuple)):
        chk.fail(f"overfit_one_batch returned {_describe(got)}; return a list of floats.")
    if any(isinstance(v, torch.Tensor) for v in got):
        chk.fail("the list holds tensors: append loss.item(), a float (a tensor keeps its "
                 "whole autograd graph alive).")
    if not all(_is_number(v) for v in got):
        chk.fail(f"the list holds {_describe(got[0]) if got else 'nothing'}; append floats.")
    if len(got) != steps:
        chk.fail(f"{len(got)} losses for steps={steps}: one optimiser step, and one loss, per "
                 f"step.")
    err = _rel(got, want)
    if err <= _TOL:
        chk.max_err = max(chk.max_err, err)
        return
    if any(not math.isfinite(v) for v in got):
        hint = None
    elif _rel(got[1:], want[1:]) > _TOL and np.allclose(got, got[0]):
        hint = ("the loss never changes: the weights are not updated (is optimizer.step() "
                "called, on an optimiser over model.parameters()?).")
    else:
        hint = None
        for kwargs, text in [
                ({"zero_grad": False}, ("zero_grad is missing: the gradients of every step add "
                                       "up in .grad, so each step follows the sum of all "
                                       "earlier ones.")),
                ({"fresh_adam": True}, ("the optimiser is made anew inside the loop: Adam's "
                                       "running averages restart at every step. Make it once, "
                                       "before the loop.")),
                ({"sgd": True}, ("SGD was used: make torch.optim.Adam(model.parameters(), "
                                "lr=lr)."))]:
            if _rel(got, _overfit_ref(make(), x, y, steps, lr, **kwargs)) <= _TOL:
                hint = text
                break
    k = int(np.argmax(np.abs(np.asarray(got, dtype=float) - np.asarray(want))))
    chk.fail(f"loss of step {k}: {got[k]:.6g}, expected {want[k]:.6g} (first: {got[0]:.6g} "
             f"and {want[0]:.6g}).", f"Likely bug: {hint}" if hint else
             "Likely bug: compare with the recipe: model.train(); Adam(lr) made once; per step "
             "zero_grad, loss = F.cross_entropy(model(x), y), backward, step, then record "
             "loss.item().")


# --------------------------------------------------------------------------------------------
# check_shuffled_batches
# --------------------------------------------------------------------------------------------

def _as_batches(chk, result, what: str) -> list:
    if result is None or isinstance(result, torch.Tensor):
        chk.fail(f"{what} returned {_describe(result)}; return a list of (x_batch, y_batch) "
                 f"pairs.")
    try:
        batches = list(result)
    except TypeError:
        chk.fail(f"{what} returned {_describe(result)}; return a list of (x_batch, y_batch).")
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2
                and all(isinstance(t, torch.Tensor) for t in b)):
            chk.fail(f"an item of the result is {_describe(b)}; each item must be a pair of "
                     f"tensors (x_batch, y_batch).")
    return batches


def check_shuffled_batches(fn) -> None:
    """Check ``shuffled_batches(x, y, batch_size, generator) -> [(x_batch, y_batch), ...]``.

    One epoch of batches: one random order of all N samples, drawn from ``generator``, cut into
    batches of batch_size (the last one shorter when N is not a multiple), images and labels
    reordered together. Case 1 numbers 70 samples so that every pairing can be read; case 2
    trains the 784-64-10 MLP with your batches, a new shuffle each epoch from one generator,
    2 epochs on 2,000 MNIST images; it must reach 0.85 on 1,000 validation images.

    Names: labels and images shuffled apart, no shuffle, sampling with replacement, the short
    last batch dropped, an order that ignores the generator or reseeds it.
    """
    chk = _Check("check_shuffled_batches", 2)
    chk.case(1, "x: 70 samples of 2 features, x[i] = (i, -i); y[i] = i; batch_size=16; "
                "torch.Generator().manual_seed(0)")
    n, size = 70, 16
    x = torch.stack([torch.arange(n), -torch.arange(n)], dim=1).float()
    y = torch.arange(n)
    x_before, y_before = x.clone(), y.clone()
    with _seeded(0):
        batches = _as_batches(chk, chk.call(fn, x, y, size, torch.Generator().manual_seed(0),
                                            signature=_SIG_BATCHES), "shuffled_batches")
        if not (torch.equal(x, x_before) and torch.equal(y, y_before)):
            chk.fail("shuffled_batches changed the x or y it was given.",
                     "Likely bug: an in-place shuffle; index with a permutation, x[perm], "
                     "which makes new tensors.")
        sizes = [len(b[0]) for b in batches]
        want_sizes = [size] * (n // size) + ([n % size] if n % size else [])
        if any(len(xb) != len(yb) for xb, yb in batches):
            chk.fail("a batch has a different number of images and labels.")
        if sizes != want_sizes:
            hint = None
            if sizes == want_sizes[:-1]:
                hint = (f"the short last batch ({n % size} samples) is dropped: keep it, or "
                        f"those samples are never trained on in this epoch.")
            chk.fail(f"batch sizes {sizes}; expected {want_sizes}.",
                     f"Likely bug: {hint}" if hint else None)
        ids = torch.cat([xb[:, 0] for xb, _ in batches]).long()
        labels = torch.cat([yb for _, yb in batches]).long()
        if not torch.equal(ids, labels):
            wrong = int((ids != labels).sum())
            chk.fail(f"{wrong} of {n} labels no longer belong to their images (image i should "
                     f"carry label i).",
                     "Likely bug: the images and the labels were reordered by different "
                     "permutations (or only one of them was): draw ONE permutation and index "
                     "both with it, x[perm] and y[perm].")
        if sorted(ids.tolist()) != list(range(n)):
            missing = n - len(set(ids.tolist()))
            chk.fail(f"{missing} samples never appear and others appear more than once.",
                     "Likely bug: indices drawn at random with replacement (torch.randint); "
                     "an epoch visits every sample once: torch.randperm(n, generator=...).")
        if ids.tolist() == list(range(n)):
            chk.fail("the batches come in the original order: nothing is shuffled.",
                     "Likely bug: draw a random permutation, torch.randperm(len(x), "
                     "generator=generator), and index with it.")
        torch.manual_seed(123)                  # a different global state for the second call
        again = _as_batches(chk, chk.call(fn, x, y, size, torch.Generator().manual_seed(0),
                                          signature=_SIG_BATCHES), "shuffled_batches")
        if not torch.equal(torch.cat([xb[:, 0] for xb, _ in again]).long(), ids):
            chk.fail("two calls with generators seeded alike gave different orders.",
                     "Likely bug: the order does not come from `generator`: pass it, "
                     "torch.randperm(len(x), generator=generator).")
        gen = torch.Generator().manual_seed(0)
        first = _as_batches(chk, fn(x, y, size, gen), "shuffled_batches")
        second = _as_batches(chk, fn(x, y, size, gen), "shuffled_batches")
        if torch.equal(torch.cat([b[0][:, 0] for b in first]),
                       torch.cat([b[0][:, 0] for b in second])):
            chk.fail("two epochs drawn from the same generator come in the same order.",
                     "Likely bug: the generator is reseeded (or a new one made) inside the "
                     "function: draw from the one passed in, so each epoch gets a new order.")

        chk.case(2, f"the 784-64-10 MLP, Adam(lr=1e-3), {EPOCHS} epochs of your batches of "
                    f"{BATCH} over {TRAIN_N:,} MNIST training images (one generator, seeded "
                    f"0), scored on {VAL_N:,} validation images")
        x_u8, y_np, xv_u8, yv_np = _subset()
        xt, yt = torch.from_numpy(data.normalize(x_u8)), torch.from_numpy(y_np)
        gen = torch.Generator().manual_seed(0)

        def epoch_batches(_epoch):
            return _as_batches(chk, chk.call(fn, xt, yt, BATCH, gen, signature=_SIG_BATCHES),
                               "shuffled_batches")

        acc = _train_and_score(epoch_batches, torch.from_numpy(data.normalize(xv_u8)),
                               torch.from_numpy(yv_np))
    if acc < MIN_ACCURACY:
        chk.fail(f"validation accuracy {acc:.4f}, below {MIN_ACCURACY}.")
    chk.passed(show_error=False, detail=f"validation accuracy {acc:.4f} after {EPOCHS} epochs "
                                        f"on {TRAIN_N:,} images (≥ {MIN_ACCURACY})")


# --------------------------------------------------------------------------------------------
# check_make_preprocess
# --------------------------------------------------------------------------------------------

def _prep_output(chk, out, n: int, what: str) -> np.ndarray:
    if out is None:
        chk.fail(f"{what} is None: a missing `return`?")
    if isinstance(out, torch.Tensor):
        arr = out.detach().cpu().numpy()
    elif isinstance(out, np.ndarray):
        chk.fail(f"{what} is a NumPy array; return a torch tensor (torch.from_numpy(...)), "
                 f"ready for the network.")
    else:
        chk.fail(f"{what} is {_describe(out)}; return a float32 tensor (N, 1, 28, 28).")
    if arr.shape != (n, 1, 28, 28):
        hint = ("the channel axis is missing: (N, 28, 28) -> (N, 1, 28, 28), e.g. "
                "x[:, None]." if arr.shape == (n, 28, 28) else None)
        chk.fail(f"{what} has shape {arr.shape}; expected {(n, 1, 28, 28)}.",
                 f"Likely bug: {hint}" if hint else None)
    if arr.dtype != np.float32:
        chk.fail(f"{what} has dtype {arr.dtype}; the network's weights are float32: return "
                 f"float32 (.float(), or .astype(np.float32) before torch.from_numpy).")
    return arr.astype(np.float64)


def check_make_preprocess(fn) -> None:
    """Check ``make_preprocess(train_images) -> preprocess``.

    ``preprocess(images)`` turns uint8 images (N, 28, 28) into a float32 tensor (N, 1, 28, 28):
    scaled to [0, 1], then standardised with the mean and standard deviation (over all pixels)
    of the TRAINING images that make_preprocess was given, whatever images it prepares later.
    Case 1: 2,000 MNIST training images come out with mean 0 and std 1. Case 2: dimmer images
    (a camera's, 0.7 times as bright) get the training statistics, not their own, alone or in a
    batch. Case 3: training images of another brightness give other statistics. Case 4: the
    784-64-10 MLP trained 2 epochs on preprocess(train) reaches 0.85 on preprocess(val).

    Names: not standardised, each batch standardised by itself, MNIST's constants used in
    place of the training images' statistics, the channel axis or float32 missing, the input
    modified.
    """
    chk = _Check("check_make_preprocess", 4)
    x_u8, y_np, xv_u8, yv_np = _subset()
    train = x_u8.copy()

    def stats(images):
        scaled = images.astype(np.float64) / 255
        return scaled.mean(), scaled.std()

    def formula(images, mean, std):
        return (images.astype(np.float64)[:, None] / 255 - mean) / std

    chk.case(1, f"make_preprocess({TRAIN_N:,} MNIST training images), then preprocess of those "
                f"same images")
    with _seeded(0):
        prep = chk.call(fn, train, signature=_SIG_PREP)
        if not callable(prep):
            chk.fail(f"make_preprocess returned {_describe(prep)}; return a function (defined "
                     f"inside it) that prepares images.")
        out = _prep_output(chk, chk.call(prep, train, signature="preprocess(images)"),
                           len(train), "preprocess(train_images)")
        if not np.array_equal(train, x_u8):
            chk.fail("the uint8 images passed in were modified.",
                     "Likely bug: an in-place operation on the input; work on a float copy.")
        m, s = stats(x_u8)
        if abs(out.mean()) > 1e-2 or abs(out.std() - 1) > 1e-2:
            hint = None
            if _rel(out, x_u8.astype(np.float64)[:, None] / 255) <= _TOL:
                hint = ("the images are scaled to [0, 1] but not standardised: subtract the "
                        "training images' mean and divide by their standard deviation.")
            chk.fail(f"the training images come out with mean {out.mean():.4f} and std "
                     f"{out.std():.4f}; standardised, they have mean 0 and std 1.",
                     f"Likely bug: {hint}" if hint else None)
        _prep_compare(chk, out, formula(x_u8, m, s), x_u8)

        chk.case(2, "the same preprocess on 1,000 validation images made 0.7 times as bright, "
                    "all at once and one image alone")
        dim = (xv_u8 * 0.7).astype(np.uint8)
        out = _prep_output(chk, chk.call(prep, dim, signature="preprocess(images)"), len(dim),
                           "preprocess(val_images)")
        _prep_compare(chk, out, formula(dim, m, s), dim)
        one = _prep_output(chk, chk.call(prep, dim[:1], signature="preprocess(images)"), 1,
                           "preprocess(one_image)")
        _prep_compare(chk, one, formula(dim[:1], m, s), dim[:1])

        chk.case(3, "make_preprocess of training images 0.5 times as bright (other statistics "
                    "than MNIST's), then preprocess of those")
        half = (x_u8 * 0.5).astype(np.uint8)
        prep_half = chk.call(fn, half, signature=_SIG_PREP)
        out = _prep_output(chk, chk.call(prep_half, half, signature="preprocess(images)"),
                           len(half), "preprocess(train_images)")
        _prep_compare(chk, out, formula(half, *stats(half)), half)

        chk.case(4, f"the 784-64-10 MLP, Adam(lr=1e-3), {EPOCHS} epochs in batches of {BATCH} "
                    f"on preprocess({TRAIN_N:,} training images), scored on preprocess("
                    f"{VAL_N:,} validation images)")
        xt = torch.as_tensor(prep(x_u8.copy()))
        yt = torch.from_numpy(y_np)
        gen = torch.Generator().manual_seed(0)

        def epoch_batches(_epoch):
            perm = torch.randperm(len(xt), generator=gen)
            return [(xt[perm[i:i + BATCH]], yt[perm[i:i + BATCH]])
                    for i in range(0, len(xt), BATCH)]

        acc = _train_and_score(epoch_batches, torch.as_tensor(prep(xv_u8.copy())),
                               torch.from_numpy(yv_np))
    if acc < MIN_ACCURACY:
        chk.fail(f"validation accuracy {acc:.4f}, below {MIN_ACCURACY}.")
    chk.passed(detail=f"validation accuracy {acc:.4f} after {EPOCHS} epochs on {TRAIN_N:,} "
                      f"images (≥ {MIN_ACCURACY})")


def _prep_compare(chk, got: np.ndarray, want: np.ndarray, images: np.ndarray) -> None:
    err = _rel(got, want)
    if err <= _TOL:
        chk.max_err = max(chk.max_err, err)
        return
    scaled = images.astype(np.float64)[:, None] / 255
    own = (scaled - scaled.mean()) / scaled.std()
    per_image = ((scaled - scaled.mean(axis=(1, 2, 3), keepdims=True))
                 / np.maximum(scaled.std(axis=(1, 2, 3), keepdims=True), 1e-12))
    alternatives = [
        (own, ("standardised with the statistics of the images being prepared: compute the mean "
              "and the std ONCE, from train_images, inside make_preprocess, and use those for "
              "every split (a single image, or a dimmer test set, would otherwise be shifted "
              "differently from the training data).")),
        (per_image, ("each image standardised by its own mean and std: use the statistics of "
                    "all the training images, computed once in make_preprocess.")),
        ((scaled - data.MEAN) / data.STD, ("MNIST's constants 0.1307 and 0.3081 are used: "
                                          "compute the mean and the std from train_images, "
                                          "whatever images make_preprocess is given.")),
        (scaled, "the images are scaled to [0, 1] but not standardised."),
    ]
    hint = next((text for value, text in alternatives if _rel(got, value) <= _TOL), None)
    idx = np.unravel_index(int(np.argmax(np.abs(got - want))), want.shape)
    chk.fail(f"largest difference at index {tuple(int(i) for i in idx)}: got {got[idx]:.6g}, "
             f"expected {want[idx]:.6g}, that is (x / 255 - mean) / std with the mean and std "
             f"of the training images.", f"Likely bug: {hint}" if hint else None)


# --------------------------------------------------------------------------------------------
# check_count_shared
# --------------------------------------------------------------------------------------------

def check_count_shared(fn) -> None:
    """Check ``count_shared(train_images, val_images) -> int``.

    The number of validation images that also appear, pixel for pixel, among the training
    images. Each validation image counts once, however many copies the training images hold; two
    identical validation images found in training count twice. An image that differs in one
    pixel, or holds the same pixel values in another arrangement, is not shared.

    Names: distinct images counted instead of validation images, copies counted on the training
    side, near-copies counted (a tolerance, a hash of the pixel sum), a non-integer result.
    """
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    fresh = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    near = train[10].copy()
    near[14, 14] ^= 1                                     # one pixel off by one
    shuffled = train[11].copy().reshape(-1)
    rng.shuffle(shuffled)                                 # same pixels, other places
    cases = [
        ("50 random training images; 20 validation images, 5 of them copies of training images",
         train, np.concatenate([fresh[:15], train[[3, 7, 21, 30, 44]]]), 5),
        (("validation holds the same training image twice; training holds another image three "
         "times, which validation holds once"), np.concatenate([train, train[[5, 5]]]),
         np.concatenate([fresh[:4], train[[2, 2, 5]]]), 3),
        (("validation holds a copy with one pixel changed by 1 and an image with the same pixels "
         "in other places: neither is shared"), train,
         np.stack([near, shuffled.reshape(28, 28), fresh[20]]), 0),
        ("no validation image is shared", train, fresh, 0),
    ]
    chk = _Check("check_count_shared", len(cases))
    for i, (desc, tr, va, want) in enumerate(cases, 1):
        chk.case(i, desc)
        tr_before, va_before = tr.copy(), va.copy()
        got = chk.call(fn, tr, va, signature=_SIG_SHARED)
        if not (np.array_equal(tr, tr_before) and np.array_equal(va, va_before)):
            chk.fail("count_shared modified the images it was given.")
        if isinstance(got, torch.Tensor) or not isinstance(got, numbers.Integral) \
                or isinstance(got, (bool, np.bool_)):
            chk.fail(f"count_shared returned {_describe(got)}; return an int.")
        if got == want:
            continue
        hint = None
        if i == 2 and got == 2:
            hint = ("distinct images are counted: count every validation image found in the "
                    "training images, duplicates included (each will be scored).")
        elif i == 2 and got == 4:
            hint = ("copies are counted on the training side: for each VALIDATION image, ask "
                    "whether it is among the training images (a set of their bytes).")
        elif i == 3:
            hint = ("images that are not exact copies are counted: compare every pixel, e.g. "
                    "image.tobytes() in a set; no tolerance, and no summary such as the sum of "
                    "the pixels.")
        elif got == 0 and want:
            hint = "no copy found: compare whole images, e.g. by image.tobytes()."
        chk.fail(f"count_shared returned {got}, expected {want}.",
                 f"Likely bug: {hint}" if hint else None)
    chk.passed(show_error=False)
