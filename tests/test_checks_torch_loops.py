"""The training-loop checks of lesson 06 pass correct loops and name the classic mistakes.

Every learner-side function here is written independently of the checks' own loops; each
keyword argument of a function below switches on one classic mistake.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mnist_course import checks

_LOSSES = []        # where a buggy loop keeps its loss tensors past the epoch


# --------------------------------------------------------------------------------------------
# train_one_epoch
# --------------------------------------------------------------------------------------------

def train_one_epoch(model, loader, optimizer, loss_fn, device="cpu", *, zero_grad=True,
                    train=True, total_as="item", divide_by="samples", move=True,
                    step_first=False, own_loss=False, swap=False, no_grad=False,
                    skip_short=False, keep_global=False, softmax=False, second_pass=False):
    if train:
        model.train()
    total, seen, batch_means, kept = 0.0, 0, [], []
    for x, y in loader:
        if skip_short and len(y) < loader.batch_size:
            continue
        if move:
            x, y = x.to(device), y.to(device)
        if zero_grad:
            optimizer.zero_grad()
        with torch.set_grad_enabled(not no_grad):
            logits = model(x)
            if own_loss:
                loss = F.cross_entropy(logits, y)
            else:
                out = logits.softmax(dim=1) if softmax else logits
                loss = loss_fn(y, out) if swap else loss_fn(out, y)
            if second_pass:                         # training accuracy from another forward
                with torch.no_grad():
                    model(x).argmax(dim=1)
        if step_first:
            optimizer.step()
        loss.backward()
        if not step_first:
            optimizer.step()
        if keep_global:
            _LOSSES.append(loss)
        if total_as == "tensor":
            total = total + loss * len(y)
        elif total_as == "list":
            kept.append((loss, len(y)))
        elif divide_by == "batch_size":
            total += loss.item() * loader.batch_size
        else:
            total += loss.item() * len(y)
        batch_means.append(loss.item())
        seen += len(y)
    if total_as == "list":
        total = sum(loss.item() * n for loss, n in kept)
    if divide_by == "batches":
        return sum(batch_means) / len(batch_means)
    if divide_by == "means_by_samples":
        return sum(batch_means) / seen
    if divide_by == "full_batches":
        return total / (len(loader) * loader.batch_size)
    if total_as == "return_tensor":
        return torch.tensor(total / seen)
    mean = total / seen
    return mean.item() if total_as == "tensor" else mean


def train_one_epoch_variant(model, loader, optimizer, loss_fn, device="cpu"):
    """Also correct: zero_grad after the step, detached running total, list-comprehension move."""
    model.train()
    total = torch.zeros(())
    for batch in loader:
        x, y = [t.to(device) for t in batch]
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        total += loss.detach() * x.size(0)
    return (total / len(loader.dataset)).item()


def test_check_train_one_epoch_passes_correct_loops(capsys):
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    checks.check_train_one_epoch(train_one_epoch)
    checks.check_train_one_epoch(train_one_epoch_variant)
    assert capsys.readouterr().out.count("✓ check_train_one_epoch") == 2
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("kwargs, words", [
    ({"zero_grad": False}, "optimizer.zero_grad()"),
    ({"train": False}, "model.train()"),
    ({"total_as": "tensor"}, "graphs of earlier batches stayed alive"),
    ({"total_as": "list"}, "graphs of earlier batches stayed alive"),
    ({"keep_global": True}, "graphs of earlier batches stayed alive"),
    ({"total_as": "return_tensor"}, "is a tensor; return a Python float"),
    ({"divide_by": "batches"}, "average of the batch means"),
    ({"divide_by": "means_by_samples"}, "multiply it by len"),
    ({"divide_by": "batch_size"}, "instead of the size of that batch"),
    ({"divide_by": "full_batches"}, "counts the short last batch as full"),
    ({"move": False}, "never moved to `device`"),
    ({"step_first": True}, "step"),
    ({"own_loss": True}, "loss_fn argument"),
    ({"swap": True}, "loss_fn(logits, labels)"),
    ({"no_grad": True}, "torch.no_grad()"),
    ({"skip_short": True}, "short last batch"),
    ({"softmax": True}, "a softmax before the loss?"),
    ({"second_pass": True}, "A second forward pass for the accuracy"),
])
def test_check_train_one_epoch_names_the_bug(kwargs, words):
    def buggy(model, loader, optimizer, loss_fn, device="cpu"):
        return train_one_epoch(model, loader, optimizer, loss_fn, device, **kwargs)

    try:
        with pytest.raises(AssertionError) as info:
            checks.check_train_one_epoch(buggy)
    finally:
        _LOSSES.clear()
    assert words in str(info.value), str(info.value)


def test_check_train_one_epoch_names_a_returned_graph():
    def returns_graph(model, loader, optimizer, loss_fn, device="cpu"):
        model.train()
        total = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss * len(y)
        return total / len(loader.dataset)

    with pytest.raises(AssertionError, match="still holds the autograd graph"):
        checks.check_train_one_epoch(returns_graph)


def test_check_train_one_epoch_names_a_step_before_backward_that_updates_nothing():
    def step_after_zero_grad(model, loader, optimizer, loss_fn, device="cpu"):
        model.train()
        total = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            optimizer.step()
            loss.backward()
            total += loss.item() * len(y)
        return total / len(loader.dataset)

    with pytest.raises(AssertionError, match="parameters did not change"):
        checks.check_train_one_epoch(step_after_zero_grad)


def test_check_train_one_epoch_names_a_step_between_forward_and_backward():
    def step_before_backward(model, loader, optimizer, loss_fn, device="cpu"):
        model.train()
        total = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            optimizer.step()
            optimizer.zero_grad()
            loss.backward()
            total += loss.item() * len(y)
        return total / len(loader.dataset)

    with pytest.raises(AssertionError, match="optimizer.step\\(\\) ran between"):
        checks.check_train_one_epoch(step_before_backward)


def test_check_train_one_epoch_wants_the_device_argument():
    with pytest.raises(AssertionError, match="expected signature"):
        checks.check_train_one_epoch(lambda model, loader, optimizer, loss_fn: 0.0)


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------

def evaluate(model, loader, loss_fn, device="cpu", *, eval_mode=True, no_grad=True,
             average="samples", accuracy="fraction", tensors=False, swapped=False,
             backward=False, move=True, grad_off="block", second_pass=None, softmax=False):
    if eval_mode:
        model.eval()
    if grad_off == "global":                    # switched off, never switched back on
        torch.set_grad_enabled(False)
    elif grad_off == "enter":
        torch.no_grad().__enter__()
    elif grad_off == "freeze":
        model.requires_grad_(False)
    total, correct, seen, batch_losses, batch_accs = 0.0, 0, 0, [], []
    last = None
    with torch.set_grad_enabled(not no_grad and grad_off == "block"):
        for x, y in loader:
            if move:
                x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = loss_fn(logits.softmax(dim=1) if softmax else logits, y)
            if backward:
                loss.backward()
            if second_pass == "per_batch":          # the model again, for the accuracy
                right = (model(x).argmax(dim=1) == y).sum()
            else:
                right = (logits.argmax(dim=1) == y).sum()
            total += loss.item() * len(y)
            if accuracy == "overwritten":
                correct = right.item()
            else:
                correct += right if tensors else right.item()
            seen += len(y)
            batch_losses.append(loss.item())
            batch_accs.append(right.item() / len(y))
            last = logits, y
        if second_pass == "loader":                 # a second pass over the loader
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    mean_loss = total / seen
    if average == "batches":
        mean_loss = sum(batch_losses) / len(batch_losses)
    acc = {"fraction": correct / seen, "count": correct, "percent": 100 * correct / seen,
           "batches": sum(batch_accs) / len(batch_accs), "per_batch": correct / len(loader),
           "overwritten": correct / seen, "after_loop": float(
               (last[0].argmax(1) == last[1]).float().mean())}
    acc = acc[accuracy]
    if tensors:
        mean_loss = torch.tensor(mean_loss)
    return (acc, mean_loss) if swapped else (mean_loss, acc)


@torch.inference_mode()
def evaluate_variant(model, loader, loss_fn, device="cpu"):
    """Also correct: inference mode, counts from len(loader.dataset)."""
    model.eval()
    total, correct = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total += loss_fn(logits, y).item() * y.numel()
        correct += int((logits.argmax(1) == y).sum())
    return total / len(loader.dataset), correct / len(loader.dataset)


def test_check_evaluate_passes_correct_code(capsys):
    checks.check_evaluate(evaluate)
    checks.check_evaluate(evaluate_variant)
    assert capsys.readouterr().out.count("✓ check_evaluate") == 2


@pytest.mark.parametrize("kwargs, words", [
    ({"eval_mode": False}, "model.eval()"),
    ({"no_grad": False}, "torch.no_grad()"),
    ({"average": "batches"}, "average of the batch means"),
    ({"accuracy": "count"}, "number of correct predictions"),
    ({"accuracy": "percent"}, "percent"),
    ({"accuracy": "batches"}, "average of the batch accuracies"),
    ({"accuracy": "per_batch"}, "number of batches"),
    ({"tensors": True}, "returned tensors"),
    ({"swapped": True}, "return (mean_loss, accuracy)"),
    ({"no_grad": False, "backward": True}, "computed gradients"),
    ({"move": False}, "never moved to `device`"),
    # issue 23: gradients left off, the last batch only, a second pass, a softmax
    ({"grad_off": "global"}, "gradients were still off"),
    ({"grad_off": "enter"}, "gradients were still off"),
    ({"grad_off": "freeze"}, "model.requires_grad_(False)"),
    ({"accuracy": "overwritten"}, "only the last batch's correct predictions are counted"),
    ({"accuracy": "after_loop"}, "the accuracy is that of the last batch only (2/2)"),
    ({"second_pass": "per_batch"}, "A second forward pass for the accuracy"),
    ({"second_pass": "loader"}, "A second forward pass for the accuracy"),
    ({"softmax": True}, "a softmax before the loss?"),
])
def test_check_evaluate_names_the_bug(kwargs, words):
    def buggy(model, loader, loss_fn, device="cpu"):
        return evaluate(model, loader, loss_fn, device, **kwargs)

    with pytest.raises(AssertionError) as info:
        checks.check_evaluate(buggy)
    assert words in str(info.value), str(info.value)
    assert torch.is_grad_enabled()              # the check switched gradients back on


def test_check_evaluate_names_a_changed_model():
    def steps(model, loader, loss_fn, device="cpu"):
        result = evaluate(model, loader, loss_fn, device)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        return result

    with pytest.raises(AssertionError, match="evaluate changed the model"):
        checks.check_evaluate(steps)



# --------------------------------------------------------------------------------------------
# fit (uses this module's train_one_epoch and evaluate, as a notebook uses its globals)
# --------------------------------------------------------------------------------------------

def fit(model, train_loader, val_loader, optimizer, loss_fn, epochs, patience=2,
        scheduler=None, device="cpu", *, restore="copy", stop_offset=0, stop=True,
        sched_when="after", lr_after=False, prefix="val_", first_epoch=1, best_index=False,
        rule="best"):
    history = {"epochs": []}
    best_loss, best_epoch, best_state = float("inf"), None, None
    bad, previous = 0, float("inf")
    for epoch in range(first_epoch, first_epoch + epochs):
        if scheduler is not None and sched_when == "before":
            scheduler.step()
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None and sched_when == "batch":
            loss = _train_with_batch_steps(model, train_loader, optimizer, loss_fn, scheduler)
        else:
            loss = train_one_epoch(model, train_loader, optimizer, loss_fn, device)
        val_loss, val_acc = evaluate(model, val_loader, loss_fn, device)
        if scheduler is not None and sched_when == "after":
            scheduler.step()
        if lr_after:
            lr = optimizer.param_groups[0]["lr"]
        history["epochs"].append({"epoch": epoch, "loss": loss, prefix + "loss": val_loss,
                                  prefix + "acc": val_acc, "lr": lr})
        if rule != "best":                      # a counter of bad epochs
            improved = val_loss < (previous if rule.startswith("previous") else best_loss)
            previous = val_loss
            if improved:
                best_loss, best_epoch = min(best_loss, val_loss), epoch
                if rule == "previous_keeps_best":   # the best weights, the wrong count
                    best_epoch = min((r for r in history["epochs"]),
                                     key=lambda r: r[prefix + "loss"])["epoch"]
                best_state = copy.deepcopy(model.state_dict())
                if rule != "no_reset":
                    bad = 0
            else:
                bad += 1
                if bad >= patience:
                    break
            continue
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = (copy.deepcopy(model.state_dict()) if restore == "copy"
                          else model.state_dict())
        elif stop and epoch - best_epoch >= patience + stop_offset:
            break
    if restore != "none":
        model.load_state_dict(best_state)
    history["best_epoch"] = best_epoch - first_epoch if best_index else best_epoch
    return history


def _train_with_batch_steps(model, loader, optimizer, loss_fn, scheduler):
    model.train()
    total = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(y)
    return total / len(loader.dataset)


def test_check_fit_passes_correct_code(capsys):
    checks.check_fit(fit)
    checks.check_fit(lambda *a, **k: fit(*a, **k, first_epoch=0))
    assert capsys.readouterr().out.count("✓ check_fit") == 2


@pytest.mark.filterwarnings("ignore:Detected call of")
@pytest.mark.parametrize("kwargs, words", [
    ({"restore": "none"}, "load them back|load the best"),
    ({"restore": "alias"}, "copy.deepcopy(model.state_dict())"),
    ({"stop": False}, "no early stop"),
    ({"stop_offset": -1}, "one epoch early"),
    ({"stop_offset": 1}, "one epoch late"),
    ({"sched_when": "batch"}, "after every batch"),
    ({"sched_when": "never"}, "never stepped"),
    ({"sched_when": "before"}, "before training"),
    ({"lr_after": True}, "read after scheduler.step()"),
    ({"prefix": "test_"}, "VALIDATION"),
    ({"best_index": True}, "numbered unlike the rows"),
    # issue 23: the stopping rule, on a validation curve that goes down, up, down
    ({"rule": "no_reset"}, "case 3 of 3|not reset when val_loss improves"),
    ({"rule": "previous"}, "case 3 of 3|better than the previous epoch"),
    ({"rule": "previous_keeps_best"}, "case 3 of 3|better than the previous epoch"),
])
def test_check_fit_names_the_bug(kwargs, words):
    with pytest.raises(AssertionError) as info:
        checks.check_fit(lambda *a, **k: fit(*a, **k, **kwargs))
    if "rule" in kwargs:                        # every phrase, each case named
        assert all(w in str(info.value) for w in words.split("|")), str(info.value)
    else:
        assert any(w in str(info.value) for w in words.split("|")), str(info.value)


# --------------------------------------------------------------------------------------------
# save_checkpoint / load_checkpoint
# --------------------------------------------------------------------------------------------

def save_checkpoint(path, model, optimizer, scheduler, epoch, *, whole=False, skip=()):
    state = {"model": model if whole else model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "rng_state": torch.get_rng_state()}
    torch.save({k: v for k, v in state.items() if k not in skip}, path)


def load_checkpoint(path, model, optimizer, scheduler, *, skip=(), offset=1):
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["model"])
    if "optimizer" not in skip:
        optimizer.load_state_dict(state["optimizer"])
    if "scheduler" not in skip:
        scheduler.load_state_dict(state["scheduler"])
    if "rng_state" not in skip:
        torch.set_rng_state(state["rng_state"])
    return state["epoch"] + offset


def test_check_checkpoint_passes_correct_code(capsys):
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    checks.check_checkpoint(save_checkpoint, load_checkpoint)
    assert "✓ check_checkpoint" in capsys.readouterr().out
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("skip, words", [
    ("optimizer", "optimizer.load_state_dict"),
    ("scheduler", "scheduler.load_state_dict"),
    ("rng_state", "torch.set_rng_state"),
])
def test_check_checkpoint_names_forgotten_state(skip, words):
    def load(path, model, optimizer, scheduler):
        return load_checkpoint(path, model, optimizer, scheduler, skip=(skip,))

    with pytest.raises(AssertionError, match="Likely bug") as info:
        checks.check_checkpoint(save_checkpoint, load)
    assert words in str(info.value)


@pytest.mark.parametrize("offset, words", [(0, "return the next one"), (2, "added twice")])
def test_check_checkpoint_names_an_epoch_off_by_one(offset, words):
    def load(path, model, optimizer, scheduler):
        return load_checkpoint(path, model, optimizer, scheduler, offset=offset)

    with pytest.raises(AssertionError, match=words):
        checks.check_checkpoint(save_checkpoint, load)


def test_check_checkpoint_names_pickled_objects():
    def save(path, model, optimizer, scheduler, epoch):
        save_checkpoint(path, model, optimizer, scheduler, epoch, whole=True)

    with pytest.raises(AssertionError, match="weights_only=True"):
        checks.check_checkpoint(save, load_checkpoint)


def test_check_fit_names_missing_globals():
    def fit_without_helpers(model, train_loader, val_loader, optimizer, loss_fn, epochs,
                            patience=2, scheduler=None, device="cpu"):
        return {"epochs": [train_one_epoch_not_defined()]}  # noqa: F821

    with pytest.raises(AssertionError, match="run the cells that define them"):
        checks.check_fit(fit_without_helpers)


def test_check_checkpoint_names_a_file_written_elsewhere(tmp_path):
    def save(path, model, optimizer, scheduler, epoch):
        save_checkpoint(tmp_path / "elsewhere.pt", model, optimizer, scheduler, epoch)

    with pytest.raises(AssertionError, match="no file at the path"):
        checks.check_checkpoint(save, load_checkpoint)
