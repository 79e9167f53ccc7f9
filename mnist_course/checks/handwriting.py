"""The check for lesson 06's section on drawn digits (MNIST's preprocessing): check_center_of_mass."""

from __future__ import annotations

import numpy as np

from mnist_course.checks._core import _Check

__all__ = ["check_center_of_mass"]


def _cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(6)
    dot = np.zeros((8, 10))
    dot[3, 5] = 0.7
    blob = np.zeros((12, 9))
    blob[2:9, 1:4] = rng.uniform(0.2, 1.0, size=(7, 3))
    blob[7:11, 3:8] = rng.uniform(0.0, 0.5, size=(4, 5))
    seven = np.zeros((28, 28))
    seven[5:8, 6:22] = 1.0                                   # the bar, full ink
    for r in range(8, 24):                                   # the stem, thinner and fainter
        c = 21 - (r - 8) // 2
        seven[r, c - 1:c + 1] = 0.6
    seven[4, 6:22] = 0.3                                     # a grey edge, as anti-aliasing makes
    return [("one pixel of ink at row 3, column 5 of an 8x10 image", dot),
            ("an uneven blob in a 12x9 image (not square, grey levels)", blob),
            ("a 28x28 seven: heavy bar, light stem", seven)]


def check_center_of_mass(fn) -> None:
    """Check ``center_of_mass(image) -> (row, col)``: the ink-weighted mean of the row indices and
    of the column indices (0-based) of a non-negative 2-D image (H, W)."""
    cases = _cases()
    chk = _Check("check_center_of_mass", len(cases))
    for i, (desc, image) in enumerate(cases, 1):
        chk.case(i, desc)
        before = image.copy()
        result = chk.call(fn, image, signature="center_of_mass(image) -> (row, col)")
        row, col = chk.unpack(result, ("row", "col"), "center_of_mass")
        chk.unchanged(before, image, "center_of_mass changed the image: only read it.")
        got = np.array([chk.scalar(row, "row"), chk.scalar(col, "col")], dtype=np.float64)
        h, w = image.shape
        rows, cols = np.arange(h), np.arange(w)
        mass = image.sum()
        ref = np.array([image.sum(axis=1) @ rows / mass, image.sum(axis=0) @ cols / mass])
        inked_r, inked_c = np.nonzero(image)
        chk.compare("(row, col)", got, ref, alternatives=[
            (ref[::-1], ("row and column are swapped: return (row, col), rows first, the order "
                        "NumPy indexes in (image[row, col]).")),
            (ref + 1, ("the indices start at 1: NumPy's rows and columns start at 0 "
                      "(np.arange(H), not np.arange(1, H + 1)).")),
            (np.array([inked_r.mean(), inked_c.mean()]),
             ("the plain mean position of the inked pixels: a faint pixel counts as much as a "
             "dark one there. Weight each index by its pixel's ink, then divide by the total.")),
            (np.array([(inked_r.min() + inked_r.max()) / 2, (inked_c.min() + inked_c.max()) / 2]),
             ("the centre of the bounding box, not the centre of mass: weight each index by its "
             "pixel's ink.")),
            (np.array([(h - 1) / 2, (w - 1) / 2]),
             "the centre of the image, whatever its ink: weight each index by its pixel's ink."),
            (ref * mass, "not divided by the total ink: divide by image.sum()."),
            (np.array([image.sum(axis=1) @ rows / h, image.sum(axis=0) @ cols / w]),
             "divided by the number of rows (columns) instead of the total ink image.sum()."),
        ], fallback_hint="row = sum over pixels of (row index * ink) / total ink; the same for "
                         "the column.")
    chk.passed()
