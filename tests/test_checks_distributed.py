"""The checks of the data-parallel lesson accept correct code and name typical bugs."""

from __future__ import annotations

import re

import buggy_distributed as B
import pytest

from mnist_course import checks


@pytest.mark.parametrize("check, make", [
    (checks.check_shard_batch, B.make_shard_batch),
    (checks.check_average_gradients, B.make_average_gradients),
    (checks.check_rank_indices, B.make_rank_indices),
])
def test_correct_implementation_passes_with_one_line(check, make, capsys):
    check(make(None))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"✓ {check.__name__}:"), lines


def test_check_names_are_exported():
    for name in ("check_shard_batch", "check_average_gradients", "check_rank_indices"):
        assert name in checks.__all__ and callable(getattr(checks, name))
    assert checks.__all__ == sorted(checks.__all__)


@pytest.mark.parametrize("check, make, bug, phrase", [
    (checks.check_shard_batch, B.make_shard_batch, "unequal", "shards of unequal size"),
    (checks.check_shard_batch, B.make_shard_batch, "interleaved", "interleaved (x[i::k])"),
    (checks.check_shard_batch, B.make_shard_batch, "no_raise", "returned instead of raising"),
    (checks.check_shard_batch, B.make_shard_batch, "wrong_error", "raise ValueError"),
    (checks.check_shard_batch, B.make_shard_batch, "labels_unsliced", "slice y exactly like x"),
    (checks.check_average_gradients, B.make_average_gradients, "sum", "not their mean"),
    (checks.check_average_gradients, B.make_average_gradients, "wrong_axis", "wrong axis"),
    (checks.check_average_gradients, B.make_average_gradients, "all_elements",
     "averaged over every element"),
    (checks.check_average_gradients, B.make_average_gradients, "in_place", "in place"),
    (checks.check_average_gradients, B.make_average_gradients, "first_only",
     "only the first worker"),
    (checks.check_rank_indices, B.make_rank_indices, "drop_padding", "no padding"),
    (checks.check_rank_indices, B.make_rank_indices, "drop_last", "are dropped"),
    (checks.check_rank_indices, B.make_rank_indices, "duplicates",
     "padded by a whole extra round although n = 10 is a multiple of world = 2"),
    # issue 23: other paddings
    (checks.check_rank_indices, B.make_rank_indices, "pad_last",
     "the padding repeats the last index 2 times"),
    (checks.check_rank_indices, B.make_rank_indices, "pad_first",
     "the padding repeats the first index 2 times instead of the first 2 indices"),
    (checks.check_rank_indices, B.make_rank_indices, "pad_from_end",
     "the padding is taken from the end of the order"),
    (checks.check_rank_indices, B.make_rank_indices, "pad_range",
     "the padding is the unshuffled indices 0..1"),
    (checks.check_rank_indices, B.make_rank_indices, "pad_zeros", "the padding is index 0"),
    (checks.check_rank_indices, B.make_rank_indices, "pad_n_mod_world",
     "the padding has n % world = 1 indices; it needs total_size - n = 2"),
    (checks.check_rank_indices, B.make_rank_indices, "pad_in_front",
     "the padding is put in front of the order"),
    (checks.check_rank_indices, B.make_rank_indices, "same_shard",
     "every rank gets the same indices"),
    (checks.check_rank_indices, B.make_rank_indices, "ignores_epoch", "the epoch is ignored"),
    (checks.check_rank_indices, B.make_rank_indices, "off_by_one",
     "off by one in the rank slicing"),
    (checks.check_rank_indices, B.make_rank_indices, "contiguous", "contiguous block"),
    (checks.check_rank_indices, B.make_rank_indices, "unshuffled", "not shuffled"),
])
def test_typical_bug_is_named(check, make, bug, phrase, capsys):
    with pytest.raises(AssertionError, match=re.escape(phrase)):
        check(make(bug))
    assert "✓" not in capsys.readouterr().out


def test_failure_names_the_case():
    with pytest.raises(AssertionError, match=r"case \d+ of \d+ failed: .*k=3"):
        checks.check_shard_batch(B.make_shard_batch("interleaved"))
    with pytest.raises(AssertionError, match=r"n=10, world=3, seed=0, epoch=1"):
        checks.check_rank_indices(B.make_rank_indices("ignores_epoch"))


@pytest.mark.parametrize("check", [checks.check_shard_batch, checks.check_average_gradients,
                                   checks.check_rank_indices])
def test_not_implemented_error_propagates(check):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        check(stub)
