"""Figures that several lessons share: digit grids, confusion matrices, learning curves.

Every function returns the matplotlib ``Figure`` (so a notebook shows it once) and keeps it
small enough to read on the web. Nothing here trains or loads anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mnist_course.history import eval_name_of

__all__ = ["confusion_matrix", "plot_confusion", "plot_history", "precision_recall", "show_digits"]


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _as_images(images) -> np.ndarray:
    """Return images as a float or uint8 array of shape (N, 28, 28)."""
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {arr.shape}")
    return arr


def show_digits(images, labels=None, preds=None, ncols: int = 8, title: str | None = None,
                size: float = 1.0, captions: Sequence[str] | None = None):
    """Show a grid of digits.

    images: (N, 28, 28) or (N, 1, 28, 28), any dtype (uint8 or normalised floats).
    labels: optional (N,) true labels; preds: optional (N,) predictions. A caption reads
    "7" with labels only, or "true 7 / pred 1" with both, in red where they differ.
    captions: optional list of N strings that replace the automatic captions.
    size: inches per digit.
    """
    plt = _plt()
    imgs = _as_images(images)
    n = len(imgs)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(imgs[i], cmap="gray_r")
        color = "black"
        if captions is not None:
            text = captions[i]
        elif labels is not None and preds is not None:
            text = f"{int(labels[i])}→{int(preds[i])}"
            color = "black" if int(labels[i]) == int(preds[i]) else "crimson"
        elif labels is not None:
            text = str(int(labels[i]))
        else:
            text = ""
        ax.set_title(text, fontsize=8, color=color, pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """Counts of (true, predicted) pairs: an int64 array of shape (num_classes, num_classes).

    Row i holds the images whose true class is i; column j those predicted as j.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (column-wise) and recall (row-wise) from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    precision = tp / np.maximum(cm.sum(axis=0), 1)
    recall = tp / np.maximum(cm.sum(axis=1), 1)
    return precision, recall


def plot_confusion(cm: np.ndarray, title: str | None = None, size: float = 4.5):
    """Draw a confusion matrix with counts in each cell (log-ish colouring keeps errors visible)."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    cm = np.asarray(cm)
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm + 1, cmap="Blues", norm=LogNorm())
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if i == j else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix", fontsize=10)
    fig.tight_layout()
    return fig


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) < window:
        return v
    kernel = np.ones(window) / window
    return np.convolve(v, kernel, mode="valid")


def plot_history(histories: Mapping[str, Mapping], smooth: int = 50, size=(8, 3)):
    """Learning curves of one or more training runs, side by side: loss and accuracy.

    histories: name -> history, where a history is what the course's ``fit`` helpers return
    (see ``mnist_course.history``): ``step_loss`` (training loss of every step) and ``epochs``
    (a list of dicts with ``epoch``, ``train_acc`` and the evaluation accuracy, ``val_acc`` or
    ``test_acc``; the legend says which). The loss is smoothed over ``smooth`` steps.
    """
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=size)
    for name, h in histories.items():
        steps = h.get("step_loss", [])
        if len(steps):
            sm = _smooth(steps, smooth)
            n_epochs = max(1, len(h.get("epochs", [])))
            x = (np.arange(len(sm)) + (len(steps) - len(sm))) / len(steps) * n_epochs
            ax_loss.plot(x, sm, label=name)
        rows = h.get("epochs", [])
        if rows:
            ep = [r["epoch"] for r in rows]
            split = eval_name_of(rows[0])
            line, = ax_acc.plot(ep, [r[f"{split}_acc"] for r in rows], "o-",
                                label=f"{name} {split}")
            if "train_acc" in rows[0]:
                ax_acc.plot(ep, [r["train_acc"] for r in rows], "s--", color=line.get_color(),
                            alpha=0.6, label=f"{name} train")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=8)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend(fontsize=8)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    return fig
