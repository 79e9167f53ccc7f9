"""The bookkeeping every ``fit`` in the course shares: per-sample means and the history dict.

A training history is a plain dict::

    {"epochs": [row, ...],           # one dict per epoch, see below
     "step_loss": [float, ...],      # the training loss of every optimiser step
     "<eval>_accuracy": float,       # the last epoch's "<eval>_acc"
     "train_seconds": float,         # sum of the epochs' "seconds" (evaluation excluded)
     "seconds_per_epoch": float}

and every row has at least ``epoch``, ``loss`` (training loss, mean PER SAMPLE over the epoch),
``train_acc``, ``<eval>_acc`` and ``seconds``. ``<eval>`` names the data the model was scored
on: ``"val"`` for a validation split, ``"test"`` only for the final test evaluation.

"Mean per sample" matters when the last batch is shorter: averaging the batch means would give
its few samples as much weight as a full batch. :class:`EpochTotals` weights each batch mean by
the batch size, so the NumPy and the PyTorch fits report the same quantity.

This module imports neither NumPy nor torch. To use it in a fit (``numpy_cnn.fit`` can switch to
it unchanged in behaviour)::

    history = new_history()
    for epoch in range(1, epochs + 1):
        totals = EpochTotals()
        for xb, yb in batches:
            loss, logits = ...                              # loss: the mean over the batch
            totals.add(loss, (logits.argmax(axis=1) == yb).sum(), len(yb))
            history["step_loss"].append(float(loss))
        row = {"epoch": epoch, "loss": totals.mean_loss, "train_acc": totals.accuracy,
               "test_acc": ..., "seconds": ...}
        history["epochs"].append(row)
    return finish_history(history, "test")
"""

from __future__ import annotations

from collections.abc import Mapping

from mnist_course import CourseError

__all__ = ["EpochTotals", "eval_name_of", "finish_history", "format_epoch", "new_history"]


class EpochTotals:
    """Running sums over one pass through the data: loss weighted by batch size, correct, seen.

    ``add`` accepts Python or NumPy numbers (or 0-d torch tensors, which then stay on their
    device until :attr:`mean_loss` or :attr:`accuracy` is read). With Python floats, added in
    order, the mean is bit for bit ``total += loss * n`` followed by ``total / count``.
    """

    def __init__(self) -> None:
        self.loss_sum = 0.0  # sum over samples of the per-sample loss
        self.correct = 0
        self.seen = 0

    def add(self, mean_loss, correct, n: int) -> None:
        """Count one batch: ``mean_loss`` its loss averaged over its ``n`` samples, ``correct``
        how many of them were classified right."""
        self.loss_sum = self.loss_sum + mean_loss * n
        self.correct = self.correct + correct
        self.seen += int(n)

    def _require_samples(self) -> None:
        if self.seen == 0:
            raise CourseError("no samples were counted: the loader (or the data) is empty")

    @property
    def mean_loss(self) -> float:
        """The loss averaged over every sample seen (not over batches)."""
        self._require_samples()
        return float(self.loss_sum) / self.seen

    @property
    def accuracy(self) -> float:
        """The share of samples classified right, in [0, 1]."""
        self._require_samples()
        return float(self.correct) / self.seen


def new_history() -> dict:
    """An empty history: ``{"epochs": [], "step_loss": []}``."""
    return {"epochs": [], "step_loss": []}


def finish_history(history: dict, eval_name: str) -> dict:
    """Add the totals to a history whose rows are complete; return it (changed in place).

    Sets ``<eval_name>_accuracy`` (the last row's ``<eval_name>_acc``), ``train_seconds`` (the
    sum of the rows' ``seconds``) and ``seconds_per_epoch``.
    """
    rows = history["epochs"]
    if not rows:
        raise CourseError("the history has no epochs: train for at least one epoch")
    key = f"{eval_name}_acc"
    if key not in rows[-1]:
        raise CourseError(f"the last epoch row has no {key!r} (it has {', '.join(rows[-1])})")
    history[f"{eval_name}_accuracy"] = rows[-1][key]
    history["train_seconds"] = sum(r["seconds"] for r in rows)
    history["seconds_per_epoch"] = history["train_seconds"] / len(rows)
    return history


def eval_name_of(row: Mapping) -> str:
    """The name of the evaluation data in an epoch row: ``"test"`` for a row with ``test_acc``,
    ``"val"`` for one with ``val_acc``. Raises :class:`CourseError` when there is no such key
    (besides ``train_acc``) or more than one."""
    names = [k[:-len("_acc")] for k in row if k.endswith("_acc") and k != "train_acc"]
    if len(names) != 1:
        raise CourseError(f"cannot tell which accuracy is the evaluation one in the row with "
                          f"keys {', '.join(row)}: expected exactly one '<name>_acc' besides "
                          "'train_acc'")
    return names[0]


def format_epoch(row: dict, epochs: int) -> str:
    """One line for one epoch row of either ``fit``, e.g.
    ``epoch 1/3  loss 0.1520  train acc 0.9541  test acc 0.9857  12.3 s``
    (``val acc`` for a row scored on a validation split)."""
    width = len(str(epochs))
    name = eval_name_of(row)
    return (f"epoch {row['epoch']:>{width}}/{epochs}  loss {row['loss']:.4f}  "
            f"train acc {row['train_acc']:.4f}  {name} acc {row[f'{name}_acc']:.4f}  "
            f"{row['seconds']:.1f} s")
