"""The PyTorch data and model checks (check_read_idx, check_idx_dataset, check_sequential,
check_regularized_cnn) pass correct code and name the typical mistakes.

The implementations under test are in buggy_torch.py, written independently of the package.
(check_my_cnn is tested in test_checks.py, the training-loop checks in test_checks_torch_loops.py.)
"""

from __future__ import annotations

import re
import tempfile

import buggy_torch as B
import pytest
import torch

from mnist_course import checks

CORRECT = [
    ("check_read_idx", B.read_idx),
    ("check_read_idx", B.read_idx_sniffing),
    ("check_idx_dataset", B.IdxDataset),
    ("check_idx_dataset", B.IdxDatasetTensorLabels),
    ("check_idx_dataset", B.IdxDatasetPrecomputed),
    ("check_sequential", B.make_sequential),
    ("check_sequential", B.make_sequential_nested),
    ("check_regularized_cnn", B.RegularizedCNN),
    ("check_regularized_cnn", B.RegularizedCNNDeclaredOutOfOrder),
    ("check_regularized_cnn", B.RegularizedCNNSequential),
]


@pytest.mark.parametrize(("check", "arg"), CORRECT, ids=[c[1].__name__ for c in CORRECT])
def test_correct_implementation_passes_with_one_line(check, arg, capsys):
    getattr(checks, check)(arg)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"✓ {check}: ")


def test_the_checks_are_exported():
    for name in ("check_read_idx", "check_idx_dataset", "check_my_cnn", "check_sequential",
                 "check_regularized_cnn"):
        assert name in checks.__all__


def test_the_success_line_reports_the_parameters_and_the_rates(capsys):
    checks.check_sequential(B.make_sequential)
    checks.check_regularized_cnn(B.RegularizedCNN)
    first, second = capsys.readouterr().out.splitlines()
    assert "93,322 parameters" in first
    assert re.search(r"93,770 parameters, measured dropout rates 0\.\d\d and 0\.\d\d", second)


# (id, check, argument, phrase the failure message must contain: a regular expression)
BUGS = [
    ("little-endian dims", "check_read_idx", B.read_idx_little_endian,
     r"case 1 of 7[\s\S]*sizes are read as little-endian"),
    ("header not skipped (whole buffer reshaped)", "check_read_idx",
     B.read_idx_header_not_skipped, (r"mentions 121, the size of the whole file: the header is "
                                    r"not skipped")),
    ("header not skipped (data read from byte 0)", "check_read_idx", B.read_idx_from_byte_0,
     r"the data is read from byte 0, but it starts at byte 16"),
    ("hard-coded 3 dims", "check_read_idx", B.read_idx_three_dims,
     r"case 2 of 7 failed: a 1-D file[\s\S]*do not assume 3 dimensions"),
    (".gz read as raw", "check_read_idx", B.read_idx_gz_as_raw,
     (r"case 3 of 7[\s\S]*reads the raw file but not the same file gzip-compressed[\s\S]*"
     r"gzip\.open")),
    ("no check of the byte count", "check_read_idx", B.read_idx_no_count_check,
     r"case 7 of 7 failed: a file with 10 bytes too many[\s\S]*byte count is not checked"),
    ("no check of the magic number", "check_read_idx", B.read_idx_no_magic_check,
     r"case 5 of 7[\s\S]*expected a ValueError[\s\S]*magic number is not checked"),
    ("a str method on a pathlib.Path", "check_read_idx", B.read_idx_str_only,
     r"str\(path\)\.endswith\('\.gz'\)"),
    ("not uint8", "check_read_idx", B.read_idx_int64, r"dtype int64[\s\S]*np\.uint8"),
    # issue 23: header offsets
    ("data at 4 * ndim", "check_read_idx", B.read_idx_data_at_4_ndim,
     (r"data is read from byte 12 \(109 bytes left\), but it starts at byte 16 = 4 \+ 4 \* "
      r"ndim: 4 \* ndim forgets the 4 bytes of the magic number")),
    ("data at 4 + ndim", "check_read_idx", B.read_idx_data_at_4_plus_ndim,
     r"data is read from byte 7[\s\S]*each size takes 4 bytes, not 1"),
    ("data one field late", "check_read_idx", B.read_idx_data_at_header_plus_4,
     r"data is read from byte 20[\s\S]*one 4-byte field too many is skipped"),
    ("sizes from byte 0", "check_read_idx", B.read_idx_dims_at_0,
     r"sizes are read from byte 0: the first 4 bytes are the magic number \(2051"),
    ("sizes from byte 8", "check_read_idx", B.read_idx_dims_at_8,
     r"sizes are read from byte 8, one field late"),
    ("assert instead of ValueError", "check_read_idx", B.read_idx_assert,
     r"raised AssertionError[\s\S]*raise ValueError[\s\S]*\(not AssertionError\)"),
    ("not normalised", "check_idx_dataset", B.IdxDatasetNotNormalised,
     r"scaled to \[0, 1\] but not normalised"),
    ("scaled twice", "check_idx_dataset", B.IdxDatasetScaledTwice, r"divided by 255 twice"),
    ("missing channel axis", "check_idx_dataset", B.IdxDatasetNoChannel,
     r"shape \(28, 28\)[\s\S]*channel axis is missing"),
    ("uint8 images", "check_idx_dataset", B.IdxDatasetUint8,
     r"dtype torch\.uint8[\s\S]*not converted"),
    ("float64 images", "check_idx_dataset", B.IdxDatasetFloat64,
     r"dtype torch\.float64[\s\S]*float64 images"),
    ("float labels", "check_idx_dataset", B.IdxDatasetFloatLabels,
     r"the label is a float[\s\S]*class indices, not floats"),
    ("len off by one", "check_idx_dataset", B.IdxDatasetLenOffByOne,
     r"len\(dataset\) is 9[\s\S]*off by one"),
    ("files re-read per item", "check_idx_dataset", B.IdxDatasetRereads,
     r"FileNotFoundError[\s\S]*read again after __init__"),
    ("images and labels mismatched in length", "check_idx_dataset",
     B.IdxDatasetNoLengthCheck,
     r"case 2 of 2 failed: 10 images but 9 labels[\s\S]*mismatched in length"),
    ("missing Flatten", "check_sequential", B.sequential_no_flatten,
     r"receives \(4, 64, 3, 3\), expected \(4, 576\)[\s\S]*nn\.Flatten\(\) is missing"),
    ("ReLU after the last layer", "check_sequential", B.sequential_relu_last,
     r"a ReLU after the last layer[\s\S]*Your layers: .*Linear -> ReLU\."),
    ("pooling in the wrong place", "check_sequential", B.sequential_pool_after_conv3,
     (r"third nn\.Conv2d \(conv3\) receives \(4, 64, 11, 11\)[\s\S]*max pooling is missing "
     r"before conv3")),
    ("a softmax at the end", "check_sequential", B.sequential_softmax_last,
     r"a softmax at the end"),
    ("not an nn.Sequential", "check_sequential", B.sequential_module_not_sequential,
     r"should return an nn\.Sequential; it returned a Net"),
    ("dropout before fc2", "check_sequential", B.sequential_dropout_before_fc2,
     (r"in training mode \(model\.train\(\)\) the logits differ[\s\S]*it holds 11 = Dropout, "
      r"which acts only in training mode[\s\S]*no dropout and no batch norm")),
    ("dropout2d after conv1", "check_sequential", B.sequential_dropout2d_after_conv1,
     r"it holds 2 = Dropout2d, which acts only in training mode"),
    ("batch norm without parameters", "check_sequential", B.sequential_batchnorm_no_affine,
     r"it holds 1 = BatchNorm2d, which acts only in training mode"),
    ("dropout in a nested block", "check_sequential", B.sequential_dropout_nested,
     r"it holds 4\.2 = Dropout, which acts only in training mode"),
    ("dropout in eval mode", "check_regularized_cnn", B.RegularizedCNNDropoutInEval,
     r"case 2 of 4[\s\S]*dropout in eval mode[\s\S]*training=self\.training"),
    ("BN placed after the ReLU", "check_regularized_cnn", B.RegularizedCNNBNAfterReLU,
     r"BN placed after the ReLU"),
    ("BN missing", "check_regularized_cnn", B.RegularizedCNNNoBN,
     r"case 1 of 4[\s\S]*BatchNorm missing"),
    ("dropout after the last layer", "check_regularized_cnn", B.RegularizedCNNDropoutLast,
     r"case 3 of 4[\s\S]*dropout after the last layer"),
    ("functional BN without running stats", "check_regularized_cnn",
     B.RegularizedCNNFunctionalBN, r"batch norm without running statistics"),
    ("dropout's keep probability", "check_regularized_cnn", B.RegularizedCNNKeepProbability,
     r"dropout rate: 0\.\d\d[\s\S]*probability to DROP"),
    ("dropout rate not honoured", "check_regularized_cnn", B.RegularizedCNNFixedRate,
     r"case 4 of 4[\s\S]*expected 0\.6[\s\S]*dropout argument is ignored"),
]


@pytest.mark.parametrize(("check", "arg", "phrase"), [b[1:] for b in BUGS],
                         ids=[b[0] for b in BUGS])
def test_typical_bug_is_named(check, arg, phrase, capsys):
    with pytest.raises(AssertionError) as info:
        getattr(checks, check)(arg)
    message = str(info.value)
    assert re.search(phrase, message), message
    assert message.startswith(check), message
    assert "✓" not in capsys.readouterr().out


def test_not_implemented_error_propagates_unchanged_from_the_data_checks():
    def stub(*args):
        raise NotImplementedError()

    class Stub(B.IdxDataset):
        def __getitem__(self, i):
            raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        checks.check_read_idx(stub)
    with pytest.raises(NotImplementedError):
        checks.check_idx_dataset(stub)
    with pytest.raises(NotImplementedError):
        checks.check_idx_dataset(Stub)


@pytest.mark.parametrize("arg", [B.read_idx, B.read_idx_gz_as_raw, B.IdxDataset,
                                 B.IdxDatasetRereads, B.IdxDatasetNoLengthCheck],
                         ids=lambda f: f.__name__)
def test_temporary_files_are_removed(arg, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    check = checks.check_read_idx if "read_idx" in arg.__name__ else checks.check_idx_dataset
    try:
        check(arg)
    except AssertionError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_the_dataset_check_leaves_the_global_random_state_alone():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    checks.check_idx_dataset(B.IdxDataset)
    assert torch.equal(torch.get_rng_state(), state)


def test_a_dataset_whose_reader_fails_is_told_to_check_the_reader():
    class WithBrokenReader(B.IdxDataset):
        def __init__(self, images_path, labels_path):
            self.images = B.read_idx_little_endian(images_path)

    with pytest.raises(AssertionError, match=r"does check_read_idx pass\?"):
        checks.check_idx_dataset(WithBrokenReader)


def test_not_implemented_error_propagates_unchanged_from_the_model_checks():
    def stub():
        raise NotImplementedError()

    class Stub(B.RegularizedCNN):
        def forward(self, x):
            raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        checks.check_sequential(stub)
    with pytest.raises(NotImplementedError):
        checks.check_regularized_cnn(Stub)


def test_a_wrong_layer_size_is_named():
    def wrong():
        layers = list(B.make_sequential())
        layers[3] = torch.nn.Conv2d(64, 32, 3)
        return torch.nn.Sequential(*layers)

    with pytest.raises(AssertionError, match=r"second nn\.Conv2d \(conv2\) has weight shape "
                                             r"\(32, 64, 3, 3\)[\s\S]*swapped"):
        checks.check_sequential(wrong)


def test_a_missing_relu_is_named():
    def no_relu():
        layers = list(B.make_sequential())
        del layers[10]
        return torch.nn.Sequential(*layers)

    with pytest.raises(AssertionError, match=r"nn\.ReLU\(\) after fc1 is missing"):
        checks.check_sequential(no_relu)


@pytest.mark.parametrize("check, arg", [(checks.check_sequential, B.make_sequential),
                                        (checks.check_regularized_cnn, B.RegularizedCNN),
                                        (checks.check_regularized_cnn, B.RegularizedCNNNoBN)])
def test_the_checks_leave_the_global_torch_state_alone(check, arg):
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        check(arg)
    except AssertionError:
        pass
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_the_regularized_check_is_deterministic(capsys):
    checks.check_regularized_cnn(B.RegularizedCNN)
    checks.check_regularized_cnn(B.RegularizedCNN)
    first, second = capsys.readouterr().out.splitlines()
    assert first == second
