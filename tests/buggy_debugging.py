"""Correct and deliberately buggy learner code for the checks of lesson 10 (debugging).

The correct versions are the solution notebook's, written again here; each buggy one is one
typical mistake, named after it. Keyword-only options switch the mistakes on.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from mnist_course import data

# --------------------------------------------------------------------------------------------
# loss_at_init
# --------------------------------------------------------------------------------------------


def loss_at_init(model, x, y, rel_tol=0.1, *, log=math.log, classes=None, one_sided=False,
                 fixed_tol=None, reduction="mean", softmax=False, train_mode=False,
                 as_tensor=False, backward=False):
    if not train_mode:
        model.eval()
    with torch.set_grad_enabled(backward):
        logits = model(x)
        if softmax:
            logits = F.softmax(logits, dim=1)
        loss_t = F.cross_entropy(logits, y, reduction=reduction)
    if backward:
        loss_t.backward()
    loss = loss_t.detach() if as_tensor else loss_t.item()
    expected = log(logits.shape[1] if classes is None else classes)
    tol = rel_tol if fixed_tol is None else fixed_tol
    gap = float(loss) - expected
    ok = gap <= tol * expected if one_sided else abs(gap) <= tol * expected
    return loss, expected, ok


def loss_at_init_restoring(model, x, y, rel_tol=0.1):
    """Also correct: restores the model's mode, and uses torch.inference_mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(x)
            loss = F.cross_entropy(logits, y).item()
    finally:
        model.train(was_training)
    expected = math.log(logits.shape[1])
    return loss, expected, bool(abs(loss - expected) <= rel_tol * expected)


def hard_coded_ln10(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, classes=10)


def log10_expected(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, log=math.log10)


def one_sided(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, one_sided=True)


def ignores_rel_tol(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, fixed_tol=0.1)


def summed_loss(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, reduction="sum")


def softmax_first(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, softmax=True)


def dropout_on(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, train_mode=True)


def tensor_loss(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, as_tensor=True)


def with_backward(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol, backward=True)


def returns_two(model, x, y, rel_tol=0.1):
    return loss_at_init(model, x, y, rel_tol)[:2]


# --------------------------------------------------------------------------------------------
# overfit_one_batch
# --------------------------------------------------------------------------------------------


def overfit_one_batch(model, x, y, steps, lr=1e-3, *, zero_grad=True, fresh_adam=False,
                      sgd=False, as_tensors=False, final_only=False, off_by_one=False,
                      on_copy=False, no_train=False):
    if on_copy:
        model = copy.deepcopy(model)
    if not no_train:
        model.train()

    def make():
        cls = torch.optim.SGD if sgd else torch.optim.Adam
        return cls(model.parameters(), lr=lr)

    optimizer = make()
    losses = []
    for _ in range(steps - 1 if off_by_one else steps):
        if fresh_adam:
            optimizer = make()
        loss = F.cross_entropy(model(x), y)
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach() if as_tensors else loss.item())
    return losses[-1] if final_only else losses


def overfit_one_batch_variant(model, x, y, steps, lr=1e-3):
    """Also correct: zero_grad(set_to_none=False) after the step, a while loop."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    optimizer.zero_grad()
    losses = []
    while len(losses) < steps:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        losses.append(float(loss.detach()))
    return losses


def no_zero_grad(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, zero_grad=False)


def adam_in_loop(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, fresh_adam=True)


def plain_sgd(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, sgd=True)


def loss_tensors(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, as_tensors=True)


def final_only(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, final_only=True)


def one_step_short(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, off_by_one=True)


def trains_a_copy(model, x, y, steps, lr=1e-3):
    return overfit_one_batch(model, x, y, steps, lr, on_copy=True)


def never_steps(model, x, y, steps, lr=1e-3):
    model.train()
    torch.optim.Adam(model.parameters(), lr=lr)
    return [F.cross_entropy(model(x), y).item() for _ in range(steps)]


# --------------------------------------------------------------------------------------------
# shuffled_batches
# --------------------------------------------------------------------------------------------


def shuffled_batches(x, y, batch_size, generator, *, separate=False, only_x=False,
                     no_shuffle=False, replacement=False, drop_last=False, global_rng=False,
                     reseed=False, in_place=False):
    n = len(x)
    if reseed:
        generator = torch.Generator().manual_seed(0)
    if no_shuffle:
        perm = torch.arange(n)
    elif replacement:
        perm = torch.randint(0, n, (n,), generator=generator)
    elif global_rng:
        perm = torch.randperm(n)
    else:
        perm = torch.randperm(n, generator=generator)
    if in_place:
        x[:] = x[perm]
        y[:] = y[perm]
        xs, ys = x, y
    else:
        xs = x[perm]
        ys = y if only_x else y[torch.randperm(n, generator=generator)] if separate else y[perm]
    stop = n - n % batch_size if drop_last else n
    return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, stop, batch_size)]


def shuffled_batches_generator(x, y, batch_size, generator):
    """Also correct: a generator of batches, the permutation split with torch.split."""
    perm = torch.randperm(len(x), generator=generator)
    for idx in torch.split(perm, batch_size):
        yield x[idx], y[idx]


def separate_permutations(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, separate=True)


def only_images_shuffled(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, only_x=True)


def not_shuffled(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, no_shuffle=True)


def with_replacement(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, replacement=True)


def last_batch_dropped(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, drop_last=True)


def global_generator(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, global_rng=True)


def reseeded(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, reseed=True)


def shuffled_in_place(x, y, batch_size, generator):
    return shuffled_batches(x, y, batch_size, generator, in_place=True)


# --------------------------------------------------------------------------------------------
# make_preprocess
# --------------------------------------------------------------------------------------------


def make_preprocess(train_images, *, how="train", channel=True, dtype=np.float32,
                    numpy_out=False):
    scaled = np.asarray(train_images, dtype=np.float64) / 255
    mean, std = scaled.mean(), scaled.std()

    def preprocess(images):
        x = np.asarray(images, dtype=np.float64) / 255
        if how == "train":
            x = (x - mean) / std
        elif how == "own":
            x = (x - x.mean()) / x.std()
        elif how == "per_image":
            x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
        elif how == "constants":
            x = (x - data.MEAN) / data.STD
        if channel:
            x = x[:, None]
        x = x.astype(dtype)
        return x if numpy_out else torch.from_numpy(x)

    return preprocess


def make_preprocess_torch(train_images):
    """Also correct: statistics in float32 torch, computed on the raw 0..255 values."""
    raw = torch.as_tensor(train_images).float()
    mean, std = raw.mean(), raw.std(unbiased=False)

    def preprocess(images):
        return ((torch.as_tensor(images).float() - mean) / std).unsqueeze(1)

    return preprocess


def own_statistics(train_images):
    return make_preprocess(train_images, how="own")


def per_image_statistics(train_images):
    return make_preprocess(train_images, how="per_image")


def mnist_constants(train_images):
    return make_preprocess(train_images, how="constants")


def only_scaled(train_images):
    return make_preprocess(train_images, how="scaled")


def no_channel_axis(train_images):
    return make_preprocess(train_images, channel=False)


def float64_output(train_images):
    return make_preprocess(train_images, dtype=np.float64)


def numpy_output(train_images):
    return make_preprocess(train_images, numpy_out=True)


def modifies_input(train_images):
    mean, std = train_images.mean() / 255, train_images.std() / 255

    def preprocess(images):
        images[images > 250] = 255               # an in-place "clean-up" of the caller's data
        return ((torch.from_numpy(images.astype(np.float32)) / 255 - mean) / std).unsqueeze(1)

    return preprocess


def returns_tensor_not_function(train_images):
    return make_preprocess(train_images)(train_images)


# --------------------------------------------------------------------------------------------
# count_shared
# --------------------------------------------------------------------------------------------


def count_shared(train_images, val_images):
    seen = {image.tobytes() for image in train_images}
    return sum(image.tobytes() in seen for image in val_images)


def count_shared_loops(train_images, val_images):
    """Also correct, and slow: compares every pair."""
    return sum(any(np.array_equal(v, t) for t in train_images) for v in val_images)


def distinct_shared(train_images, val_images):
    seen = {image.tobytes() for image in train_images}
    return len(seen & {image.tobytes() for image in val_images})


def counted_on_training_side(train_images, val_images):
    seen = {image.tobytes() for image in val_images}
    return sum(image.tobytes() in seen for image in train_images)


def near_copies(train_images, val_images):
    t = train_images.reshape(len(train_images), -1).astype(np.int64)
    return sum(bool(np.any(np.abs(t - v.reshape(-1)).max(axis=1) <= 1)) for v in val_images)


def by_pixel_sum(train_images, val_images):
    sums = {int(s) for s in train_images.reshape(len(train_images), -1).sum(axis=1)}
    return sum(int(v.sum()) in sums for v in val_images)


def as_fraction(train_images, val_images):
    return count_shared(train_images, val_images) / len(val_images)
