"""Checks of the experiments lesson: the spread over seeds, step decay and random shifts."""

from __future__ import annotations

import numpy as np

from mnist_course import _oracle
from mnist_course.checks._core import _Check, _describe


def check_mean_std(fn) -> None:
    """Check ``mean_std(values) -> (mean, std)``: the mean and the sample standard deviation
    (ddof=1) of one setting's results, one number per seed, given as a list, a tuple or a 1-D
    NumPy array. Both are returned as plain numbers and the input is left as it was."""
    cases = [("a list of three accuracies", [0.9070, 0.9220, 0.9185]),
             ("a NumPy array of five losses", np.array([0.31, 0.27, 0.35, 0.29, 0.30])),
             ("a tuple of two values", (0.5, 0.75)),
             ("three equal values", [0.98, 0.98, 0.98])]
    chk = _Check("check_mean_std", len(cases))
    for i, (desc, values) in enumerate(cases, 1):
        chk.case(i, f"{desc}: {np.asarray(values, dtype=float).tolist()}")
        before = np.array(values, dtype=float)
        result = chk.call(fn, values, signature="mean_std(values) -> (mean, std)")
        mean, std = chk.unpack(result, ("mean", "std"), "mean_std")
        chk.unchanged(before, np.asarray(values, dtype=float),
                      "mean_std changed its input (sorted it in place?): leave values as they are.")
        v = before
        n = len(v)
        mean = chk.scalar(mean, "mean")
        std = chk.scalar(std, "std")
        if n > 1 and np.isclose(float(mean), v.std(ddof=1)) and np.isclose(float(std), v.mean()):
            chk.fail("mean and std are swapped: return (mean, std), in that order.")
        chk.compare("mean", mean, np.float64(v.mean()))
        chk.compare("std", std, np.float64(v.std(ddof=1)), alternatives=[
            (v.std(ddof=0), (f"the population standard deviation (ddof=0, np.std's default), "
                             f"which divides by n = {n}: from a few seeds it underestimates the "
                             f"spread (by a factor {np.sqrt((n - 1) / n):.2f} here). Use the "
                             f"sample standard deviation, np.std(values, ddof=1).")),
            (v.var(ddof=1), "the variance: take its square root (np.std(values, ddof=1))."),
            (v.var(ddof=0), "the population variance: take the square root, with ddof=1."),
            (np.abs(v - v.mean()).mean(), ("the mean absolute deviation: use the standard "
                                           "deviation, np.std(values, ddof=1).")),
        ], fallback_hint="the sample standard deviation is sqrt(sum((v - mean)**2) / (n - 1)).")
    chk.passed()


def check_step_decay(fn) -> None:
    """Check ``step_decay(epoch, base_lr=0.01, drop=0.5, epochs_per_drop=2) -> float``,
    epoch 0-based: base_lr * drop ** (epoch // epochs_per_drop)."""
    settings = [{}, {"base_lr": 0.1, "drop": 0.1, "epochs_per_drop": 3},
                {"base_lr": 1e-3, "drop": 0.5, "epochs_per_drop": 1}]
    epochs = np.arange(10)
    chk = _Check("check_step_decay", len(settings))
    for i, kw in enumerate(settings, 1):
        full = {"base_lr": 0.01, "drop": 0.5, "epochs_per_drop": 2, **kw}
        base, drop, k = full["base_lr"], full["drop"], full["epochs_per_drop"]
        chk.case(i, "epochs 0-9, " + (", ".join(f"{a}={v}" for a, v in kw.items()) if kw
                                      else "default arguments"))
        got = []
        for e in epochs:
            value = chk.call(fn, int(e), signature="step_decay(epoch, base_lr=0.01, drop=0.5, "
                                                   "epochs_per_drop=2) -> float", **kw)
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                    value, (int, float, np.integer, np.floating)):
                chk.fail(f"step_decay({int(e)}) returned {_describe(value)}; expected a float.")
            got.append(float(value))
        got = np.array(got)
        ref = base * drop ** (epochs // k)
        alternatives = [
            (base * drop ** ((epochs + 1) // k), (f"off by one epoch: the first drop comes at "
             f"epoch {k - 1} instead of {k}. Epochs are 0-based: epochs 0..{k - 1} use base_lr.")),
            (base * drop ** (epochs // k + 1), ("off by one epoch: already decayed at epoch 0; "
             "epoch 0 must use base_lr.")),
            (base * drop ** (np.maximum(epochs - 1, 0) // k), (f"off by one epoch: the first "
             f"drop comes at epoch {k + 1} instead of {k} (epochs are 0-based).")),
            (base * drop ** epochs, ("it decays every epoch: drop once per epochs_per_drop "
             "epochs, with integer division epoch // epochs_per_drop.")),
            (base * drop ** (epochs / k), ("it decays smoothly: use integer division, "
             "epoch // epochs_per_drop, so the rate stays constant between drops.")),
        ]
        if not kw:
            alternatives.append((ref * 0 + 0.01, "the rate never drops."))
        try:
            chk.compare("learning rates", got, ref, alternatives=alternatives)
        except AssertionError as exc:
            table = ", ".join(f"{g:.4g}" for g in got)
            want = ", ".join(f"{r:.4g}" for r in ref)
            raise AssertionError(f"{exc}\n  got      [{table}]\n  expected [{want}]") from None
    chk.passed()


def _shifted(x, dy: int, dx: int, fill: float):
    """x (N, C, H, W) moved down by dy and right by dx, vacated pixels set to fill."""
    import torch
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _note_direction(shifts, max_shift: int, generator, note) -> None:
    """Compare the shifts found with the draws the exercise asks for (dy, then dx, each
    torch.randint(-max_shift, max_shift + 1, (N,), generator=generator)). Other draw orders
    are accepted: only a shift that is exactly the reverse or the transpose of those draws is
    reported, because then the sign or the axis convention is what went wrong."""
    import torch
    n = len(shifts)
    dy = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).tolist()
    dx = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).tolist()
    if shifts == list(zip(dy, dx)):
        return
    if shifts == [(-a, -b) for a, b in zip(dy, dx)]:
        note("every image moved the opposite way (up by dy, left by dx): an image moved dy "
             "down shows at its row r what the original had at row r - dy (padded row "
             "r + max_shift - dy), not r + dy.")
    elif shifts == list(zip(dx, dy)):
        note("the rows moved by the second draw and the columns by the first: either dx was "
             "drawn before dy (draw dy first, then dx, each torch.randint(-max_shift, "
             "max_shift + 1, (N,), generator=generator), so that a seed gives the expected "
             "shifts), or dy moved the images sideways and dx up and down (dy is the row shift, "
             "dim -2; dx the column shift, dim -1).")
    elif shifts == [(-b, -a) for a, b in zip(dy, dx)]:
        note("the shifts are reversed, and rows and columns exchanged: an image moved dy down "
             "shows at row r what the original had at row r - dy; and either dx was drawn "
             "before dy (draw dy first, then dx) or dy moved columns instead of rows.")


@_oracle._single_thread
def _identify_shifts(x, out, max_shift: int):
    """Per image: the (dy, dx) that explains out (or None), and whether a wrap-around or a
    zero fill explains it instead."""
    import torch
    fill = float(x.min())
    n = x.shape[0]
    found = [None] * n
    wrapped = torch.zeros(n, dtype=torch.bool)
    zero_fill = torch.zeros(n, dtype=torch.bool)
    reach = max_shift + 2
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            same = (_shifted(x, dy, dx, fill) == out).flatten(1).all(dim=1)
            for j in torch.nonzero(same).flatten().tolist():
                if found[j] is None:
                    found[j] = (dy, dx)
            if (dy, dx) != (0, 0):
                wrapped |= (torch.roll(x, (dy, dx), dims=(-2, -1)) == out).flatten(1).all(dim=1)
                zero_fill |= (_shifted(x, dy, dx, 0.0) == out).flatten(1).all(dim=1)
    return found, wrapped, zero_fill


def check_random_shift(fn) -> None:
    """Check ``random_shift(x, y, max_shift=2, generator=None) -> (x_shifted, y)`` on torch
    tensors: integer shifts of at most max_shift, background fill, labels unchanged, varied and
    reproducible shifts. Reports every property that fails."""
    import torch
    sig = "random_shift(x, y, max_shift=2, generator=None) -> (x_shifted, y)"
    g = torch.Generator().manual_seed(0)
    background = -0.4242
    x = torch.rand((64, 1, 10, 10), generator=g, dtype=torch.float32)
    x[torch.arange(64), 0, 4, 5] = background      # every image has the same minimum
    y = torch.randint(0, 10, (64,), generator=g, dtype=torch.int64)
    x2 = torch.rand((8, 2, 9, 7), generator=g, dtype=torch.float32)
    x2[:, :, 3, 3] = background
    y2 = torch.randint(0, 10, (8,), generator=g, dtype=torch.int64)
    chk = _Check("check_random_shift", 4)
    problems: dict[str, list[int]] = {}         # problem -> the cases that show it
    descriptions: dict[int, str] = {}

    def note(text: str) -> None:
        problems.setdefault(text, []).append(chk.index)
        descriptions[chk.index] = chk.desc

    def run(xs, ys, **kw):
        xb, yb = xs.clone(), ys.clone()
        res = chk.call(fn, xs, ys, signature=sig, **kw)
        xo, yo = chk.unpack(res, ("x_shifted", "y"), "random_shift")
        if not torch.equal(xb, xs) or not torch.equal(yb, ys):
            note("the input was modified in place: build a new tensor.")
        if not isinstance(xo, torch.Tensor) or not isinstance(yo, torch.Tensor):
            chk.fail(f"random_shift should return two torch tensors; got {_describe(xo)} and "
                     f"{_describe(yo)}.")
        if xo.shape != xs.shape or xo.dtype != xs.dtype:
            note(f"x_shifted has shape {tuple(xo.shape)} and dtype {xo.dtype}; expected those "
                 f"of x, {tuple(xs.shape)} and {xs.dtype}.")
        if yo.dtype != ys.dtype or not torch.equal(yo, ys):
            note("the labels changed: return y as it is (shifting an image does not change its "
                 "digit).")
        return xo

    def shifts_of(xs, xo, max_shift):
        """The shift of every image, or None when some image is not a plain shift."""
        if xo.shape != xs.shape:
            return None
        found, wrapped, zero_fill = _identify_shifts(xs, xo.to(xs.dtype), max_shift)
        bad = [j for j, s in enumerate(found) if s is None]
        if bad:
            if bool(wrapped[bad].all()):
                note("pixels wrap around to the other side (torch.roll?): fill the pixels "
                     "shifted in with the background, x.min(), instead.")
            elif bool(zero_fill[bad].all()):
                note("pixels shifted in are 0: fill them with the background, x.min() (for "
                     "normalised MNIST that is about -0.42, not 0).")
            else:
                note(f"{len(bad)} of {len(found)} images are not their input moved by whole "
                     f"pixels with the background (x.min()) filled in.")
        too_far = [s for s in found if s is not None and max(abs(s[0]), abs(s[1])) > max_shift]
        if too_far:
            note(f"shifts up to {max(max(abs(a), abs(b)) for a, b in too_far)} pixels with "
                 f"max_shift={max_shift}: keep |dy|, |dx| <= max_shift.")
        return None if bad else found

    chk.case(1, "x (64, 1, 10, 10) float32, max_shift=2, seeded generator")
    out = run(x, y, max_shift=2, generator=torch.Generator().manual_seed(1))
    shifts = shifts_of(x, out, 2)
    if shifts:
        reached = {v for s in shifts for v in s}
        if len(set(shifts)) == 1:
            note(f"every image got the same shift {shifts[0]}: draw one (dy, dx) per image.")
        elif all(a == b for a, b in shifts) or all(a == -b for a, b in shifts):
            note("every image moved along a diagonal (dy == dx, or dy == -dx, for all 64): one "
                 "draw was used for both directions. Draw dy and dx separately, dy first, "
                 "then dx, each torch.randint(-max_shift, max_shift + 1, (N,), "
                 "generator=generator).")
        elif -2 not in reached or 2 not in reached:
            note("no image moved the full max_shift=2 pixels in one of the two directions: "
                 "torch.randint's upper bound is exclusive, so use "
                 "torch.randint(-max_shift, max_shift + 1, ...).")
        else:
            _note_direction(shifts, 2, torch.Generator().manual_seed(1), note)
    chk.case(2, "the same input and an identically seeded generator")
    again = run(x, y, max_shift=2, generator=torch.Generator().manual_seed(1))
    if again.shape == out.shape and not torch.equal(out, again):
        note("the same seeded generator gave different shifts: draw them with "
             "torch.randint(..., generator=generator).")
    chk.case(3, "x (8, 2, 9, 7) float32, max_shift=1, seeded generator")
    shifts_of(x2, run(x2, y2, max_shift=1, generator=torch.Generator().manual_seed(2)), 1)
    chk.case(4, "x (64, 1, 10, 10), generator=None")
    shifts_of(x, run(x, y), 2)
    if problems:
        lines = []
        for text, where in problems.items():
            label = "case" if len(where) == 1 else "cases"
            lines.append(f"- {text} ({label} {', '.join(map(str, dict.fromkeys(where)))})")
        lines += [f"case {i}: {d}" for i, d in sorted(descriptions.items())]
        chk.case(0, "")
        chk.fail(*lines)
    chk.passed(show_error=False)
