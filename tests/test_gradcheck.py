"""numerical_gradient and rel_error."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_course.gradcheck import numerical_gradient, rel_error


def test_numerical_gradient_of_known_functions():
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    np.testing.assert_allclose(numerical_gradient(lambda v: (v ** 2).sum(), x), 2 * x,
                               atol=1e-8)
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sin(v).sum(), x), np.cos(x),
                               atol=1e-8)
    w = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_allclose(numerical_gradient(lambda v: (v * w).sum(), x), w, atol=1e-8)


def test_numerical_gradient_restores_x_and_keeps_shape():
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    before = x.copy()
    g = numerical_gradient(lambda v: float((v ** 3).sum()), x)
    assert g.shape == x.shape and g.dtype == x.dtype
    assert np.array_equal(x, before)


def test_numerical_gradient_perturbs_in_place():
    # f reads x through a closure, not through its argument: that must work
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(numerical_gradient(lambda _: float(x[0] * x[1]), x), [2.0, 1.0],
                               atol=1e-8)


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.array([1.0, 2.0])

    def f(v):
        if v[0] > 1.0:
            raise RuntimeError("boom")
        return float(v.sum())

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    assert x.tolist() == [1.0, 2.0]


def test_numerical_gradient_rejects_integer_arrays():
    with pytest.raises(ValueError, match="float"):
        numerical_gradient(lambda v: float(v.sum()), np.array([1, 2]))


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 3.0])) == pytest.approx(0.2)
    assert rel_error(np.zeros(2), np.zeros(2)) == 0.0  # the 1e-8 floor avoids 0/0
    assert rel_error(np.array([1e-9]), np.array([0.0])) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        rel_error(np.zeros(2), np.zeros(3))


def test_rel_error_floor():
    # the floor is the smallest denominator: values near 0 are compared against it
    assert rel_error(np.array([1e-3]), np.array([0.0]), floor=1.0) == pytest.approx(1e-3)
    assert rel_error(np.array([1.0]), np.array([3.0]), floor=1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="floor"):
        rel_error(np.zeros(2), np.zeros(2), floor=0.0)


def test_numerical_gradient_of_a_function_that_reads_x_from_outside():
    # as lesson 01's loss reads the network's weights: only an in-place change moves f
    w = np.array([[0.5, -1.0], [2.0, 0.25]])

    def loss(_ignored):
        return float(np.sum(np.tanh(w) ** 2))

    np.testing.assert_allclose(numerical_gradient(loss, w),
                               2 * np.tanh(w) * (1 - np.tanh(w) ** 2), atol=1e-8)
