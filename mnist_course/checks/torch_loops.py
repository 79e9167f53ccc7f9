"""Checks of lesson 06's training loop: one epoch, evaluation, ``fit`` and checkpoints.

Each check builds a tiny model (a few linear layers, with batch norm and dropout where a mistake
needs them to show) and tiny synthetic data whose last batch is short, runs the learner's code
on the CPU, and compares the outcome with the check's own loop written here in plain torch
(never the learner's functions, never the course's training helpers). Every random draw is
seeded; the checks run on one thread, and torch's global RNG state and thread count are
restored afterwards.

Besides the numbers, a check watches from outside:
- the modules' mode and ``torch.is_grad_enabled()`` at every forward pass (a forward pre-hook);
- whether images and labels were moved with ``.to(device)``: the loader yields a tensor subclass
  that notes the call (on the CPU a forgotten move changes no number);
- which loss graphs stay alive: the check's ``loss_fn`` ends every loss with a small autograd
  node that holds a token, so a loss tensor kept past its batch (a running total of tensors, a
  list of losses) is seen while the epoch runs, before any memory grows.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import numbers
import os
import tempfile
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mnist_course.checks._core import _Check, _describe

__all__ = ["check_checkpoint", "check_evaluate", "check_fit", "check_train_one_epoch"]

_TOL = 1e-5            # relative: the learner's loop runs the same float32 operations as ours
_SIG_TRAIN = 'train_one_epoch(model, loader, optimizer, loss_fn, device="cpu") -> float'
_SIG_EVAL = 'evaluate(model, loader, loss_fn, device="cpu") -> (mean_loss, accuracy)'
_SIG_FIT = ('fit(model, train_loader, val_loader, optimizer, loss_fn, epochs, patience=2, '
            'scheduler=None, device="cpu") -> dict')
_SIG_SAVE = "save_checkpoint(path, model, optimizer, scheduler, epoch)"
_SIG_LOAD = "load_checkpoint(path, model, optimizer, scheduler) -> int"


# --------------------------------------------------------------------------------------------
# Small tools: seeding, data, comparing
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global RNG and use one thread inside the block; restore both afterwards.

    One thread: on tensors this small, a pool of threads only waits for itself (10 to 20 times
    slower on a busy machine), and the learner's loop and the check's run alike.
    """
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def _toy_data(n: int, seed: int, features: int = 6, classes: int = 3):
    """x (n, features) float32 and y (n,) int64, from a private generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def _mlp(norm: bool = True, dropout: float = 0.5) -> nn.Sequential:
    """Linear(6, 8) [-> BatchNorm1d(8)] -> ReLU -> Dropout -> Linear(8, 3)."""
    layers = [nn.Linear(6, 8), *([nn.BatchNorm1d(8)] if norm else []), nn.ReLU(),
              nn.Dropout(dropout), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def _batches(x, y, size: int) -> list:
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def _flat(model: nn.Module, buffers: bool = True) -> np.ndarray:
    """Every parameter (and floating-point buffer) of model in one float64 vector."""
    parts = [p.detach().reshape(-1) for p in model.parameters()]
    if buffers:
        parts += [b.detach().reshape(-1) for b in model.buffers() if b.is_floating_point()]
    return torch.cat(parts).double().cpu().numpy()


def _rel(got, ref) -> float:
    """max |got - ref|, relative to the largest |ref| (inf when the shapes differ)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return math.inf
    return float(np.max(np.abs(got - ref), initial=0.0) / max(np.max(np.abs(ref), initial=0), 1e-12))


def _first_match(got, alternatives) -> str | None:
    """The hint of the first (value, hint) pair whose value equals got within _TOL."""
    for alt, hint in alternatives:
        alt = alt() if callable(alt) else alt
        if _rel(got, alt) < _TOL:
            return hint
    return None


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _same(a, b) -> bool:
    """Deep equality of (nested) state dicts: tensors equal in shape, dtype and every value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------------------------
# Watching the learner's loop from outside
# --------------------------------------------------------------------------------------------

class _Misuse(BaseException):
    """Raised by the check's loss_fn when it is called wrongly; not caught by `except Exception`."""


class _Batch(torch.Tensor):
    """A batch tensor that notes ``.to(...)``; operations on it give plain tensors."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def to(self, *args, **kwargs):
        moves = getattr(self, "_moves", None)
        if moves is not None:
            moves.add(self._kind)
        return torch.Tensor.to(self, *args, **kwargs)


def _loader(x, y, batch_size: int, moves: set | None = None, shuffle: bool = False):
    """A DataLoader over (x, y); with moves, its batches note being moved to a device.

    Without shuffling it draws from a private generator, so iterating it leaves torch's global
    RNG (dropout's) alone; with shuffling it uses the global RNG, as a notebook's loader does.
    """
    def collate(items):
        xs, ys = torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
        if moves is None:
            return xs, ys
        batch = []
        for t, kind in ((xs, "images"), (ys, "labels")):
            t = t.as_subclass(_Batch)
            t._moves, t._kind = moves, kind
            batch.append(t)
        return tuple(batch)

    generator = None if shuffle else torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=collate, generator=generator)


class _Token:
    """Lives exactly as long as the autograd graph of one loss."""

    def __init__(self, batch: int):
        self.batch = batch


class _Tag(torch.autograd.Function):
    """The identity on the loss, whose graph node holds a token (so its life can be watched)."""

    @staticmethod
    def forward(ctx, loss, token):
        ctx.token = token
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _Watch:
    """What the check sees while the learner's code runs: forwards, modes, losses, moves."""

    def __init__(self, model: nn.Module):
        self.forwards = 0
        self.modes: list[list[bool]] = []       # training flag of every module, per forward
        self.grad: list[bool] = []              # torch.is_grad_enabled(), per forward
        self.loss_calls = 0
        self.tokens: list[tuple[int, weakref.ref]] = []
        self.kept = 0                           # old graphs seen alive at the first forward
                                                # where any were
        self.moves: set[str] = set()
        self._handle = model.register_forward_pre_hook(self._before_forward)

    def close(self) -> None:
        self._handle.remove()

    def alive(self, before_batch: float = math.inf) -> int:
        """How many tagged loss graphs of batches < before_batch are still alive."""
        def count():
            return sum(1 for batch, ref in self.tokens if batch < before_batch and ref())
        n = count()
        if n:               # maybe only a reference cycle: make sure before blaming the learner
            gc.collect()
            n = count()
        return n

    def _before_forward(self, module, args):
        self.forwards += 1
        self.modes.append([m.training for m in module.modules()])
        self.grad.append(torch.is_grad_enabled())
        # The loss of the previous batch may still sit in a variable; older ones must be gone.
        if not self.kept:
            self.kept = self.alive(before_batch=self.forwards - 1)


class _WatchedLoss(nn.Module):
    """Cross-entropy (mean over the batch) that checks its arguments and tags its graph."""

    def __init__(self, watch: _Watch):
        super().__init__()
        self.watch = watch

    def forward(self, input, target):  # the argument names of nn.CrossEntropyLoss
        logits, labels = input, target
        self.watch.loss_calls += 1
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() \
                or logits.dim() != 2:
            raise _Misuse(f"loss_fn's first argument is {_describe(logits)} of dtype "
                          f"{getattr(logits, 'dtype', '?')}: call loss_fn(logits, labels) "
                          f"with the model's output (N, classes) first, the integer labels "
                          f"second.")
        if not isinstance(labels, torch.Tensor) or labels.is_floating_point() \
                or labels.shape != logits.shape[:1]:
            raise _Misuse(f"loss_fn's second argument is {_describe(labels)}: pass the "
                          f"labels of the batch (N,) int64 as they come from the loader.")
        with torch.no_grad():
            rows = logits.detach().float()
            probabilities = bool(rows.numel()) and bool((rows >= 0).all()) \
                and bool(torch.allclose(rows.sum(dim=1), torch.ones(len(rows)), atol=1e-4))
        if probabilities:
            raise _Misuse("loss_fn received probabilities (every row is >= 0 and sums to 1): a "
                          "softmax before the loss? The cross-entropy loss applies log-softmax "
                          "itself; pass the raw logits, loss_fn(model(x), y), and keep softmax "
                          "for reading out probabilities (argmax needs none).")
        loss = F.cross_entropy(logits, labels.as_subclass(torch.Tensor))
        if loss.requires_grad:
            token = _Token(self.watch.forwards)
            self.watch.tokens.append((token.batch, weakref.ref(token)))
            loss = _Tag.apply(loss, token)
        return loss


def _run(chk: _Check, fn, *args, signature: str, **kwargs):
    """chk.call, with a misuse of the check's loss_fn reported as the failure it is."""
    __tracebackhide__ = True
    misuse = None
    try:
        return chk.call(fn, *args, signature=signature, explain=_explain, **kwargs)
    except _Misuse as exc:
        misuse = str(exc)
    chk.fail(f"Likely bug: {misuse}")


def _explain(exc: Exception) -> str | None:
    text = str(exc)
    if isinstance(exc, NameError) and ("train_one_epoch" in text or "evaluate" in text):
        return ("fit calls your train_one_epoch and evaluate: run the cells that define them "
                "first.")
    if "does not require grad" in text:
        return ("loss.backward() found no graph: is the training forward pass inside "
                "torch.no_grad(), or the loss rebuilt from .item() / .detach()? Or did "
                "evaluate turn gradients off for good (torch.set_grad_enabled(False), "
                "model.requires_grad_(False)) so that the next epoch trains without them? Keep "
                "torch.no_grad() for evaluate, as a `with` block or a decorator.")
    if "modified by an inplace operation" in text:
        return ("optimizer.step() ran between this batch's forward pass and its backward(): the "
                "order is zero_grad, forward, loss, backward, then step.")
    if "backward through the graph a second time" in text:
        return ("backward() reached a graph that was already freed: is backward() called on a "
                "running total of losses? Call loss.backward() once per batch, on that batch's "
                "loss, and add loss.item() to the total.")
    return None


def _mode_problem(watch: _Watch, want_training: bool) -> str | None:
    if watch.forwards == 0:
        return "the model is never called: loop over the loader and compute model(x)."
    if want_training and not all(all(m) for m in watch.modes):
        return ("the model ran in evaluation mode (the check hands it over in eval mode): call "
                "model.train() at the start, or dropout and batch norm behave as at test time.")
    if not want_training and any(any(m) for m in watch.modes):
        return ("the model ran in training mode (the check hands it over in train mode): call "
                "model.eval() at the start, or dropout drops units and batch norm uses (and "
                "updates) the statistics of each batch.")
    return None


def _grad_problem(watch: _Watch, want_training: bool) -> str | None:
    if want_training and not all(watch.grad):
        return ("the training forward pass ran with gradients off: keep torch.no_grad() out of "
                "train_one_epoch (it belongs in evaluate).")
    if not want_training and any(watch.grad):
        return ("the forward passes ran with gradients on: wrap the loop in torch.no_grad() "
                "(or torch.inference_mode()), or every batch builds a graph nobody uses.")
    return None


def _count_problem(watch: _Watch, n_batches: int, last: int) -> str | None:
    if watch.loss_calls == 0:
        return ("loss_fn is never called: compute the loss with the loss_fn argument, "
                "loss = loss_fn(model(x), y), not with a loss function of your own.")
    if watch.forwards < n_batches:
        return (f"the model ran on {watch.forwards} batches; the loader has {n_batches} (the "
                f"last holds {last} samples): is the short last batch skipped, or the loop "
                f"stopped early?")
    if watch.forwards > n_batches:
        twice = (" A second forward pass for the accuracy (or a second pass over the loader)? "
                 "Compute logits = model(x) once per batch and use them for both the loss and "
                 "the accuracy, logits.argmax(dim=1)." if watch.forwards % n_batches == 0
                 else "")
        return (f"the model ran {watch.forwards} times for {n_batches} batches: call it once "
                f"per batch (each extra call draws new dropout masks and, in training, updates "
                f"batch norm's statistics again).{twice}")
    return None


def _kept_message(n: int) -> str:
    return (f"the graphs of earlier batches stayed alive ({n} loss graphs still referenced): "
            f"adding `loss` itself to a running total, or keeping the loss tensors in a list, "
            f"keeps every batch's autograd graph and activations in memory. Accumulate "
            f"numbers: total += loss.item() * len(x).")


def _moves_problem(watch: _Watch) -> str | None:
    missing = [kind for kind in ("images", "labels") if kind not in watch.moves]
    if not missing:
        return None
    return (f"the {' and the '.join(missing)} of each batch are never moved to `device`: "
            f"x, y = x.to(device), y.to(device). On the CPU nothing changes, but on a GPU the "
            f"model and its inputs must be on the same device.")


# --------------------------------------------------------------------------------------------
# The check's own loops (the oracle)
# --------------------------------------------------------------------------------------------

def _epoch(model, batches, optimizer, mistake: str | None = None):
    """One epoch in training mode; returns [(mean loss of the batch, batch size)].

    mistake: None (the correct loop) or "no_zero_grad" (gradients accumulate across batches).
    """
    model.train()
    stats = []
    for x, y in batches:
        if mistake is None:
            optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        stats.append((loss.item(), len(y)))
    return stats


@torch.no_grad()
def _eval_stats(model, batches):
    """In eval mode: [(mean loss of the batch, correct predictions, batch size)]."""
    model.eval()
    stats = []
    for x, y in batches:
        logits = model(x)
        stats.append((F.cross_entropy(logits, y).item(), int((logits.argmax(1) == y).sum()),
                      len(y)))
    return stats


def _per_sample(stats) -> float:
    return sum(s[0] * s[-1] for s in stats) / sum(s[-1] for s in stats)


def _loss_alternatives(stats, batch_size: int, what: str):
    """(value, hint) pairs for the usual ways of getting the mean loss per sample wrong."""
    losses = [s[0] for s in stats]
    sizes = [s[-1] for s in stats]
    n, k = sum(sizes), len(stats)
    weighted = sum(loss * m for loss, m in zip(losses, sizes))
    return [
        (sum(losses) / k, (f"{what} is the average of the batch means: with a short last batch "
                           f"({sizes[-1]} of {batch_size} samples) that is not the mean per "
                           f"sample. Accumulate loss.item() * len(x) and divide by the number "
                           f"of samples.")),
        (sum(losses) / n, (f"{what} adds the batch means and divides by the number of samples: "
                           f"loss.item() is the MEAN over the batch, multiply it by len(x) "
                           f"first.")),
        (sum(loss * batch_size for loss in losses) / n,
         (f"each batch mean is multiplied by loader.batch_size ({batch_size}) instead of the "
          f"size of that batch (the last one holds {sizes[-1]}): use len(x).")),
        (weighted / (k * batch_size),
         (f"{what} is divided by len(loader) * batch_size = {k * batch_size}, which counts the "
          f"short last batch as full: divide by the number of samples, {n} "
          f"(len(loader.dataset)).")),
        (weighted, f"{what} is the total over all samples: divide it by their number, {n}."),
        (sum(losses), f"{what} is the sum of the batch means: divide by the number of samples."),
        (losses[-1], f"{what} is the loss of the last batch only: average over the whole epoch."),
    ]


def _returned_float(chk: _Check, value, what: str, graph_hint: str) -> float:
    """value as a float; a tensor, None or another type fails with the likely bug."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            chk.fail(f"{what} is a tensor that still holds the autograd graph: {graph_hint}")
        chk.fail(f"{what} is a tensor; return a Python float (loss.item() for each batch, or "
                 f"total.item() at the end).")
    if value is None:
        chk.fail(f"{what} is None: a missing `return`?")
    if not _number(value):
        chk.fail(f"{what} should be a float; got {_describe(value)}.")
    return float(value)


# --------------------------------------------------------------------------------------------
# check_train_one_epoch
# --------------------------------------------------------------------------------------------

def check_train_one_epoch(fn) -> None:
    """Check ``train_one_epoch(model, loader, optimizer, loss_fn, device="cpu") -> float``.

    The model, Linear-BatchNorm-ReLU-Dropout-Linear, is handed over in EVAL mode; the loader
    gives 11 samples in batches of 3, 3, 3 and 2; the optimiser is SGD(lr=0.1). After fn, the
    weights and batch-norm statistics must equal those of the check's own epoch (same dropout
    masks), and the returned float the mean loss per sample over the epoch.

    Names: a forgotten optimizer.zero_grad() or model.train(), optimizer.step() before
    loss.backward(), summing loss tensors (graphs kept alive, or a tensor returned), averaging
    over batches instead of samples, the batch size taken from the loader, a skipped short last
    batch, batches not moved to the device, loss_fn not used or called with swapped arguments.
    """
    n, size = 11, 3
    chk = _Check("check_train_one_epoch", 1)
    chk.case(1, f"nn.Sequential(Linear(6, 8), BatchNorm1d(8), ReLU(), Dropout(0.5), "
                f"Linear(8, 3)) handed over in eval mode, SGD(lr=0.1), {n} samples in batches "
                f"of 3, 3, 3, 2, loss_fn = cross-entropy", size)
    with _seeded(0):
        initial = _mlp()
        x, y = _toy_data(n, seed=1)
        model = copy.deepcopy(initial).eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        watch = _Watch(model)
        loader = _loader(x, y, size, watch.moves)
        try:
            torch.manual_seed(1)                    # the dropout masks
            result = _run(chk, fn, model, loader, optimizer, _WatchedLoss(watch), device="cpu",
                          signature=_SIG_TRAIN)
        finally:
            watch.close()
        kept_at_end = 0 if watch.kept else watch.alive()

        def reference(mistake=None):
            ref = copy.deepcopy(initial)
            torch.manual_seed(1)
            stats = _epoch(ref, _batches(x, y, size), torch.optim.SGD(ref.parameters(), lr=0.1),
                           mistake)
            return ref, stats

        ref_model, stats = reference()
        got_params, got_all = _flat(model, buffers=False), _flat(model)
        no_zero_grad = _flat(reference("no_zero_grad")[0])

    graph_hint = ("summing loss tensors (total += loss) keeps every batch's graph alive. "
                  "Accumulate total += loss.item() * len(x) and return a float.")
    extra = watch.forwards > len(loader)         # extra passes first: they may run without grad
    problem = (_mode_problem(watch, want_training=True)
               or (_count_problem(watch, len(loader), n % size) if extra else None)
               or _grad_problem(watch, True) or _count_problem(watch, len(loader), n % size))
    if problem:
        chk.fail(f"Likely bug: {problem}")
    loss = _returned_float(chk, result, "the value returned", graph_hint)
    if np.array_equal(got_params, _flat(initial, buffers=False)):
        chk.fail("the parameters did not change.",
                 "Likely bug: optimizer.step() must come after loss.backward() (a step before "
                 "it, or right after zero_grad(), finds no gradients); is either call missing?")
    err = _rel(got_all, _flat(ref_model))
    if err > _TOL:
        hint = _first_match(got_all, [
            (no_zero_grad, ("the gradients of earlier batches are added to each new one: "
                            "call optimizer.zero_grad() in every step, before "
                            "loss.backward().")),
        ]) or "compare your loop with: model.train(); then per batch x, y = x.to(device), " \
              "y.to(device); optimizer.zero_grad(); loss = loss_fn(model(x), y); " \
              "loss.backward(); optimizer.step()."
        chk.fail(f"the weights after the epoch differ from the reference by {err:.1e} "
                 f"(relative; tolerance {_TOL:.0e}).", f"Likely bug: {hint}")
    ref_loss = _per_sample(stats)
    loss_err = _rel(loss, ref_loss)
    if loss_err > _TOL:
        hint = _first_match(loss, _loss_alternatives(stats, size, "the returned loss"))
        chk.fail(f"returned {loss:.6g}; the mean loss per sample over the epoch is "
                 f"{ref_loss:.6g}.", f"Likely bug: {hint}" if hint else
                 "Likely bug: accumulate loss.item() * len(x) per batch and divide by the "
                 "number of samples.")
    kept = max(watch.kept, kept_at_end)
    if kept:
        chk.fail(f"Likely bug: {_kept_message(kept)}")
    problem = _moves_problem(watch)
    if problem:
        chk.fail(f"Likely bug: {problem}")
    chk.max_err = max(err, loss_err)
    chk.passed(detail="weights, batch-norm statistics and the mean loss per sample match")


# --------------------------------------------------------------------------------------------
# check_evaluate
# --------------------------------------------------------------------------------------------

def _eval_setup():
    """A model in train mode with batch-norm statistics of its own, 10 samples whose labels
    make the batch accuracies 3/4, 2/4 and 2/2 (0.7 per sample, 0.75 per batch)."""
    model = _mlp()
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.copy_(torch.randn(8) * 0.5)
        bn.running_var.copy_(torch.rand(8) + 0.5)
        bn.num_batches_tracked.fill_(7)
    x, _ = _toy_data(10, seed=2)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    wrong = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1, 0, 0], dtype=torch.bool)
    y = torch.where(wrong, (pred + 1) % 3, pred)
    return model.train(), x, y


def check_evaluate(fn) -> None:
    """Check ``evaluate(model, loader, loss_fn, device="cpu") -> (mean_loss, accuracy)``.

    The model, Linear-BatchNorm-ReLU-Dropout-Linear, is handed over in TRAIN mode; the loader
    gives 10 samples in batches of 4, 4 and 2. Both results must be floats, means per sample, in
    evaluation mode without gradients, and the model must be left exactly as it was.

    Names: a forgotten model.eval() or torch.no_grad(), averaging over batches, accuracy as a
    count (or in percent, or divided by the number of batches), tensors returned, results in the
    wrong order, weights or statistics changed (backward, a step), batches not moved.
    """
    n, size = 10, 4
    chk = _Check("check_evaluate", 1)
    chk.case(1, f"nn.Sequential(Linear(6, 8), BatchNorm1d(8), ReLU(), Dropout(0.5), "
                f"Linear(8, 3)) handed over in train mode, {n} samples in batches of 4, 4, 2, "
                f"loss_fn = cross-entropy", size)
    with _seeded(0):
        model, x, y = _eval_setup()
        before = copy.deepcopy(model.state_dict())
        reference = copy.deepcopy(model)
        watch = _Watch(model)
        loader = _loader(x, y, size, watch.moves)
        grad_before = torch.is_grad_enabled()
        try:
            result = _run(chk, fn, model, loader, _WatchedLoss(watch), device="cpu",
                          signature=_SIG_EVAL)
        finally:
            watch.close()
            grad_after = torch.is_grad_enabled()
            torch.set_grad_enabled(grad_before)
        stats = _eval_stats(reference, _batches(x, y, size))
    if grad_before and not grad_after:
        chk.fail("after evaluate returned, gradients were still off (torch.is_grad_enabled() "
                 "is False): the next training epoch would build no graph and "
                 "loss.backward() would fail.",
                 "Likely bug: torch.set_grad_enabled(False) (or torch.no_grad().__enter__()) "
                 "switches gradients off for everything that follows. Use a block that "
                 "switches them back on when it ends: `with torch.no_grad():` around the loop, "
                 "or the decorator @torch.no_grad() on evaluate.")
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        chk.fail(f"after evaluate returned, {len(frozen)} parameters no longer require "
                 f"gradients ({', '.join(frozen[:3])}{', ...' if len(frozen) > 3 else ''}).",
                 "Likely bug: model.requires_grad_(False) (or p.requires_grad = False) freezes "
                 "the weights for good: the next training epoch would not update them. To "
                 "evaluate without gradients, use `with torch.no_grad():` and leave "
                 "requires_grad alone.")

    problem = _mode_problem(watch, want_training=False)
    if not problem and any(p.grad is not None for p in model.parameters()):
        problem = ("evaluate computed gradients (loss.backward()): evaluation only measures; it "
                   "never calls backward() or optimizer.step(), and runs under torch.no_grad().")
    problem = problem or _grad_problem(watch, False) or _count_problem(watch, len(loader),
                                                                      n % size)
    if problem:
        chk.fail(f"Likely bug: {problem}")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        chk.fail(f"evaluate should return a tuple (mean_loss, accuracy); it returned "
                 f"{_describe(result)}.")
    if any(isinstance(v, torch.Tensor) for v in result):
        chk.fail("evaluate returned tensors; return Python floats: loss.item() per batch, and "
                 "an accuracy from integer counts (correct += (pred == y).sum().item()).")
    if not all(_number(v) for v in result):
        chk.fail(f"evaluate should return two floats; it returned "
                 f"({', '.join(_describe(v) for v in result)}).")
    changed = [k for k, v in model.state_dict().items() if not _same(v, before[k])]
    if changed:
        chk.fail(f"evaluate changed the model ({', '.join(changed)}).",
                 "Likely bug: evaluation must leave weights and batch-norm statistics alone: "
                 "model.eval(), torch.no_grad(), no backward() and no optimizer step.")
    loss, acc = float(result[0]), float(result[1])
    ref_loss = _per_sample(stats)
    correct, total = sum(s[1] for s in stats), sum(s[2] for s in stats)
    ref_acc = correct / total
    if _rel([loss, acc], [ref_acc, ref_loss]) < _TOL:
        chk.fail("evaluate returned (accuracy, mean_loss); return (mean_loss, accuracy).")
    loss_err = _rel(loss, ref_loss)
    if loss_err > _TOL:
        hint = _first_match(loss, _loss_alternatives(stats, size, "the mean loss"))
        chk.fail(f"the mean loss is {loss:.6g}; the mean per sample is {ref_loss:.6g}.",
                 f"Likely bug: {hint}" if hint else
                 "Likely bug: accumulate loss.item() * len(x) and divide by the number of "
                 "samples.")
    if abs(acc - ref_acc) > 1e-6:
        batch_accs = [s[1] / s[2] for s in stats]
        hint = _first_match(acc, [
            (correct, (f"the accuracy is the number of correct predictions ({correct}): "
                       f"divide it by the number of samples, {total}.")),
            (100 * ref_acc, "the accuracy is in percent: return a fraction between 0 and 1."),
            (sum(batch_accs) / len(stats), (f"the accuracy is the average of the batch "
                                            f"accuracies; the last batch holds {stats[-1][2]} "
                                            f"samples, not {size}: count correct predictions "
                                            f"over all samples and divide by {total}.")),
            (correct / len(stats), ("the count of correct predictions is divided by the number "
                                    "of batches (len(loader)): divide by the number of "
                                    "samples, len(loader.dataset).")),
            (correct / (len(stats) * size), ("divided by len(loader) * batch_size, which counts "
                                             "the short last batch as full: divide by "
                                             "len(loader.dataset).")),
            (stats[-1][1] / stats[-1][2], (f"the accuracy is that of the last batch only "
                                           f"({stats[-1][1]}/{stats[-1][2]}): the count is "
                                           f"overwritten in every batch (correct = ... instead "
                                           f"of correct += ...), or computed after the loop "
                                           f"from the last batch's logits. Add up the correct "
                                           f"predictions of every batch and divide by {total}.")),
            (stats[-1][1] / total, (f"only the last batch's correct predictions are counted "
                                    f"({stats[-1][1]} of {total} samples): correct = ... "
                                    f"overwrites the count in every batch; add them up with "
                                    f"correct += ....")),
            (stats[0][1] / stats[0][2], ("the accuracy is that of the first batch only: is "
                                         "the `return` inside the loop?")),
        ]) or "the prediction is logits.argmax(dim=1); count (pred == y) over all samples."
        chk.fail(f"the accuracy is {acc:.6g}; expected {correct}/{total} = {ref_acc:.6g}.",
                 f"Likely bug: {hint}")
    problem = _moves_problem(watch)
    if problem:
        chk.fail(f"Likely bug: {problem}")
    chk.max_err = loss_err
    chk.passed(detail=f"mean loss {ref_loss:.4f} and accuracy {ref_acc:.1f} per sample, model "
                      f"unchanged")


# --------------------------------------------------------------------------------------------
# check_fit
# --------------------------------------------------------------------------------------------

# A linear model that starts at zero and only ever sees label 0 in training, while 4 in 10
# validation labels are 1: validation loss falls while p(class 0) approaches 0.6, then rises.
# Case 3 changes the training labels from epoch to epoch (`ones`: how many of the 8 are 1), so
# that the validation loss goes down, up, down (a new best), up, down (not a new best), up: the
# stopping rule must count from the best epoch and start counting again at every new best.
_FIT_CASES = [
    {"lr": 0.05, "epochs": 10, "patience": None, "gamma": None},
    {"lr": 0.1, "epochs": 8, "patience": 3, "gamma": 0.8},
    {"lr": 0.3, "epochs": 9, "patience": None, "gamma": None,
     "ones": (0, 2, 0, 6, 0, 8, 0, 0, 0)},
]


class _EpochLoader:
    """A loader whose data changes at every pass: pass k iterates loaders[k] (the last one
    again when they run out). len(), .dataset and .batch_size are those of the latest pass."""

    def __init__(self, loaders: list):
        self.loaders, self.passes = loaders, 0

    @property
    def _current(self):
        return self.loaders[min(max(self.passes - 1, 0), len(self.loaders) - 1)]

    def __iter__(self):
        self.passes += 1
        return iter(self._current)

    def __len__(self):
        return len(self._current)

    @property
    def dataset(self):
        return self._current.dataset

    @property
    def batch_size(self):
        return self._current.batch_size


def _train_labels(case: dict, epoch: int, y_train):
    ones = case.get("ones")
    if ones is None:
        return y_train
    y = torch.zeros_like(y_train)
    y[:ones[min(epoch, len(ones) - 1)]] = 1
    return y


def _stops(val_losses: list, patience: int, rule: str):
    """(epochs run, best index) of a stopping rule over a whole validation curve: "best" (the
    right one), "no_reset" (the count of bad epochs never restarts), "previous" (improved means
    better than the previous epoch)."""
    best, best_i, bad = math.inf, 0, 0
    for i, v in enumerate(val_losses):
        better = v < (val_losses[i - 1] if rule == "previous" and i else best)
        if better:
            best_i = i
            best = min(best, v) if rule != "previous" else v
            if rule != "no_reset":
                bad = 0
        else:
            bad += 1
            if (i - best_i if rule == "best" else bad) >= patience:
                return i + 1, best_i
    return len(val_losses), best_i


def _fit_data():
    g = torch.Generator().manual_seed(0)
    x_train, y_train = torch.randn(8, 3, generator=g), torch.zeros(8, dtype=torch.long)
    x_val = torch.randn(10, 3, generator=g)
    y_val = torch.tensor([0, 0, 1, 0, 1, 0, 0, 1, 0, 1])
    return x_train, y_train, x_val, y_val


def _fit_objects(case: dict):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=case["lr"])
    scheduler = None
    if case["gamma"] is not None:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=case["gamma"])
    return model, optimizer, scheduler


def _fit_reference(case: dict, data, size: int, full: bool = False):
    """The check's own fit: rows, the weights after every epoch, the best index (0-based).
    full: no early stop (the whole validation curve, to replay wrong stopping rules)."""
    model, optimizer, scheduler = _fit_objects(case)
    x_train, y_train, x_val, y_val = data
    val = _batches(x_val, y_val, size)
    patience = 2 if case["patience"] is None else case["patience"]
    rows, states, best, best_i = [], [], math.inf, 0
    for i in range(case["epochs"]):
        train = _batches(x_train, _train_labels(case, i, y_train), size)
        lr = optimizer.param_groups[0]["lr"]
        loss = _per_sample(_epoch(model, train, optimizer))
        stats = _eval_stats(model, val)
        on_train = _per_sample(_eval_stats(model, train))
        rows.append({"loss": loss, "val_loss": _per_sample(stats),
                     "val_acc": sum(s[1] for s in stats) / len(y_val), "lr": lr,
                     "next_lr": lr, "train_loss": on_train})
        states.append(_flat(model))
        if scheduler is not None:
            scheduler.step()
            rows[-1]["next_lr"] = optimizer.param_groups[0]["lr"]
        if rows[-1]["val_loss"] < best:
            best, best_i = rows[-1]["val_loss"], i
        elif i - best_i >= patience and not full:
            break
    return rows, states, best_i


def check_fit(fn) -> None:
    """Check ``fit(model, train_loader, val_loader, optimizer, loss_fn, epochs, patience=2,
    scheduler=None, device="cpu") -> history``.

    fit runs as it is, with the train_one_epoch and evaluate it finds (check those first). The
    scenario: a zero-initialised nn.Linear(3, 2) trained only on label 0, validated on labels
    with 4 in 10 ones, so that validation loss improves, then worsens. Case 1 uses the defaults
    (patience=2, no scheduler), case 2 patience=3 and ExponentialLR(gamma=0.8); in case 3 the
    training labels change from epoch to epoch (the train loader gives other labels at each
    pass), so that validation loss goes down, up, down to a new best, up, down (not to a new
    best) and up: the count of bad epochs must restart at every new best, and "improved" means
    better than the best so far, not than the previous epoch. The history
    rows ``history["epochs"]`` (epoch, loss, val_loss, val_acc, lr), the stopping epoch,
    ``history["best_epoch"]``, the scheduler's steps and the weights left in the model (those of
    the best epoch) are compared with the check's own fit.

    Names: the last weights kept instead of the best, ``best = model.state_dict()`` without a
    copy, no early stopping, stopping one epoch early or late, a patience count not reset on
    improvement, improvement measured against the previous epoch instead of the best, the scheduler stepped per batch,
    before training or not at all, the lr recorded after scheduler.step(), ``test_`` keys for
    validation, and a best_epoch numbered unlike the rows.
    """
    size, data = 3, _fit_data()
    chk = _Check("check_fit", len(_FIT_CASES))
    for index, case in enumerate(_FIT_CASES, 1):
        kwargs = {} if case["patience"] is None else {"patience": case["patience"]}
        sched_desc = (f"ExponentialLR(gamma={case['gamma']})" if case["gamma"] is not None
                      else "no scheduler")
        chk.case(index, f"zero-initialised nn.Linear(3, 2), SGD(lr={case['lr']}), "
                        f"{sched_desc}, epochs={case['epochs']}, "
                        f"patience={kwargs.get('patience', '2 (the default)')}, 8 training and "
                        f"10 validation samples in batches of 3"
                        + (f", the number of training labels 1 changing per epoch: "
                           f"{', '.join(map(str, case['ones']))}" if "ones" in case else ""))
        with _seeded(0):
            rows, states, best_i = _fit_reference(case, data, size)
            curve = [r["val_loss"] for r in _fit_reference(case, data, size, full=True)[0]]
            model, optimizer, scheduler = _fit_objects(case)
            seen = _watch_fit(model, optimizer, scheduler)
            x_train, y_train, x_val, y_val = data
            if scheduler is not None:
                kwargs["scheduler"] = scheduler
            train_loader = _loader(x_train, y_train, size) if "ones" not in case else \
                _EpochLoader([_loader(x_train, _train_labels(case, i, y_train), size)
                              for i in range(case["epochs"])])
            history = _run(chk, fn, model, train_loader,
                           _loader(x_val, y_val, size), optimizer, nn.CrossEntropyLoss(),
                           case["epochs"], signature=_SIG_FIT, device="cpu", **kwargs)
        _check_history(chk, case, history, rows, states, best_i, seen["steps"],
                       seen["scheduler"], seen["loads"], _flat(model), curve)
    chk.passed(detail="history, early stop, scheduler steps and the best weights restored")


def _watch_fit(model, optimizer, scheduler) -> dict:
    """Count optimizer steps, note after which step each scheduler.step() comes, and note for
    each model.load_state_dict(d) whether d shares memory with the model's own tensors."""
    seen = {"steps": 0, "scheduler": [], "loads": []}

    def count_step(*_):
        seen["steps"] += 1
    optimizer.register_step_post_hook(count_step)
    if scheduler is not None:
        scheduler_step = scheduler.step

        def counted_step(*args, **kwargs):
            seen["scheduler"].append(seen["steps"])
            return scheduler_step(*args, **kwargs)
        scheduler.step = counted_step
    load_state_dict = model.load_state_dict

    def watched_load(state_dict, *args, **kwargs):
        own = {t.data_ptr() for t in model.state_dict().values()}
        seen["loads"].append(any(isinstance(v, torch.Tensor) and v.data_ptr() in own
                                 for v in state_dict.values()))
        return load_state_dict(state_dict, *args, **kwargs)
    model.load_state_dict = watched_load
    return seen


def _check_history(chk, case, history, rows, states, best_i, steps, sched_calls, loads, got,
                   curve):
    """Compare what fit returned and left in the model with the reference run."""
    per_epoch = 3                                   # optimizer steps per epoch
    if not isinstance(history, dict):
        chk.fail(f"fit should return the history, a dict; it returned {_describe(history)}.")
    got_rows = history.get("epochs")
    if not isinstance(got_rows, list) or not all(isinstance(r, dict) for r in got_rows):
        chk.fail(f"history['epochs'] should be a list with one dict per epoch; it is "
                 f"{_describe(got_rows)} (history keys: {sorted(history)}).")
    if not got_rows:
        chk.fail("history['epochs'] is empty: append one row per epoch.")
    want = ("epoch", "loss", "val_loss", "val_acc", "lr")
    missing = [k for k in want if k not in got_rows[0]]
    if missing:
        test_keys = [k for k in got_rows[0] if str(k).startswith("test_")]
        chk.fail(f"the rows of history['epochs'] lack {missing}; they have "
                 f"{sorted(map(str, got_rows[0]))}.",
                 "Likely bug: these numbers come from the VALIDATION set: name them val_loss "
                 "and val_acc (the test set stays unseen until the very end)." if test_keys
                 else f"Likely bug: each row is {{{', '.join(repr(k) for k in want)}}}.")
    base = got_rows[0]["epoch"]
    if base not in (0, 1) or [r.get("epoch") for r in got_rows] != \
            list(range(base, base + len(got_rows))):
        chk.fail(f"the rows' epochs are {[r.get('epoch') for r in got_rows]}: number them "
                 f"0, 1, 2, ... or 1, 2, 3, ..., one row per epoch.")
    trained = steps / per_epoch
    if trained != len(got_rows):
        chk.fail(f"fit trained {trained:g} epochs ({steps} optimizer steps, {per_epoch} per "
                 f"epoch) but history['epochs'] has {len(got_rows)} rows.",
                 "Likely bug: append one row per epoch, the last one too, and train each "
                 "epoch once (one call of train_one_epoch).")
    if case["gamma"] is not None:
        _check_scheduler(chk, sched_calls, len(got_rows), per_epoch)
    for i, (row, ref) in enumerate(zip(got_rows, rows)):
        for key in ("loss", "val_loss", "val_acc", "lr"):
            value = row[key]
            if isinstance(value, torch.Tensor) or not _number(value):
                chk.fail(f"history row {i} has {key} = {_describe(value)}; expected a float.")
            if _rel(value, ref[key]) > _TOL:
                hint = _first_match(value, {
                    "lr": [(ref["next_lr"], ("the lr is read after scheduler.step(): record "
                                             "the rate used DURING the epoch, read before the "
                                             "step."))],
                    "val_loss": [(ref["train_loss"], ("the validation loss is measured on the "
                                                      "training loader: evaluate(model, "
                                                      "val_loader, loss_fn, device)."))],
                }.get(key, [])) or ("does fit call train_one_epoch(model, train_loader, "
                                    "optimizer, loss_fn, device) then evaluate(model, "
                                    "val_loader, loss_fn, device) once per epoch? Run "
                                    "check_train_one_epoch and check_evaluate first.")
                chk.fail(f"history row {i} (epoch {row['epoch']}): {key} = {value:.6g}, "
                         f"expected {ref[key]:.6g}.", f"Likely bug: {hint}")
    n_ref, n_got, patience = len(rows), len(got_rows), case["patience"] or 2
    no_reset, previous = _stops(curve, patience, "no_reset"), _stops(curve, patience, "previous")
    shape = ""
    if "ones" in case:
        shape = (f" (the training labels change from epoch to epoch, so val_loss goes down, up "
                 f"and down again: {', '.join(f'{r:.4f}' for r in curve[:n_ref])})")
    previous_hint = ("'improved' means better than the previous epoch: compare val_loss with "
                     "the BEST so far (best_loss), and count the epochs since the best one; an "
                     "epoch better than the last but not than the best is no improvement.")
    if n_got != n_ref:
        best_text = (f"val_loss is lowest after epoch {base + best_i} and worse in the "
                     f"{patience} epochs after it, so fit should stop after epoch "
                     f"{base + n_ref - 1} ({n_ref} epochs){shape}")
        if n_got == no_reset[0] != n_ref:
            hint = ("the count of epochs without improvement is not reset when val_loss "
                    "improves: set it back to 0 at every new best (or count epoch - "
                    "best_epoch), so that patience counts the bad epochs IN A ROW after the "
                    "best.")
        elif n_got == previous[0] != n_ref:
            hint = previous_hint
        elif n_got == case["epochs"]:
            hint = ("no early stop: count the epochs since the best val_loss and stop when "
                    "that count reaches patience.")
        elif n_got == n_ref - 1:
            hint = ("it stops one epoch early: stop when `patience` epochs in a row have not "
                    "improved (epoch - best_epoch == patience), not patience - 1.")
        elif n_got == n_ref + 1:
            hint = ("it stops one epoch late: stop as soon as `patience` epochs in a row have "
                    "not improved (epoch - best_epoch == patience).")
        else:
            hint = "compare the stopping rule with: stop when epoch - best_epoch == patience."
        chk.fail(f"fit ran {n_got} epochs; {best_text}.", f"Likely bug: {hint}")
    best = history.get("best_epoch")
    if best != base + best_i:
        hint = None
        if best == base + previous[1] != base + best_i:
            hint = previous_hint
        elif best == base + n_ref - 1:
            hint = "best_epoch is the last epoch: record the epoch with the lowest val_loss."
        elif best == best_i + 1 - base:
            hint = "best_epoch is numbered unlike the rows' epoch: use the same numbering."
        chk.fail(f"history['best_epoch'] is {best!r}; the lowest val_loss "
                 f"({rows[best_i]['val_loss']:.6g}) is at epoch {base + best_i}.",
                 f"Likely bug: {hint}" if hint else None)
    err = _rel(got, states[best_i])
    if err > _TOL:
        if _rel(got, states[-1]) < _TOL:
            if any(loads):
                hint = ("the best weights follow the model: model.state_dict() returns the "
                        "live tensors (they keep changing as training goes on), so "
                        "`best = model.state_dict()` ends up holding the last weights. Keep "
                        "a copy: best = copy.deepcopy(model.state_dict()).")
            else:
                hint = ("the model keeps the weights of the last epoch: at the end, load the "
                        "best ones back with model.load_state_dict(best_state).")
        elif previous[1] < len(states) and _rel(got, states[previous[1]]) < _TOL:
            hint = previous_hint
        else:
            hint = ("the weights are neither the best epoch's nor the last's: keep "
                    "copy.deepcopy(model.state_dict()) whenever val_loss improves and load it "
                    "back at the end.")
        chk.fail(f"the weights left in the model differ from those after epoch "
                 f"{base + best_i} (the best) by {err:.1e}.", f"Likely bug: {hint}")
    chk.max_err = max(chk.max_err, err)


def _check_scheduler(chk, calls, epochs, per_epoch):
    right = [per_epoch * (k + 1) for k in range(len(calls))]
    if calls == right and len(calls) in (epochs, epochs - 1):
        return
    if not calls:
        hint = "the scheduler is never stepped: call scheduler.step() once after each epoch."
    elif len(calls) >= epochs * per_epoch - per_epoch:
        hint = ("the scheduler is stepped after every batch: step it once per epoch, after "
                "train_one_epoch (ExponentialLR's gamma is per epoch).")
    elif calls == [per_epoch * k for k in range(len(calls))]:
        hint = ("the scheduler is stepped at the start of each epoch, before training: step it "
                "after the epoch's optimizer steps.")
    else:
        hint = "call scheduler.step() exactly once per epoch, after train_one_epoch."
    chk.fail(f"scheduler.step() was called after optimizer steps {calls} ({per_epoch} steps per "
             f"epoch, {epochs} epochs).", f"Likely bug: {hint}")


# --------------------------------------------------------------------------------------------
# check_checkpoint
# --------------------------------------------------------------------------------------------

def _ckpt_objects(seed: int):
    torch.manual_seed(seed)
    model = _mlp(norm=False, dropout=0.25)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def _ckpt_epoch(model, loader, optimizer, scheduler) -> None:
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    scheduler.step()


def check_checkpoint(save_fn, load_fn) -> None:
    """Check ``save_checkpoint(path, model, optimizer, scheduler, epoch)`` and
    ``load_checkpoint(path, model, optimizer, scheduler) -> int``.

    A small model with dropout, Adam and StepLR trains 2 epochs on a shuffled loader (shuffle
    and dropout draw from torch's global RNG); save_fn(path, ..., epoch=2) writes the
    checkpoint, which must load with ``torch.load(path, weights_only=True)``. Then, as in a new
    session, FRESH objects and another RNG state are made, load_fn must restore model,
    optimiser, scheduler and RNG state and return 3 (the next epoch); one more epoch must then
    give exactly the weights of 3 uninterrupted epochs.

    Names: optimiser state forgotten (Adam's moments), scheduler or RNG state forgotten, the
    epoch off by one, whole objects pickled (weights_only fails), the file written elsewhere.
    """
    chk = _Check("check_checkpoint", 1)
    chk.case(1, "Linear-ReLU-Dropout-Linear, Adam(lr=0.05), StepLR(step_size=1, gamma=0.5), "
                "11 samples shuffled in batches of 4: 2 epochs, save, load into fresh objects, "
                "1 more epoch")
    x, y = _toy_data(11, seed=3)
    with _seeded(0), tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "checkpoint.pt")
        model, optimizer, scheduler = _ckpt_objects(seed=0)
        torch.manual_seed(1)
        for _ in range(3):
            _ckpt_epoch(model, _loader(x, y, 4, shuffle=True), optimizer, scheduler)
        want = _flat(model)

        model, optimizer, scheduler = _ckpt_objects(seed=0)
        torch.manual_seed(1)
        for _ in range(2):
            _ckpt_epoch(model, _loader(x, y, 4, shuffle=True), optimizer, scheduler)
        saved = {"model": copy.deepcopy(model.state_dict()),
                 "optimizer": copy.deepcopy(optimizer.state_dict()),
                 "scheduler": copy.deepcopy(scheduler.state_dict()),
                 "rng": torch.get_rng_state()}
        _run(chk, save_fn, path, model, optimizer, scheduler, 2, signature=_SIG_SAVE)
        _check_file(chk, path)

        model, optimizer, scheduler = _ckpt_objects(seed=7)      # a new session
        torch.manual_seed(99)
        nxt = _run(chk, load_fn, path, model, optimizer, scheduler, signature=_SIG_LOAD)
        _check_restored(chk, saved, model, optimizer, scheduler, nxt)
        _ckpt_epoch(model, _loader(x, y, 4, shuffle=True), optimizer, scheduler)
        got = _flat(model)
    err = _rel(got, want)
    if err > _TOL:
        chk.fail(f"after loading and one more epoch, the weights differ from 3 uninterrupted "
                 f"epochs by {err:.1e}.", "Likely bug: restore everything the next epoch "
                 "depends on: model, optimizer and scheduler state_dicts and torch's RNG state.")
    chk.max_err = err
    chk.passed(detail="resumed training equals 3 uninterrupted epochs")


def _check_file(chk: _Check, path: str) -> None:
    if not os.path.exists(path):
        chk.fail("save_checkpoint wrote no file at the path it was given: "
                 "torch.save(checkpoint, path).")
    try:
        content = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 (the learner's file: any failure is the finding)
        chk.fail(f"torch.load(path, weights_only=True) fails with {type(exc).__name__}.",
                 "Likely bug: the checkpoint holds whole objects (a model, an optimizer, a "
                 "bound method such as optimizer.state_dict without the parentheses): save "
                 "only state_dicts, numbers and tensors, e.g. {'model': model.state_dict(), "
                 "'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(), "
                 "'epoch': epoch, 'rng_state': torch.get_rng_state()}.")
    if not isinstance(content, dict):
        chk.fail(f"the checkpoint holds {_describe(content)}; save one dict of the states.")


def _check_restored(chk, saved, model, optimizer, scheduler, nxt) -> None:
    if not _same(model.state_dict(), saved["model"]):
        chk.fail("Likely bug: the model's weights were not restored: save model.state_dict() "
                 "and load it with model.load_state_dict(checkpoint['model']).")
    if not _same(optimizer.state_dict(), saved["optimizer"]):
        what = "is empty" if not optimizer.state_dict()["state"] else "differs"
        chk.fail(f"after load_checkpoint the optimizer's state {what} (Adam keeps running "
                 f"means of the gradients and of their squares, and a step count).",
                 "Likely bug: save optimizer.state_dict() and restore it with "
                 "optimizer.load_state_dict(checkpoint['optimizer']); without it Adam "
                 "restarts from zero moments.")
    if not _same(scheduler.state_dict(), saved["scheduler"]):
        chk.fail(f"after load_checkpoint the scheduler's last_epoch is {scheduler.last_epoch}, "
                 f"saved {saved['scheduler']['last_epoch']}.",
                 "Likely bug: save scheduler.state_dict() and restore it with "
                 "scheduler.load_state_dict(checkpoint['scheduler']), or the schedule starts "
                 "over.")
    if not torch.equal(torch.get_rng_state(), saved["rng"]):
        chk.fail("after load_checkpoint torch's RNG state is not the one at save time.",
                 "Likely bug: save torch.get_rng_state() and restore it with "
                 "torch.set_rng_state(checkpoint['rng_state']); otherwise the shuffle and the "
                 "dropout masks of the resumed epochs differ from an uninterrupted run.")
    if isinstance(nxt, torch.Tensor) or not isinstance(nxt, numbers.Integral) \
            or isinstance(nxt, bool):
        chk.fail(f"load_checkpoint returned {_describe(nxt)}; return the next epoch to run, "
                 f"an int.")
    if nxt != 3:
        hint = {2: ("it returns the epoch that was saved: that epoch is finished, return the "
                    "next one, epoch + 1, or the resumed run repeats it."),
                4: "1 is added twice (in save and in load): add it once."}.get(int(nxt))
        chk.fail(f"save_checkpoint(..., epoch=2) was called after epoch 2 finished; "
                 f"load_checkpoint returned {nxt}, expected 3 (the next epoch to run).",
                 f"Likely bug: {hint}" if hint else None)
