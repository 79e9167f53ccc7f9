"""Checks of lesson 00: one-hot labels and the validation split."""

from __future__ import annotations

import numpy as np

from mnist_course.checks._core import _Check, _describe, _fmt_shape, _rng

# --------------------------------------------------------------------------------------------
# Data helpers (lesson 00) and experiments (lesson 06)
# --------------------------------------------------------------------------------------------

def check_one_hot(fn) -> None:
    """Check ``one_hot(y, num_classes=10) -> float32 array (N, num_classes)``."""
    cases = [
        (np.array([3, 0, 9, 1, 1, 7], dtype=np.int64), None),
        (np.array([2, 0, 3], dtype=np.int64), 4),
        (np.arange(10, dtype=np.int64)[::-1].copy(), 10),
    ]
    chk = _Check("check_one_hot", len(cases))
    for i, (y, k) in enumerate(cases, 1):
        kk = 10 if k is None else k
        chk.case(i, f"y {y.tolist()}, " + ("default num_classes" if k is None
                                            else f"num_classes={k}"))
        before = y.copy()
        kwargs = {} if k is None else {"num_classes": k}
        out = chk.call(fn, y, signature="one_hot(y, num_classes=10) -> float32 array", **kwargs)
        chk.unchanged(before, y, "one_hot changed y in place.")
        if not isinstance(out, np.ndarray):
            chk.fail(f"one_hot should return a NumPy array; it returned {_describe(out)}.")
        n = len(y)
        if out.shape != (n, kk):
            hint = None
            if out.shape == (kk, n):
                hint = "the result is transposed: one row per label, one column per class."
            elif out.ndim == 2 and out.shape[0] == n:
                hint = "use num_classes for the number of columns."
            chk.fail(f"shape {_fmt_shape(out.shape)}; expected (N, num_classes) = "
                     f"{_fmt_shape((n, kk))}.", f"Likely bug: {hint}" if hint else None)
        if out.dtype != np.float32:
            chk.fail(f"dtype {out.dtype}; expected float32, the dtype the network computes in.",
                     "Likely bug: create it with np.zeros((N, num_classes), dtype=np.float32).")
        ref = np.eye(kk, dtype=np.float32)[y]
        if not np.array_equal(out, ref):
            hint = None
            for shift in (-1, 1):
                if np.array_equal(out, np.eye(kk, dtype=np.float32)[(y + shift) % kk]):
                    hint = f"the 1 is in column y{shift:+d}: put it in column y exactly."
            bad = [int(r) for r in np.nonzero(np.any(out != ref, axis=1))[0]]
            chk.fail(f"wrong values in rows {bad[:5]}: row i must be all 0 except a 1 in "
                     f"column y[i]; row {bad[0]} is {out[bad[0]].tolist()} for "
                     f"y = {int(y[bad[0]])}.", f"Likely bug: {hint}" if hint else None)
    chk.passed(show_error=False)


def check_train_val_split(fn) -> None:
    """Check ``split(x, y, n_val=5000, seed=0) -> (x_tr, y_tr, x_val, y_val)`` on a small
    synthetic set: sizes, disjoint, complete, aligned, reproducible, input untouched."""
    n, n_val = 40, 12
    rng = _rng(9)
    x = rng.integers(0, 256, size=(n, 3, 3)).astype(np.uint8)
    x[:, 0, 0] = np.arange(n)                  # the first pixel identifies the image
    y = rng.integers(0, 10, size=n).astype(np.int64)
    x_before, y_before = x.copy(), y.copy()
    chk = _Check("check_train_val_split", 3)
    sig = "split(x, y, n_val=5000, seed=0) -> (x_tr, y_tr, x_val, y_val)"
    names = ("x_tr", "y_tr", "x_val", "y_val")

    def run(seed):
        res = chk.call(fn, x, y, n_val=n_val, seed=seed, signature=sig)
        parts = [np.asarray(a) for a in chk.unpack(res, names, "the split function")]
        chk.unchanged(x_before, x, "the input x was modified in place (np.random.shuffle "
                                   "shuffles its argument): index with a permutation instead, "
                                   "x[perm].")
        chk.unchanged(y_before, y, "the input y was modified in place (np.random.shuffle "
                                   "shuffles its argument): index with a permutation instead, "
                                   "y[perm].")
        return parts

    chk.case(1, f"x {_fmt_shape(x.shape)} uint8, y ({n},), n_val={n_val}, seed=0")
    x_tr, y_tr, x_val, y_val = run(0)
    sizes = {"x_tr": (len(x_tr), n - n_val), "y_tr": (len(y_tr), n - n_val),
             "x_val": (len(x_val), n_val), "y_val": (len(y_val), n_val)}
    for name, (got, want) in sizes.items():
        if got != want:
            chk.fail(f"{name} has {got} items; expected {want} (n_val={n_val} of {n} go to "
                     f"validation, the rest to training).")
    for name, part in (("x_tr", x_tr), ("x_val", x_val)):
        if part.shape[1:] != x.shape[1:] or part.dtype != x.dtype:
            chk.fail(f"{name} has shape {part.shape} and dtype {part.dtype}; each image should "
                     f"keep its shape {x.shape[1:]} and dtype {x.dtype}.")
    for name, part in (("y_tr", y_tr), ("y_val", y_val)):
        if part.dtype != y.dtype:
            chk.fail(f"{name} has dtype {part.dtype}; expected the dtype of y, {y.dtype}.")
    ids_tr, ids_val = x_tr[:, 0, 0].astype(int), x_val[:, 0, 0].astype(int)
    both = sorted(set(ids_tr.tolist()) & set(ids_val.tolist()))
    if both:
        chk.fail(f"{len(both)} images are in both the training and the validation part: "
                 f"the parts must be disjoint (split one permutation in two).")
    if sorted(ids_tr.tolist() + ids_val.tolist()) != list(range(n)):
        chk.fail("some images are missing or repeated: together the parts must hold every "
                 "image once.")
    misaligned = int(np.sum(y_tr != y[ids_tr]) + np.sum(y_val != y[ids_val]))
    if misaligned:
        chk.fail(f"{misaligned} labels no longer belong to their images: index x and y with the "
                 f"same permutation (x[perm], y[perm]).")
    if np.array_equal(np.sort(ids_val), np.arange(n - n_val, n)) \
            or np.array_equal(np.sort(ids_val), np.arange(n_val)):
        chk.fail("the validation part is simply the first or last n_val images: shuffle with "
                 "a seeded permutation first, so that it is a random sample.")
    chk.case(2, f"calling again with seed=0 (n_val={n_val})")
    again = run(0)
    if not all(np.array_equal(a, b) for a, b in zip(again, (x_tr, y_tr, x_val, y_val))):
        chk.fail("the same seed gave a different split: draw the permutation from "
                 "np.random.default_rng(seed), not from the global random state.")
    chk.case(3, f"seed=1 instead of seed=0 (n_val={n_val})")
    other = run(1)
    if np.array_equal(other[2], x_val):
        chk.fail("seed=1 gave the same split as seed=0: the seed is ignored; use "
                 "np.random.default_rng(seed).")
    chk.passed(show_error=False)
