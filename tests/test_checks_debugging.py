"""The checks of lesson 10 pass correct helpers and repairs, and name each typical mistake."""

from __future__ import annotations

import buggy_debugging as bd
import pytest

from mnist_course import checks


@pytest.fixture(autouse=True)
def _mnist(mnist_raw):
    """The checks train and score on real MNIST images: make sure they are there."""


def _fails(check, fn, *words):
    with pytest.raises(AssertionError) as info:
        check(fn)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in:\n{message}"
    return message


# --------------------------------------------------------------------------------------------
# check_loss_at_init
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bd.loss_at_init, bd.loss_at_init_restoring])
def test_check_loss_at_init_passes_correct_code(fn, capsys):
    checks.check_loss_at_init(fn)
    out = capsys.readouterr().out
    assert out.startswith("✓ check_loss_at_init: 5 cases") and "ln 10 = 2.303" in out


@pytest.mark.parametrize("fn, words", [
    (bd.hard_coded_ln10, ["case 4 of 5", "ln 10 is hard-coded", "logits.shape[1]"]),
    (bd.log10_expected, ["case 1 of 5", "base-10 logarithm"]),
    (bd.one_sided, ["case 5 of 5", "one-sided", "abs(loss - expected)"]),
    (bd.ignores_rel_tol, ["case 3 of 5", "rel_tol is ignored"]),
    (bd.summed_loss, ["case 1 of 5", "a sum over the batch (64 samples)"]),
    (bd.softmax_first, ["case 1 of 5", "a softmax before the loss"]),
    (bd.dropout_on, ["case 4 of 5", "training mode (dropout on)", "model.eval()"]),
    (bd.tensor_loss, ["loss is a torch.Tensor", "loss.item()"]),
    (bd.with_backward, ["gradients", "torch.no_grad()"]),
    (bd.returns_two, ["should return a tuple (loss, expected, ok)"]),
])
def test_check_loss_at_init_names_the_bug(fn, words):
    _fails(checks.check_loss_at_init, fn, *words)


# --------------------------------------------------------------------------------------------
# check_overfit_one_batch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bd.overfit_one_batch, bd.overfit_one_batch_variant])
def test_check_overfit_one_batch_passes_correct_code(fn, capsys):
    checks.check_overfit_one_batch(fn)
    out = capsys.readouterr().out
    assert out.startswith("✓ check_overfit_one_batch: 2 cases")
    assert "after 100 steps on 32 images (< 0.01)" in out


@pytest.mark.parametrize("fn, words", [
    (bd.no_zero_grad, ["case 1 of 2", "zero_grad is missing"]),
    (bd.adam_in_loop, ["case 1 of 2", "made anew inside the loop"]),
    (bd.plain_sgd, ["case 1 of 2", "SGD was used"]),
    (bd.loss_tensors, ["the list holds tensors", "loss.item()"]),
    (bd.final_only, ["returned a float", "list of the 100 losses"]),
    (bd.one_step_short, ["99 losses for steps=100"]),
    (bd.trains_a_copy, ["was not trained", "a copy of the model"]),
    (bd.never_steps, ["the loss never changes", "optimizer.step()"]),
])
def test_check_overfit_one_batch_names_the_bug(fn, words):
    _fails(checks.check_overfit_one_batch, fn, *words)


# --------------------------------------------------------------------------------------------
# check_shuffled_batches
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bd.shuffled_batches, bd.shuffled_batches_generator])
def test_check_shuffled_batches_passes_correct_code(fn, capsys):
    checks.check_shuffled_batches(fn)
    out = capsys.readouterr().out
    assert out.startswith("✓ check_shuffled_batches: 2 cases, validation accuracy 0.")
    assert "(≥ 0.85)" in out


@pytest.mark.parametrize("fn, words", [
    (bd.separate_permutations, ["labels no longer belong to their images",
                                "different permutations"]),
    (bd.only_images_shuffled, ["labels no longer belong to their images"]),
    (bd.not_shuffled, ["original order", "torch.randperm"]),
    (bd.with_replacement, ["never appear", "with replacement"]),
    (bd.last_batch_dropped, ["batch sizes [16, 16, 16, 16]", "short last batch (6 samples)"]),
    (bd.global_generator, ["generators seeded alike gave different orders",
                           "generator=generator"]),
    (bd.reseeded, ["same order", "reseeded"]),
    (bd.shuffled_in_place, ["changed the x or y", "in-place"]),
])
def test_check_shuffled_batches_names_the_bug(fn, words):
    _fails(checks.check_shuffled_batches, fn, *words)


# --------------------------------------------------------------------------------------------
# check_make_preprocess
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bd.make_preprocess, bd.make_preprocess_torch])
def test_check_make_preprocess_passes_correct_code(fn, capsys):
    checks.check_make_preprocess(fn)
    out = capsys.readouterr().out
    assert out.startswith("✓ check_make_preprocess: 4 cases") and "(≥ 0.85)" in out


@pytest.mark.parametrize("fn, words", [
    (bd.own_statistics, ["case 2 of 4", "statistics of the images being prepared"]),
    (bd.per_image_statistics, ["case 1 of 4", "each image standardised by its own"]),
    (bd.mnist_constants, ["case 1 of 4", "MNIST's constants"]),
    (bd.only_scaled, ["case 1 of 4", "mean 0 and std 1", "not standardised"]),
    (bd.no_channel_axis, ["channel axis is missing"]),
    (bd.float64_output, ["dtype float64", "float32"]),
    (bd.numpy_output, ["NumPy array", "torch.from_numpy"]),
    (bd.modifies_input, ["were modified", "in-place"]),
    (bd.returns_tensor_not_function, ["return a function"]),
])
def test_check_make_preprocess_names_the_bug(fn, words):
    _fails(checks.check_make_preprocess, fn, *words)


# --------------------------------------------------------------------------------------------
# check_count_shared
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bd.count_shared, bd.count_shared_loops])
def test_check_count_shared_passes_correct_code(fn, capsys):
    checks.check_count_shared(fn)
    assert capsys.readouterr().out == "✓ check_count_shared: 4 cases\n"


@pytest.mark.parametrize("fn, words", [
    (bd.distinct_shared, ["case 2 of 4", "returned 2, expected 3", "distinct images"]),
    (bd.counted_on_training_side, ["case 2 of 4", "returned 4, expected 3",
                                   "training side"]),
    (bd.near_copies, ["case 3 of 4", "not exact copies"]),
    (bd.by_pixel_sum, ["case 3 of 4", "sum of the pixels"]),
    (bd.as_fraction, ["returned a float", "return an int"]),
])
def test_check_count_shared_names_the_bug(fn, words):
    _fails(checks.check_count_shared, fn, *words)
