"""The machinery every check shares: calling the learner's code, comparing arrays, naming bugs."""

from __future__ import annotations

import warnings

import numpy as np

from mnist_course.gradcheck import rel_error

TOL_FLOAT64 = 1e-7
TOL_FLOAT32 = 1e-3


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------

def _describe(value) -> str:
    """A short description of what a function returned, for error messages."""
    if value is None:
        return "None (a missing `return`?)"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} values"
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return f"a torch.Tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _rel_error(got: np.ndarray, ref: np.ndarray, low_precision: bool = False) -> float:
    """:func:`mnist_course.gradcheck.rel_error`, with a floor that suits float32 results.

    The floor is 1e-8; for float32 results it is raised to 1% of the largest reference value, so
    that rounding noise on elements near zero does not count as an error.
    """
    ref = np.asarray(ref, dtype=np.float64)
    floor = 1e-8
    if low_precision and ref.size:
        floor = max(floor, 1e-2 * float(np.max(np.abs(ref))))
    return rel_error(got, ref, floor=floor)


def _fmt_shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _scale_hint(got: np.ndarray, ref: np.ndarray, n: int | None, what: str, tol: float):
    """Recognise got = k * ref (batch-size factors, sign, factor 2) and got = ref.T."""
    ref_norm = float(np.sum(ref * ref))
    if ref_norm > 0 and got.shape == ref.shape:
        k = float(np.sum(got * ref)) / ref_norm
        if abs(k - 1) > 1e-3 and _rel_error(got, k * ref) < tol:
            if n and n > 1 and np.isclose(k, n, rtol=1e-3):
                return (f"{what} is {n} times too large (N = {n}): a sum over the batch instead "
                        f"of the mean? Divide by N.")
            if n and n > 1 and np.isclose(k, 1 / n, rtol=1e-3):
                return (f"{what} is {n} times too small (N = {n}): divided by N twice, or "
                        f"averaged where a sum was needed?")
            if np.isclose(k, -1, rtol=1e-3):
                return f"{what} has the wrong sign."
            if np.isclose(k, 0, atol=1e-12):
                return f"{what} is all zeros."
            return f"{what} is the expected value times {k:.4g}: a wrong constant factor?"
    if got.ndim == 2 and got.shape == ref.T.shape and _rel_error(got, ref.T) < tol:
        return f"{what} is transposed."
    if not np.any(got) and np.any(ref):
        return f"{what} is all zeros."
    return None


class _Check:
    """Runs one check: tracks the case, calls the learner's code, compares, reports."""

    def __init__(self, name: str, total: int):
        self.name = name
        self.total = total
        self.index = 0
        self.desc = ""
        self.n = None
        self.max_err = 0.0
        self.low_precision = False

    # -- reporting ---------------------------------------------------------------------------
    def case(self, index: int, desc: str, n: int | None = None) -> None:
        self.index, self.desc, self.n = index, desc, n

    def header(self) -> str:
        if self.desc:
            return f"{self.name}: case {self.index} of {self.total} failed: {self.desc}"
        return f"{self.name} failed"

    def fail(self, *lines) -> None:
        __tracebackhide__ = True
        body = [line for line in lines if line]
        raise AssertionError("\n  ".join([self.header(), *body]))

    def passed(self, cases: int | None = None, show_error: bool = True,
               detail: str | None = None) -> None:
        """Print the one ✓ line; detail (e.g. what was measured) is appended to it."""
        cases = self.total if cases is None else cases
        line = f"✓ {self.name}: {cases} case{'s' if cases != 1 else ''}"
        if show_error:
            line += f", max rel. error {self.max_err:.1e}"
            if self.low_precision:
                line += " (float32 results)"
        if detail:
            line += f", {detail}"
        print(line)

    # -- calling the learner's code ------------------------------------------------------------
    def call(self, fn, *args, signature: str = "", explain=None, **kwargs):
        """Call fn; NotImplementedError passes through, other errors gain the case description.

        explain: optional function exc -> str or None, the likely bug behind an exception.
        """
        __tracebackhide__ = True
        name = getattr(fn, "__name__", "your function")
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as exc:  # the learner's error, reported with the case it failed on
            lines = [f"{name} raised {type(exc).__name__}: {exc}"]
            if isinstance(exc, TypeError) and signature:
                lines.append(f"The expected signature is {signature}.")
            hint = explain(exc) if explain is not None else None
            if hint:
                lines.append(f"Likely bug: {hint}")
            raise AssertionError("\n  ".join([self.header(), *lines])) from exc

    def unpack(self, result, names: tuple, fname: str) -> tuple:
        """Check that result is a tuple/list with one value per name."""
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            self.fail(f"{fname} should return a tuple ({', '.join(names)}); "
                      f"it returned {_describe(result)}.")
        return tuple(result)

    def array(self, value, what: str, shape: tuple, shape_hints=()) -> np.ndarray:
        """Check that value is a float NumPy array of the given shape; return it."""
        if value is None:
            self.fail(f"{what} is None: a missing `return`?")
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            self.fail(f"{what} is a torch.Tensor; this exercise expects a NumPy array.")
        if isinstance(value, (tuple, list)):
            self.fail(f"{what} should be a NumPy array of shape {_fmt_shape(shape)}; "
                      f"got {_describe(value)}.")
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            self.fail(f"{what} has dtype {arr.dtype}; expected floating point numbers "
                      f"(float64, or float32).")
        if arr.shape != tuple(shape):
            hint = None
            for bad_shape, text in shape_hints:
                if arr.shape == tuple(bad_shape):
                    hint = text
                    break
            self.fail(f"{what} has shape {_fmt_shape(arr.shape)}; expected {_fmt_shape(shape)}.",
                      f"Likely bug: {hint}" if hint else None)
        return arr

    def scalar(self, value, what: str) -> np.ndarray:
        """Check that value is one number (float, NumPy scalar, or size-1 array)."""
        if value is None:
            self.fail(f"{what} is None: a missing `return`?")
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            self.fail(f"{what} is a torch.Tensor; this exercise expects a NumPy number.")
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):  # an object NumPy cannot read
            arr = np.asarray(None)
        if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
            self.fail(f"{what} should be a number; got {_describe(value)}.")
        if arr.size != 1:
            hint = None
            if self.n and arr.shape == (self.n,):
                hint = (f"{what} has one value per sample: return their mean over the batch, "
                        f"a single number.")
            self.fail(f"{what} should be a single number; got shape {_fmt_shape(arr.shape)}.",
                      f"Likely bug: {hint}" if hint else None)
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float64)
        return arr.reshape(())

    def compare(self, what: str, got: np.ndarray, ref: np.ndarray, alternatives=(),
                nonfinite_hint: str | None = None, fallback_hint: str | None = None,
                fallback_first: bool = False) -> float:
        """Compare got with ref; on failure try to name the bug.

        alternatives: (array or zero-argument callable, hint) pairs; when got matches one of
        those arrays, its hint is given as the likely bug. Otherwise a scale factor (N times too
        large, wrong sign, transposed) is looked for, then fallback_hint is used
        (fallback_first: before the scale factor).
        """
        __tracebackhide__ = True
        low = got.dtype != np.float64
        tol = TOL_FLOAT32 if low else TOL_FLOAT64
        got64 = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if not np.all(np.isfinite(got64)):
            bad = int(np.size(got64) - np.count_nonzero(np.isfinite(got64)))
            self.fail(f"{what} contains inf or nan ({bad} of {got64.size} values).",
                      f"Likely bug: {nonfinite_hint}" if nonfinite_hint else None)
        err = _rel_error(got64, ref, low)
        if err <= tol:
            self.max_err = max(self.max_err, err)
            self.low_precision |= low
            return err
        if got64.ndim == 0:
            where = f"got {float(got64):.8g}, expected {float(ref):.8g}"
        else:
            idx = np.unravel_index(int(np.argmax(np.abs(got64 - ref))), ref.shape)
            idx = tuple(int(i) for i in idx)
            where = (f"largest difference at index {idx}: got {got64[idx]:.6g}, "
                     f"expected {ref[idx]:.6g}")
        hint = None
        match_tol = 10 * tol if low else 1e-6
        for alt, text in alternatives:
            alt = np.asarray(alt() if callable(alt) else alt, dtype=np.float64)
            if alt.shape == got64.shape and np.all(np.isfinite(alt)) \
                    and _rel_error(got64, alt, low) < match_tol:
                hint = text
                break
        if hint is None and fallback_first:
            hint = fallback_hint
        if hint is None:
            hint = _scale_hint(got64, ref, self.n, what, match_tol)
        if hint is None:
            hint = fallback_hint
        self.fail(f"{what}: max rel. error {err:.1e} (tolerance {tol:.0e}); {where}.",
                  f"Likely bug: {hint}" if hint else None)
        return err

    def unchanged(self, before: np.ndarray, after: np.ndarray, message: str) -> None:
        if not np.array_equal(before, after, equal_nan=True):
            self.fail(message)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _nonzero_normal(rng, shape) -> np.ndarray:
    """Standard normal values kept away from 0 (so that ReLU's kink is never hit)."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 1e-3, 0.5, x)
