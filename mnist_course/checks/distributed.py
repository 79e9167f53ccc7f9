"""Checks of the data-parallel lesson: sharding a batch, averaging gradients, a rank's indices."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mnist_course.checks._core import _Check, _describe

# --------------------------------------------------------------------------------------------
# Exercise 1: shard_batch
# --------------------------------------------------------------------------------------------

_SHARD_SIG = "shard_batch(x, y, k) -> list of k (x_i, y_i) pairs"


def _shard_cases():
    rng = np.random.default_rng(0)
    x1 = np.arange(36, dtype=np.float64).reshape(12, 3)
    y1 = np.arange(12, dtype=np.int64) % 10
    x2 = rng.standard_normal((64, 1, 4, 4)).astype(np.float32)
    y2 = rng.integers(0, 10, 64)
    x3 = rng.standard_normal((8, 2))
    y3 = np.arange(8)
    return [("x (12, 3) float64, k=3", x1, y1, 3),
            ("x (64, 1, 4, 4) float32, k=4", x2, y2, 4),
            ("x (12, 3), k=1: one shard, the whole batch", x1, y1, 1),
            ("x (8, 2), k=8: one sample per shard", x3, y3, 8)]


def check_shard_batch(fn) -> None:
    """Check ``shard_batch(x, y, k)``: k equal, contiguous shards ``(x[i*m:(i+1)*m],
    y[i*m:(i+1)*m])`` with m = len(x) // k, in order, and ValueError when len(x) is not a
    multiple of k."""
    cases = _shard_cases()
    chk = _Check("check_shard_batch", len(cases) + 1)
    for i, (desc, x, y, k) in enumerate(cases, 1):
        chk.case(i, desc)
        x_before, y_before = x.copy(), y.copy()
        shards = chk.call(fn, x, y, k, signature=_SHARD_SIG)
        chk.unchanged(x_before, x, "shard_batch changed x in place: only slice it.")
        chk.unchanged(y_before, y, "shard_batch changed y in place: only slice it.")
        if not isinstance(shards, (list, tuple)):
            chk.fail(f"shard_batch should return a list of {k} (x_i, y_i) pairs; it returned "
                     f"{_describe(shards)}.")
        if len(shards) != k:
            chk.fail(f"shard_batch returned {len(shards)} shards; expected k = {k}.")
        m = len(x) // k
        got_x, got_y = [], []
        for j, shard in enumerate(shards):
            if not isinstance(shard, (list, tuple)) or len(shard) != 2:
                chk.fail(f"shard {j} should be a pair (x_{j}, y_{j}); it is {_describe(shard)}.")
            got_x.append(np.asarray(shard[0]))
            got_y.append(np.asarray(shard[1]))
        sizes = [len(s) if s.ndim else 1 for s in got_x]
        if len(set(sizes)) != 1 or sizes[0] != m:
            chk.fail(f"shard sizes {sizes}; expected {k} shards of {m} samples each "
                     f"(len(x) = {len(x)}).",
                     "Likely bug: shards of unequal size: shard i is x[i*m:(i+1)*m] with "
                     "m = len(x) // k (an off-by-one in the slice bounds?). Equal shards are "
                     "what makes the average of the shard means the mean of the batch.")
        for j in range(k):
            if got_x[j].shape != x[j * m:(j + 1) * m].shape:
                chk.fail(f"x_{j} has shape {got_x[j].shape}; expected {x[:m].shape}.")
        if 1 < k < len(x) and all(np.array_equal(got_x[j], x[j::k]) for j in range(k)):
            chk.fail("the shards are interleaved (x[i::k]): every k-th sample instead of "
                     "contiguous blocks.",
                     "Fix: shard i is the block x[i*m:(i+1)*m], m = len(x) // k, so the shards "
                     "concatenated in order give the batch back.")
        for j in range(k):
            if not np.array_equal(got_x[j], x[j * m:(j + 1) * m]):
                order = [next((t for t in range(k) if np.array_equal(got_x[j],
                                                                      x[t * m:(t + 1) * m])),
                              None) for j in range(k)]
                hint = None
                if None not in order:
                    hint = (f"the shards are the right blocks in the wrong order {order}: "
                            f"return them in order, shard 0 first.")
                chk.fail(f"x_{j} is not x[{j * m}:{(j + 1) * m}], the {j}-th contiguous block.",
                         f"Likely bug: {hint}" if hint else None)
            if not np.array_equal(got_y[j], y[j * m:(j + 1) * m]):
                chk.fail(f"y_{j} is not y[{j * m}:{(j + 1) * m}]: each shard's labels must be "
                         f"those of its own images (slice y exactly like x).")
    chk.case(len(cases) + 1, "x (10, 3), k=4: 10 images cannot be split into 4 equal shards")
    x, y = np.zeros((10, 3)), np.arange(10)
    try:
        result = fn(x, y, 4)
    except ValueError:
        pass
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 (the wrong kind of error, reported)
        chk.fail(f"shard_batch raised {type(exc).__name__}: {exc}",
                 "Fix: raise ValueError (the argument has the wrong value), with a message "
                 "that says len(x) must be a multiple of k.")
    else:
        sizes = ""
        if isinstance(result, (list, tuple)):
            try:
                sizes = f" (shard sizes {[len(s[0]) for s in result]})"
            except (TypeError, IndexError, KeyError):  # not pairs: sizes unknown
                sizes = ""
        chk.fail(f"shard_batch returned instead of raising{sizes}.",
                 "Fix: not raising: check len(x) % k and raise ValueError. Unequal shards would "
                 "make the averaged gradient differ from the gradient of the whole batch.")
    chk.passed(show_error=False)


# --------------------------------------------------------------------------------------------
# Exercise 2: average_gradients
# --------------------------------------------------------------------------------------------

_AVG_SIG = "average_gradients(grads_list) -> dict"


def _grad_cases():
    rng = np.random.default_rng(1)
    shapes = {"conv1_w": (4, 1, 3, 3), "conv1_b": (4,), "fc_w": (5, 5), "fc_b": (5,)}
    four = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(4)]
    two = [{"w": rng.standard_normal((3, 2)).astype(np.float32),
            "b": rng.standard_normal(2).astype(np.float32)} for _ in range(2)]
    one = [{"w": rng.standard_normal((2, 3)), "b": rng.standard_normal(3)}]
    three = [{"w": rng.standard_normal((3, 3))} for _ in range(3)]
    return [("4 workers, CNN-like keys, float64", four),
            ("2 workers, float32", two),
            ("1 worker: the average is its own gradient", one),
            ("3 workers, one square (3, 3) gradient", three)]


def check_average_gradients(fn) -> None:
    """Check ``average_gradients(grads_list)``: a new dict with, for every key, the elementwise
    mean of the K workers' arrays (what an all-reduce sum followed by a division by K gives).
    The input dicts are left unchanged."""
    cases = _grad_cases()
    chk = _Check("check_average_gradients", len(cases))
    for i, (desc, grads) in enumerate(cases, 1):
        chk.case(i, desc)
        k = len(grads)
        before = [{name: g.copy() for name, g in d.items()} for d in grads]
        result = chk.call(fn, grads, signature=_AVG_SIG)
        for j, (old, new) in enumerate(zip(before, grads)):
            for name in old:
                chk.unchanged(old[name], new[name],
                              f"grads_list[{j}]['{name}'] was changed in place (accumulating "
                              f"into the first worker's arrays?): build new arrays, e.g. "
                              f"np.mean(np.stack([...]), axis=0).")
        if not isinstance(result, dict):
            chk.fail(f"average_gradients should return a dict name -> array; it returned "
                     f"{_describe(result)}.")
        if set(result) != set(before[0]):
            chk.fail(f"the keys are {sorted(result)}; expected {sorted(before[0])}, one "
                     f"averaged gradient per parameter name.")
        for name in before[0]:
            stacked = np.stack([d[name] for d in before])          # (K, *shape)
            ref = stacked.mean(axis=0)
            got = np.asarray(result[name])
            if got.shape != ref.shape:
                hint = ("averaged over the wrong axis: stack the K gradients on a new axis 0 "
                        "(np.stack(..., axis=0)) and take the mean over axis 0 only, the "
                        "workers.")
                if got.size == 1:
                    hint = ("averaged over every element: a single number. Average over the K "
                            "workers only (axis 0 of the stacked gradients).")
                chk.fail(f"'{name}' has shape {tuple(got.shape)}; expected {ref.shape}, the "
                         f"shape of one worker's gradient.", f"Likely bug: {hint}")
            if got.dtype.kind != "f":
                chk.fail(f"'{name}' has dtype {got.dtype}; expected floating point numbers.")
            wrong_axes = [(stacked.mean(axis=a), (f"averaged over the wrong axis ({a}) of the "
                           f"stacked gradients, not over the {k} workers: the mean must run over "
                           f"axis 0 of np.stack(...), element by element."))
                          for a in range(1, stacked.ndim) if k > 1
                          and stacked.mean(axis=a).shape == ref.shape]
            chk.compare(f"'{name}'", got, ref, alternatives=[
                (stacked.sum(axis=0), (f"the sum of the {k} gradients, not their mean: divide "
                                       f"by K = {k} (the all-reduce sums; DDP then divides by "
                                       f"the world size).")),
                *([(stacked.sum(axis=0) / (k - 1), (f"divided by K - 1 = {k - 1}: divide by the "
                   f"number of workers, K = {k}."))] if k > 2 else []),
                *wrong_axes,
                (before[0][name], "only the first worker's gradient: average all K."),
                (before[-1][name], "only the last worker's gradient: average all K."),
            ])
    chk.passed()


# --------------------------------------------------------------------------------------------
# Exercise 3: rank_indices
# --------------------------------------------------------------------------------------------

_RANK_SIG = "rank_indices(n, rank, world, seed=0, epoch=0) -> list[int]"


def _torch_order(n: int, seed: int, epoch: int) -> list[int]:
    import torch
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def _padded(order: list[int], world: int) -> list[int]:
    total = -(-len(order) // world) * world
    out = list(order)
    while len(out) < total:
        out += order[:total - len(out)]
    return out


_PAD_HOW = ("DistributedSampler pads the SHUFFLED order with its own first elements, "
            "indices += indices[:total_size - n], total_size = ceil(n / world) * world")


def _padding_mistakes(order: list[int], n: int, world: int) -> list:
    """(extra indices appended to the shuffled order, hint) for the usual ways of padding it
    wrongly; the hint names the padding that was used."""
    k = -n % world
    mistakes = []
    if k:
        mistakes += [
            ([order[-1]] * k, f"the padding repeats the last index {k} times: {_PAD_HOW}."),
            ([order[0]] * k, (f"the padding repeats the first index {k} times instead of the "
                              f"first {k} indices: {_PAD_HOW}.")),
            (order[-k:], f"the padding is taken from the end of the order: {_PAD_HOW}."),
            (list(range(k)), (f"the padding is the unshuffled indices 0..{k - 1} (range "
                              f"instead of the shuffled order): {_PAD_HOW}.")),
            ([0] * k, f"the padding is index 0 repeated: {_PAD_HOW}."),
        ]
        if n % world and n % world != k:
            mistakes.append((order[:n % world], (
                f"the padding has n % world = {n % world} indices; it needs total_size - n = "
                f"{k}, up to the next multiple of world ({n + k}): {_PAD_HOW}.")))
    else:
        mistakes.append((order[:world], (
            f"padded by a whole extra round although n = {n} is a multiple of world = {world}: "
            f"pad (-n) % world = total_size - n indices, 0 here; {_PAD_HOW}.")))
    return mistakes


def _reference(n, rank, world, seed, epoch) -> list[int]:
    """The oracle: torch's own DistributedSampler."""
    from torch.utils.data import DistributedSampler
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed)
    sampler.set_epoch(epoch)
    return [int(i) for i in sampler]


def _as_index_list(chk, value, rank) -> list[int]:
    if value is None:
        chk.fail(f"rank {rank}: rank_indices returned None: a missing `return`?")
    if hasattr(value, "tolist"):
        value = value.tolist()
    try:
        items = list(value)
    except TypeError:
        chk.fail(f"rank {rank}: rank_indices should return a list of ints; it returned "
                 f"{_describe(value)}.")
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            chk.fail(f"rank {rank}: the indices should be ints; found {v!r} "
                     f"({type(v).__name__}).")
        out.append(int(v))
    return out


def check_rank_indices(fn) -> None:
    """Check ``rank_indices(n, rank, world, seed=0, epoch=0)`` against torch's
    ``DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)``
    after ``set_epoch(epoch)``, for every rank of several (n, world, seed, epoch), and name the
    typical mistakes: dropped data, extra duplicates, one shard for all ranks, the epoch
    ignored, an off-by-one in the rank slicing."""
    cases = [(10, 2, 0, 0), (10, 3, 0, 1), (7, 4, 5, 2), (2, 5, 1, 0), (12, 1, 0, 3),
             (50, 4, 2, 7)]
    chk = _Check("check_rank_indices", len(cases) + 1)
    for i, (n, world, seed, epoch) in enumerate(cases, 1):
        chk.case(i, f"n={n}, world={world}, seed={seed}, epoch={epoch}")
        got = [_as_index_list(chk, chk.call(fn, n, r, world, seed=seed, epoch=epoch,
                                            signature=_RANK_SIG), r) for r in range(world)]
        ref = [_reference(n, r, world, seed, epoch) for r in range(world)]
        if got == ref:
            continue
        order = _torch_order(n, seed, epoch)
        padded = _padded(order, world)
        m = len(padded) // world
        shown = [f"  rank {r}: got {got[r]}, expected {ref[r]}" for r in range(min(world, 4))
                 if len(ref[r]) <= 16]
        # specific mistakes first: the whole set of ranks equals a known wrong rule
        known = [
            ([order[r::world] for r in range(world)],
             ("no padding: the ranks get unequal numbers of indices, so they would take "
             "different numbers of steps and the all-reduce would wait forever. Pad the "
             "shuffled order by repeating it from the start up to a multiple of world.")),
            ([order[:n - n % world][r::world] for r in range(world)],
             (f"the last n % world = {n % world} shuffled indices are dropped: DistributedSampler "
             f"(drop_last=False) pads instead, repeating the order from its start.")),
            ([padded[r + 1::world] for r in range(world)],
             ("off by one in the rank slicing: rank r starts at position r, "
             "indices[rank::world] (ranks count from 0).")),
            ([padded[r - 1::world] if r else padded[-1::world] for r in range(world)],
             ("off by one in the rank slicing (ranks counted from 1?): rank r starts at "
             "position r, indices[rank::world].")),
            ([padded[r * m:(r + 1) * m] for r in range(world)],
             ("each rank takes a contiguous block: DistributedSampler deals the padded order "
             "out, indices[rank::world].")),
            ([_padded(list(range(n)), world)[r::world] for r in range(world)],
             ("not shuffled: shuffle with torch.randperm(n, generator=torch.Generator()"
             ".manual_seed(seed + epoch)).")),
        ]
        known += [([(order + extra)[r::world] for r in range(world)], text)
                  for extra, text in _padding_mistakes(order, n, world)]
        if len(padded) > n:
            known.append(([(order[:len(padded) - n] + order)[r::world] for r in range(world)],
                          (f"the padding is put in front of the order: append it at the end; "
                           f"{_PAD_HOW}.")))
        if epoch:
            known.append(([_reference(n, r, world, seed, 0) for r in range(world)],
                          ("the epoch is ignored: every epoch would read the same order. Seed "
                          "the generator with seed + epoch.")))
        if seed:
            known.append(([_reference(n, r, world, 0, epoch) for r in range(world)],
                          "the seed is ignored: seed the generator with seed + epoch."))
        for wrong, text in known:
            if got == wrong and wrong != ref:
                chk.fail(f"Likely bug: {text}", *shown)
        # then the properties every correct sampler has
        if world > 1 and all(g == got[0] for g in got):
            chk.fail("every rank gets the same indices: the ranks would all compute the same "
                     "shard, so the data is not split at all.",
                     "Fix: use rank: rank r takes indices[rank::world] of the padded order.",
                     *shown)
        missing = sorted(set(range(n)) - {v for g in got for v in g})
        if missing:
            chk.fail(f"drops data: together the ranks never read the indices {missing} this "
                     f"epoch.", "Fix: pad the shuffled order (repeat it from the start) to a "
                     "multiple of world, then slice indices[rank::world].", *shown)
        counts, allowed = Counter(v for g in got for v in g), Counter(padded)
        extra = sorted(v for v in counts if counts[v] > allowed[v])
        if extra or any(not 0 <= v < n for v in counts):
            chk.fail(f"duplicates beyond the padding: {sum(len(g) for g in got)} indices in all "
                     f"for n = {n} and world = {world}, where {len(padded)} (the next multiple "
                     f"of world) is enough; repeated too often: {extra[:10]}.",
                     "Fix: pad only total_size - n = "
                     f"{len(padded) - n} indices (0 when n % world == 0).", *shown)
        lengths = [len(g) for g in got]
        if len(set(lengths)) != 1:
            chk.fail(f"the ranks get {lengths} indices; each should get ceil(n / world) = {m}.",
                     *shown)
        chk.fail("the indices are not those of DistributedSampler: shuffle with "
                 "torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)), pad "
                 "by repeating from the start, then take indices[rank::world].", *shown)
    chk.case(len(cases) + 1, "n=20, world=2, seed=0: epochs 0 and 1")
    first = _as_index_list(chk, chk.call(fn, 20, 0, 2, seed=0, epoch=0, signature=_RANK_SIG), 0)
    second = _as_index_list(chk, chk.call(fn, 20, 0, 2, seed=0, epoch=1, signature=_RANK_SIG), 0)
    if first == second:
        chk.fail("the epoch is ignored: the same order every epoch. Seed the generator with "
                 "seed + epoch.")
    chk.passed(len(cases) + 1, show_error=False)
