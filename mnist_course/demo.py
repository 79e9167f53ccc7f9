"""``mnist-course demo``: train the course CNN in NumPy, then in PyTorch, and compare them.

Both runs start from the same weights (``numpy_cnn.init_cnn(0)``), see the same data in the same
shape and use Adam(1e-3) with the same cosine decay and batches of 64, so the table shows the
price of writing every gradient by hand, not a difference in the recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnist_course import CourseError
from mnist_course.draw import WEIGHT_FILES

__all__ = ["format_table", "main"]

#: Seconds per epoch on all 60,000 images, measured by a full ``make demo`` on the course's quiet
#: 2-core machine (NumPy 23.4 s, PyTorch 20.0 s), rounded up; used only for the time estimate.
_SECONDS_PER_EPOCH = {"numpy": 25.0, "torch": 22.0}
_NAMES = {"numpy": "NumPy (by hand)", "torch": "PyTorch (autograd)"}


def format_table(results: list[dict]) -> str:
    """The comparison table: implementation, parameters, epochs, test accuracy, s per epoch."""
    head = ("implementation", "parameters", "epochs", "test accuracy", "s / epoch")
    rows = [(_NAMES.get(r["impl"], r["impl"]) + ("" if r["device"] == "cpu"
                                                 else f" on {r['device']}"),
             f"{r['params']:,}", str(r["epochs"]), f"{r['test_accuracy']:.4f}",
             f"{r['seconds_per_epoch']:.1f}") for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells):
        first = f"{cells[0]:<{widths[0]}}"
        rest = "  ".join(f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:]))
        return f"{first}  {rest}"

    out = [line(head), "-" * len(line(head))] + [line(r) for r in rows]
    return "\n".join(out)


def _estimate_minutes(epochs: int, limit: int | None, cuda: bool) -> tuple[int, int]:
    share = 1.0 if limit is None else min(limit, 60_000) / 60_000
    torch_s = _SECONDS_PER_EPOCH["torch"] * (0.1 if cuda else 1.0)
    seconds = epochs * share * (_SECONDS_PER_EPOCH["numpy"] + torch_s) + 20  # + start-up, tests
    low = max(1, round(seconds * 0.6 / 60))
    return low, max(low + 1, round(seconds * 1.5 / 60))


def main(results: str | os.PathLike = "results", epochs: int = 3, device: str = "auto", *,
         limit: int | None = None, progress: bool = True) -> int:
    """Run the demo and return the exit code (0).

    results: folder for ``learning_curves.png`` and the trained weights, ``numpy_cnn.npz`` and
    ``torch_cnn.pt``, which ``mnist-course draw`` reads (created if needed). epochs: per implementation.
    device: for the PyTorch run ("auto", "cpu", "cuda" or "mps"). limit: train on the first
    ``limit`` images only (for quick tries and tests; the test set stays whole).
    """
    from mnist_course import data, training
    from mnist_course.history import format_epoch
    from mnist_course.torch_cnn import pick_device

    if epochs < 1:
        raise CourseError(f"--epochs must be at least 1, got {epochs}")
    dev = pick_device(device)  # fail now, not after the NumPy run, if CUDA is missing
    images = "60,000" if limit is None else f"{min(limit, 60_000):,}"
    low, high = _estimate_minutes(epochs, limit, dev.type == "cuda")
    print("mnist-course demo: the same CNN (93,322 parameters) trained twice on MNIST,\n"
          f"first in NumPy with hand-written gradients, then in PyTorch with autograd on {dev}.\n"
          f"Each run: {epochs} epoch(s) over {images} training images, Adam(1e-3) with cosine "
          "decay, batch 64,\nthe same starting weights; then both are scored on the 10,000 test "
          "images.\n"
          f"Expect about {low}-{high} minutes on a 2-core laptop (less with more cores or a GPU).",
          flush=True)

    _make_folder(Path(results))    # the weights are saved there after each run
    folder = data.fetch_mnist()
    print(f"\nMNIST is ready in {data.display_path(folder)}", flush=True)

    runs = []
    for impl in ("numpy", "torch"):
        print(f"\n== {_NAMES[impl]} ==", flush=True)

        def on_epoch(row, _epochs=epochs):
            print(format_epoch(row, _epochs), flush=True)

        runs.append(training.run(impl, epochs=epochs, device=str(dev), limit=limit,
                                 progress=progress, on_epoch=on_epoch,
                                 save=Path(results) / WEIGHT_FILES[impl]))

    print("\n" + format_table(runs))
    n_sec, t_sec = runs[0]["seconds_per_epoch"], runs[1]["seconds_per_epoch"]
    if n_sec > 0 and t_sec > 0:
        print("\n" + compare_speed(n_sec, t_sec))

    out = Path(results) / "learning_curves.png"
    _save_curves(runs, out)
    print(f"Learning curves written to {data.display_path(out)}")
    saved = " and ".join(data.display_path(r["saved"]) for r in runs)
    print(f"Weights saved to {saved}: `mnist-course draw` reads them.")
    return 0


def compare_speed(numpy_seconds: float, torch_seconds: float) -> str:
    """One sentence comparing seconds per epoch; within 5% the two count as level."""
    ratio = numpy_seconds / torch_seconds
    noisy = "(timings are noisy when other programs share the CPU)"
    if abs(ratio - 1) < 0.05:
        return (f"Per epoch, PyTorch and the hand-written NumPy version took about the same time "
                f"({torch_seconds:.1f} s and {numpy_seconds:.1f} s) {noisy}.")
    speed = f"{ratio:.1f}x faster" if ratio > 1 else f"{1 / ratio:.1f}x slower"
    return f"Per epoch, PyTorch was {speed} than the hand-written NumPy version {noisy}."


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CourseError(f"cannot create the results folder {folder}: {exc.strerror}. "
                          "Choose another one with --results DIR.") from None


def _save_curves(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, no window: works over ssh and in CI
    import matplotlib.pyplot as plt

    from mnist_course import plots

    fig = plots.plot_history({_NAMES[r["impl"]]: r["history"] for r in runs})
    fig.suptitle("The course CNN on MNIST: NumPy by hand vs PyTorch autograd", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise CourseError(f"cannot write {out}: {exc.strerror}. Choose another folder with "
                          "--results DIR.") from None
    finally:
        plt.close(fig)
