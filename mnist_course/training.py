"""One entry point that trains the course CNN in NumPy or in PyTorch, for the CLI and the demo.

Both implementations start from the very same weights, ``numpy_cnn.init_cnn(seed)``, see the
same normalised data and use Adam with the same learning rate, decayed along the same cosine, so
their results can be compared side by side. Both are scored on the TEST set after each epoch, so
their histories (see ``mnist_course.history``) have ``test_acc`` rows and ``test_accuracy``.
``run`` returns that history plus ``impl``, ``dataset``, ``epochs``, ``params``, ``device`` and
``saved`` (``--save``: the final weights, written atomically, with the dataset recorded in them
when it is not MNIST). ``dataset="fashion-mnist"`` trains the same network, from the same
weights, on Fashion-MNIST, normalised with that dataset's own mean and std.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from mnist_course import CourseError

# cosine_factor and format_epoch stay importable from here: lesson 08 calls
# training.cosine_factor (their home is below training and distributed, which both use them).
from mnist_course.history import format_epoch
from mnist_course.schedule import CosineDecay, cosine_factor

__all__ = ["IMPLS", "SCHEDULES", "cosine_factor", "format_epoch", "run"]

IMPLS = ("numpy", "torch")
SCHEDULES = ("cosine", "constant")


def _validate(impl, epochs, batch_size, lr, limit, schedule, dataset) -> None:
    from mnist_course import data

    data.get_dataset(dataset)   # an unknown name: DataError, with the choices
    if impl not in IMPLS:
        raise CourseError(f"unknown implementation {impl!r}: choose 'numpy' or 'torch'")
    if schedule not in SCHEDULES:
        raise CourseError(f"unknown schedule {schedule!r}: choose 'cosine' or 'constant'")
    if int(epochs) != epochs or epochs < 1:
        raise CourseError(f"--epochs must be a whole number of at least 1, got {epochs}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise CourseError(f"--batch-size must be a whole number of at least 1, got {batch_size}")
    if not lr > 0:
        raise CourseError(f"--lr must be positive, got {lr}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise CourseError(f"--limit must be at least 1 (the number of training images to use), "
                          f"got {limit}")


def run(impl: str, *, epochs: int = 3, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
        device: str = "auto", limit: int | None = None, progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None, schedule: str = "cosine",
        save: str | os.PathLike | None = None, nproc: int | None = None,
        dataset: str = "mnist") -> dict | None:
    """Train the course CNN with ``impl`` ("numpy" or "torch") on MNIST and return its history.

    - dataset: "mnist" (default) or "fashion-mnist" (see ``mnist_course.data.DATASETS``); the
      images are normalised with that dataset's mean and std.
    - epochs, batch_size, lr: Adam starting at this learning rate, minibatches of this size.
    - schedule: "cosine" (default) lowers the learning rate after every step along a cosine,
      from ``lr`` to 0 at the end of the last epoch (see :func:`cosine_factor`), the same way in
      both implementations; "constant" keeps ``lr``.
    - seed: the initial weights (``numpy_cnn.init_cnn(seed)``, shared by both implementations)
      and the order of the training batches.
    - device: torch only, "auto" (CUDA, else Apple MPS, else the CPU), "cpu", "cuda" or "mps".
      NumPy always runs on the CPU.
    - limit: train on the first ``limit`` training images (the test set stays whole).
    - progress: show a progress bar per epoch; on_epoch(row) is called after each epoch.
    - nproc: torch only: train with this many processes through ``torch.distributed`` (gloo,
      on the CPU; see :mod:`mnist_course.distributed`); ``batch_size`` is then the global batch.
      The result gains ``world_size``; under torchrun, ranks other than 0 get None. None (the
      default): one process, no process group.
    - save: a file for the final weights, written atomically after training: for "numpy" an
      ``.npz`` of the parameter dict (read it with ``numpy_cnn.load_params``), for "torch" a
      ``CourseCNN`` state_dict on the CPU (``torch.load(path, weights_only=True)``, or
      ``torch_cnn.load_state``). Its folder is checked before training starts. A network
      trained on another dataset than MNIST records it there (``numpy_cnn.saved_dataset``,
      ``torch_cnn.saved_dataset``), so that ``mnist-course draw`` can refuse it.

    Returns the history dict of the implementation's ``fit`` (``epochs``, ``step_loss``,
    ``test_accuracy``, ``train_seconds``, ``seconds_per_epoch``; rows with ``epoch``, ``loss``
    (mean per sample), ``train_acc``, ``test_acc``, ``seconds``, and for torch also
    ``test_loss`` and ``lr``) plus ``impl``, ``dataset``, ``epochs`` (the number),
    ``params`` (93,322), ``device`` and ``saved`` (the path written, or None). Since ``epochs`` is now the number, the untouched history
    (with its per-epoch rows, what ``plots.plot_history`` draws) stays available as ``history``.
    """
    _validate(impl, epochs, batch_size, lr, limit, schedule, dataset)
    if save is not None:
        _check_writable(Path(save))
    cosine = schedule == "cosine"
    if nproc is not None:
        if impl != "torch":
            raise CourseError("--nproc trains with torch.distributed: use `train torch --nproc N`")
        from mnist_course import distributed

        history = distributed.run(nproc, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                  limit=limit, cosine=cosine, device=device,
                                  save=None if save is None else Path(save), dataset=dataset)
        if history is None:      # a rank other than 0 under torchrun: rank 0 reports
            return None
        result = dict(history)
        result["history"] = history
        result.update(impl=impl, dataset=dataset, epochs=int(epochs), params=93_322,
                      device="cuda" if history["backend"] == "nccl" else "cpu",
                      saved=None if save is None else str(save))
        return result
    if impl == "numpy":
        history, n_params, dev, write = _run_numpy(epochs, batch_size, lr, seed, limit,
                                                   progress, on_epoch, cosine, dataset)
    else:
        history, n_params, dev, write = _run_torch(epochs, batch_size, lr, seed, device, limit,
                                                   progress, on_epoch, cosine, dataset)
    if save is not None:
        write(Path(save))
    result = dict(history)
    result["history"] = history  # keeps the per-epoch list that "epochs" now shadows
    result.update(impl=impl, dataset=dataset, epochs=int(epochs), params=int(n_params),
                  device=dev,
                  saved=None if save is None else str(save))
    return result


def _check_writable(path: Path) -> None:
    """Fail before training, not after it, when the weights could not be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CourseError(f"--save {path}: that is a folder; give a file name, e.g. "
                          f"{path / 'course_cnn.npz'}")
    if not folder.is_dir():
        raise CourseError(f"--save {path}: the folder {folder} does not exist; create it first "
                          f"(mkdir -p {folder})")
    if not os.access(folder, os.W_OK):
        raise CourseError(f"--save {path}: the folder {folder} is not writable; choose another "
                          "place")


def _run_numpy(epochs, batch_size, lr, seed, limit, progress, on_epoch, cosine, dataset):
    from mnist_course import data, numpy_cnn

    (x_train, y_train), (x_test, y_test) = data.load_mnist(dataset=dataset)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    params = numpy_cnn.init_cnn(seed)
    n_params = sum(int(v.size) for v in params.values())
    optimizer = numpy_cnn.Adam(lr)
    if cosine:
        optimizer = CosineDecay(optimizer, epochs * math.ceil(len(x_train) / batch_size))
    history = numpy_cnn.fit(params, data.normalize(x_train, dataset=dataset), y_train,
                            data.normalize(x_test, dataset=dataset), y_test, epochs=epochs,
                            batch_size=batch_size, optimizer=optimizer, seed=seed,
                            progress=progress, on_epoch=on_epoch)

    def write(path: Path) -> None:
        numpy_cnn.save_params(path, params, dataset=dataset)

    return history, n_params, "cpu", write


def _run_torch(epochs, batch_size, lr, seed, device, limit, progress, on_epoch, cosine,
               dataset):
    import torch

    from mnist_course import numpy_cnn, torch_cnn

    dev = torch_cnn.pick_device(device)
    torch.manual_seed(seed)
    model = torch_cnn.CourseCNN()
    torch_cnn.load_numpy_params(model, numpy_cnn.init_cnn(seed))
    model.to(dev)
    train_loader, test_loader = torch_cnn.mnist_loaders(batch_size=batch_size, seed=seed,
                                                        limit=limit, dataset=dataset,
                                                        pin_memory=dev.type == "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = None
    if cosine:
        total = epochs * len(train_loader)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_factor(step, total))
    history = torch_cnn.fit(model, train_loader, test_loader, epochs=epochs, optimizer=optimizer,
                            scheduler=scheduler, device=dev, progress=progress, on_epoch=on_epoch,
                            eval_name="test")

    def write(path: Path) -> None:
        torch_cnn.save_state(path, model, dataset=dataset)  # CPU tensors: loads anywhere

    return history, torch_cnn.count_params(model), str(dev), write
