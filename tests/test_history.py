"""mnist_course.history and mnist_course.summary_table: what the NumPy and torch fits share."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mnist_course import CourseError
from mnist_course.history import EpochTotals, eval_name_of, finish_history, new_history
from mnist_course.summary_table import format_summary


def test_epoch_totals_weight_each_batch_by_its_size():
    totals = EpochTotals()
    totals.add(1.0, 60, 64)          # a full batch
    totals.add(np.float32(3.0), np.int64(6), 36)  # a short last batch, NumPy scalars
    assert totals.seen == 100
    assert totals.mean_loss == pytest.approx((64 * 1.0 + 36 * 3.0) / 100)  # not (1 + 3) / 2
    assert totals.accuracy == pytest.approx(0.66)
    assert isinstance(totals.mean_loss, float) and isinstance(totals.accuracy, float)


def test_epoch_totals_accept_tensors():
    torch = pytest.importorskip("torch")
    totals = EpochTotals()
    totals.add(torch.tensor(2.0), torch.tensor(3), 4)
    totals.add(torch.tensor(1.0), torch.tensor(1), 2)
    assert totals.mean_loss == pytest.approx(10 / 6) and totals.accuracy == pytest.approx(4 / 6)


def test_epoch_totals_without_samples_say_so():
    with pytest.raises(CourseError, match="empty"):
        EpochTotals().mean_loss  # noqa: B018


def test_finish_history():
    h = new_history()
    assert h == {"epochs": [], "step_loss": []}
    h["epochs"] += [{"epoch": 1, "loss": 0.5, "train_acc": 0.8, "val_acc": 0.9, "seconds": 2.0},
                    {"epoch": 2, "loss": 0.3, "train_acc": 0.9, "val_acc": 0.95, "seconds": 4.0}]
    assert finish_history(h, "val") is h
    assert h["val_accuracy"] == 0.95 and h["train_seconds"] == 6.0
    assert h["seconds_per_epoch"] == 3.0
    with pytest.raises(CourseError, match="no 'test_acc'"):
        finish_history(h, "test")
    with pytest.raises(CourseError, match="no epochs"):
        finish_history(new_history(), "val")


def test_eval_name_of():
    assert eval_name_of({"epoch": 1, "train_acc": 0.9, "test_acc": 0.9}) == "test"
    assert eval_name_of({"train_acc": 0.9, "val_loss": 0.1, "val_acc": 0.9}) == "val"
    for bad in ({"train_acc": 0.9}, {"val_acc": 0.9, "test_acc": 0.9}):
        with pytest.raises(CourseError, match="exactly one"):
            eval_name_of(bad)


def test_format_summary():
    text = format_summary([("fc (Linear)", (10,), 7850)], 7850)
    lines = text.splitlines()
    assert lines[0].startswith("Layer (type)") and lines[0].endswith("Param #")
    assert lines[2] == f"{'fc (Linear)':<26}{'(None, 10)':<22}{'7,850':>14}"
    assert lines[-2:] == ["Total params: 7,850", "-" * 62]
    assert all(len(line) <= 62 for line in lines)


def test_shared_modules_import_neither_numpy_nor_torch():
    """numpy_cnn may import them without pulling in torch (lower rooms never import higher)."""
    code = ("import sys, mnist_course.history, mnist_course.summary_table; "
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_plot_history_reads_val_and_test_rows():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mnist_course import plots

    numpy_like = {"step_loss": [1.0, 0.5, 0.4], "epochs": [
        {"epoch": 1, "loss": 0.6, "train_acc": 0.8, "test_acc": 0.85, "seconds": 1.0}]}
    torch_like = {"step_loss": [1.0, 0.6, 0.3], "epochs": [
        {"epoch": 1, "loss": 0.6, "train_acc": 0.8, "val_loss": 0.5, "val_acc": 0.86,
         "lr": 1e-3, "seconds": 1.0}]}
    fig = plots.plot_history({"numpy": numpy_like, "torch": torch_like}, smooth=2)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["numpy test", "numpy train", "torch val", "torch train"]
    plt.close(fig)
