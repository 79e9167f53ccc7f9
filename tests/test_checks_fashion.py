"""Lesson 12's checks pass right answers and name each classic mistake (tests/buggy_fashion.py).

check_fashion_model is tested with stand-ins that reach or miss the bar at once (a lookup of
the test images, a model answering one class, a linear model trained for 300 steps), never with
a network trained for minutes.
"""

from __future__ import annotations

import functools

import buggy_fashion as bf
import numpy as np
import pytest
import torch

from mnist_course import checks, data


@pytest.fixture(scope="module")
def fashion(fashion_raw):
    """The real Fashion-MNIST arrays: ``(x_train, y_train), (x_test, y_test)``."""
    return data.load_mnist(fashion_raw.parent.parent, download=False, dataset="fashion-mnist")


@pytest.fixture(scope="module")
def lookup(fashion):
    _, (x_test, y_test) = fashion
    return functools.partial(bf.LookupModel, x_test, y_test)


# --------------------------------------------------------------------------------------------
# check_fashion_preprocess
# --------------------------------------------------------------------------------------------

def test_preprocess_passes(capsys):
    checks.check_fashion_preprocess(bf.preprocess)
    assert "✓ check_fashion_preprocess: 3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (bf.preprocess_mnist, "MNIST's normalisation"),
    (bf.preprocess_unnormalised, "scaled to \\[0, 1\\] but not normalised"),
    (bf.preprocess_not_scaled, "not divided by 255 first"),
    (bf.preprocess_no_channel, "the channel axis is missing"),
    (bf.preprocess_numpy, "return a torch tensor"),
    (bf.preprocess_float64, "return float32"),
    (bf.preprocess_batch_stats, "this batch's own mean and std"),
    (bf.preprocess_in_place, "changed the images"),
])
def test_preprocess_mistakes_are_named(fn, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_fashion_preprocess(fn)


# --------------------------------------------------------------------------------------------
# check_confused_pairs
# --------------------------------------------------------------------------------------------

def test_confused_pairs_passes(capsys):
    checks.check_confused_pairs(bf.confused_pairs)
    assert capsys.readouterr().out.startswith("✓ check_confused_pairs: 3 cases")


@pytest.mark.parametrize("bug, message", [
    ("diagonal", "the diagonal counts the right answers"),
    ("one_way", "add the mistakes the other way round"),
    ("rank_one_way", "chosen by one direction only"),
    ("unordered", "the right pairs in the wrong order|expected"),
    ("ascending", "sort from the largest down"),
    ("in_place", "changed cm"),
])
def test_confused_pairs_mistakes_are_named(bug, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_confused_pairs(functools.partial(bf.confused_pairs, **{bug: True}))


def test_confused_pairs_reports_a_wrong_length():
    with pytest.raises(AssertionError, match="returned 3 pairs; expected k = 2"):
        checks.check_confused_pairs(lambda cm, k=5: bf.confused_pairs(cm, k + 2))


# --------------------------------------------------------------------------------------------
# check_fashion_model
# --------------------------------------------------------------------------------------------

def test_a_good_model_passes_and_is_left_as_it_was(lookup, capsys):
    model = lookup(wrong=0.05).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    acc = checks.check_fashion_model(model, bf.preprocess)
    assert acc == pytest.approx(0.95, abs=0.005)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ check_fashion_model: test accuracy {acc:.4f} on 10,000")
    assert "training mode" not in out
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_bar_is_090(lookup):
    assert checks.check_fashion_model(lookup(wrong=0.10).eval(), bf.preprocess) >= 0.90
    with pytest.raises(AssertionError, match=r"reads 0\.8\d{3} of the 10,000 test images; the bar is 0\.90"):
        checks.check_fashion_model(lookup(wrong=0.12).eval(), bf.preprocess)


def test_a_numpy_preprocess_is_accepted(lookup):
    assert checks.check_fashion_model(lookup().eval(), bf.preprocess_numpy) >= 0.90


def test_training_mode_with_dropout_is_named(lookup):
    model = lookup(dropout=0.5).train()
    with pytest.raises(AssertionError, match=r"(?s)in training mode .*model\.eval\(\).* reads 0\.9"):
        checks.check_fashion_model(model, bf.preprocess)
    assert model.training                               # the check restored the mode


def test_training_mode_that_still_passes_gets_a_note(lookup, capsys):
    checks.check_fashion_model(lookup().train(), bf.preprocess)
    assert "handed over in training mode" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (bf.preprocess_mnist, r"Yours uses MNIST's constants"),
    (bf.preprocess_unnormalised,
     (r"(?s)mean 0\.287 and std 0\.352; with Fashion-MNIST's normalisation, "
      r"\(x / 255 - 0\.2860\) / 0\.3530 instead, the same model reads 0\.9500")),
])
def test_a_preprocessing_unlike_the_training_is_named(lookup, fn, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_fashion_model(lookup().eval(), fn)


def test_one_class_is_named():
    with pytest.raises(AssertionError, match=r"answers class 6 \(Shirt\) for 100%"):
        checks.check_fashion_model(bf.OneClass(), bf.preprocess)


@pytest.mark.parametrize("model, message", [
    (lambda look: bf.Argmax(look()), "one number per image: return the 10 logits"),
    (lambda look: bf.NineOutputs(), "9 outputs per image: the last layer needs 10"),
    (lambda look: bf.tiny_cnn(), None),
])
def test_outputs_and_shapes_are_named(lookup, model, message):
    if message is None:                     # a CNN fed images without their channel axis
        with pytest.raises(AssertionError, match=r"without the channel axis: a Conv2d takes"):
            checks.check_fashion_model(model(lookup), bf.preprocess_no_channel)
        return
    with pytest.raises(AssertionError, match=message):
        checks.check_fashion_model(model(lookup), bf.preprocess)


def test_batch_dependent_preprocessing_is_refused(lookup):
    with pytest.raises(AssertionError, match="alone and in a batch"):
        checks.check_fashion_model(lookup(), bf.preprocess_batch_stats)


def test_not_a_model_or_not_a_function():
    with pytest.raises(AssertionError, match="torch nn.Module"):
        checks.check_fashion_model(lambda x: x, bf.preprocess)
    with pytest.raises(AssertionError, match="preprocess should be a function"):
        checks.check_fashion_model(bf.OneClass(), None)


def test_a_real_model_below_the_bar_is_told_to_train_better(fashion):
    """A linear model trained for 300 steps, a real network well below the bar."""
    (x_train, y_train), _ = fashion
    model = bf.logistic_regression(x_train, y_train)
    with pytest.raises(AssertionError, match=r"(?s)reads 0\.[78]\d{3} .*needs a better recipe") as e:
        checks.check_fashion_model(model, bf.preprocess)
    assert "Likely bug" not in str(e.value)
    acc = float(np.mean(model(bf.preprocess(fashion[1][0])).argmax(1).numpy() == fashion[1][1]))
    assert 0.75 < acc < 0.90
