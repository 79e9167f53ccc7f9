"""The course CNN again, this time in PyTorch: the model, weight transfer, data and training.

The network is the one lesson 03 builds by hand in NumPy::

    input (N, 1, 28, 28)
    conv1  Conv2d(1 -> 32, 3x3)  + ReLU -> (N, 32, 26, 26) -> MaxPool 2 -> (N, 32, 13, 13)
    conv2  Conv2d(32 -> 64, 3x3) + ReLU -> (N, 64, 11, 11) -> MaxPool 2 -> (N, 64, 5, 5)
    conv3  Conv2d(64 -> 64, 3x3) + ReLU -> (N, 64, 3, 3)
    flatten in (C, H, W) order          -> (N, 576)
    fc1    Linear(576 -> 64)     + ReLU -> (N, 64)
    fc2    Linear(64 -> 10)             -> (N, 10) logits

93,322 parameters. Because the flatten order is (C, H, W) in both implementations, the NumPy
weights load unchanged; only the linear weights are transposed, since NumPy stores them as
(D_in, D_out) (``x @ w``) and ``nn.Linear`` as (D_out, D_in) (``x @ w.T``).

Nothing here is specific to a device: pass ``device="cuda"`` (or use :func:`pick_device`) and the
same code trains on a GPU.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mnist_course import CourseError, live_progress
from mnist_course._atomic import atomic_write
from mnist_course.history import EpochTotals, finish_history, new_history
from mnist_course.numpy_cnn import (  # PARAM_SHAPES: the NumPy layout (F, C, KH, KW), (D_in, D_out)
    PARAM_SHAPES,
    MissingWeightsError,
    WeightsFileError,
    key_mismatch,
)
from mnist_course.summary_table import format_summary  # the table numpy_cnn.summary prints too

__all__ = [
    "PARAM_SHAPES",
    "CourseCNN",
    "IdxDataset",
    "MissingWeightsError",
    "ShapeError",
    "WeightsFileError",
    "count_params",
    "evaluate",
    "fit",
    "format_summary",
    "load_numpy_params",
    "load_state",
    "mnist_loaders",
    "numpy_params",
    "pick_device",
    "predict",
    "save_state",
    "saved_dataset",
    "summary",
    "summary_rows",
    "train_one_epoch",
]

_LINEAR = ("fc1", "fc2")
_ALL_LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2")


class ShapeError(CourseError, ValueError):
    """An input or a weight has the wrong shape; the message names both shapes."""


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class CourseCNN(nn.Module):
    """The course CNN (93,322 parameters).

    Input: normalised float32 images of shape (N, 1, 28, 28), as made by
    ``mnist_course.data.normalize`` or ``ToTensor()`` + ``Normalize((0.1307,), (0.3081,))``.
    Output: logits of shape (N, 10) (no softmax: ``F.cross_entropy`` applies it).

    Shapes through the network (N is the batch size)::

        conv1 + relu  (N, 32, 26, 26)  -> pool (N, 32, 13, 13)
        conv2 + relu  (N, 64, 11, 11)  -> pool (N, 64, 5, 5)
        conv3 + relu  (N, 64, 3, 3)    -> flatten (N, 576)
        fc1 + relu    (N, 64)
        fc2           (N, 10)

    The layers are the attributes ``conv1 conv2 conv3 fc1 fc2`` (the only ones with weights) plus
    ``pool`` (max pooling 2x2, stride 2). They appear in this order in ``state_dict()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.fc1 = nn.Linear(64 * 3 * 3, 64)
        self.fc2 = nn.Linear(64, 10)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) float -> logits (N, 10)."""
        check_input(x)
        x = self.pool(F.relu(self.conv1(x)))  # (N, 32, 13, 13)
        x = self.pool(F.relu(self.conv2(x)))  # (N, 64, 5, 5)
        x = F.relu(self.conv3(x))             # (N, 64, 3, 3)
        x = torch.flatten(x, 1)               # (N, 576), in (C, H, W) order like NumPy's reshape
        x = F.relu(self.fc1(x))               # (N, 64)
        return self.fc2(x)                    # (N, 10)


def check_input(x) -> None:
    """Raise :class:`ShapeError` unless x is a float tensor of shape (N, 1, 28, 28)."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"CourseCNN expects a torch.Tensor, got {type(x).__name__}; convert a "
                         "NumPy batch with torch.from_numpy(x)")
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        hint = ""
        if x.ndim == 3 and tuple(x.shape[1:]) == (28, 28):
            hint = "; add the channel axis with x.unsqueeze(1)"
        elif x.ndim == 2 and x.shape[1] == 784:
            hint = "; reshape flat images with x.view(-1, 1, 28, 28)"
        raise ShapeError(f"CourseCNN expects images of shape (N, 1, 28, 28), got "
                         f"{tuple(x.shape)}{hint}")
    if not torch.is_floating_point(x):
        raise ShapeError(f"CourseCNN expects normalised float images, got dtype {x.dtype}; "
                         "use mnist_course.data.normalize (or ToTensor + Normalize) first")


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (93,322 for :class:`CourseCNN`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Weights: NumPy dict <-> model
# --------------------------------------------------------------------------------------------

def _check_keys(params: Mapping) -> None:
    mismatch = key_mismatch(PARAM_SHAPES, params)
    if mismatch:
        raise ShapeError(f"the parameter dict does not match the course CNN ({mismatch}). "
                         f"Expected exactly the keys {' '.join(PARAM_SHAPES)}, as made by "
                         "numpy_cnn.init_cnn")


def load_numpy_params(model: CourseCNN, params: Mapping[str, np.ndarray]) -> CourseCNN:
    """Copy a NumPy parameter dict (as from ``numpy_cnn.init_cnn``) into ``model``; return it.

    params: ``conv{1,2,3}_w`` (F, C, KH, KW), ``conv{1,2,3}_b`` (F,), ``fc{1,2}_w`` (D_in, D_out),
    ``fc{1,2}_b`` (D_out,). Conv weights are copied as they are; linear weights are transposed to
    ``nn.Linear``'s (D_out, D_in). Values are cast to the model's dtype and stay on its device.
    Raises :class:`ShapeError` naming the key and both shapes when something does not fit.
    """
    _check_keys(params)
    for key, want in PARAM_SHAPES.items():
        got = tuple(np.shape(params[key]))
        if got != want:
            raise ShapeError(f"params[{key!r}] has shape {got}, expected {want}"
                             + (" (NumPy linear weights are (D_in, D_out))"
                                if got == want[::-1] else ""))
    with torch.no_grad():
        for layer in _ALL_LAYERS:
            module = getattr(model, layer)
            w = np.asarray(params[f"{layer}_w"])
            b = np.asarray(params[f"{layer}_b"])
            if layer in _LINEAR:
                w = w.T
            module.weight.copy_(torch.as_tensor(np.ascontiguousarray(w)))
            module.bias.copy_(torch.as_tensor(b))
    return model


def numpy_params(model: CourseCNN) -> dict[str, np.ndarray]:
    """The model's weights as a NumPy dict in the ``numpy_cnn`` layout (copies, on the CPU).

    The inverse of :func:`load_numpy_params`: the round trip is exact.
    """
    out = {}
    for layer in _ALL_LAYERS:
        module = getattr(model, layer)
        w = module.weight.detach().cpu().numpy()
        if layer in _LINEAR:
            w = w.T
        out[f"{layer}_w"] = np.ascontiguousarray(w).copy()
        out[f"{layer}_b"] = module.bias.detach().cpu().numpy().copy()
    return out


def _torch_load_problem(path: Path, exc: Exception) -> str:
    """Why torch.load could not read a file, in words."""
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"it cannot be read ({exc.strerror})"
    try:
        if path.stat().st_size == 0:
            return "it is empty"
    except OSError:
        pass
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        return ("it is not a plain file of tensors: it holds Python objects that a safe load "
                "(torch.load with weights_only=True) refuses to create, or it is damaged")
    if "zip archive" in text or "PytorchStreamReader" in text or isinstance(exc, EOFError):
        return "it is truncated or damaged (not a complete PyTorch file)"
    first = text.splitlines()[0][:120] if text else ""
    return f"it is damaged or not a PyTorch file ({type(exc).__name__}: {first})"


def load_state(path: str | os.PathLike, model: nn.Module, map_location="cpu", *,
               remedy: str | None = None) -> nn.Module:
    """Load a ``state_dict`` saved with ``torch.save(model.state_dict(), path)`` into ``model``;
    return the model.

    The file is read with ``torch.load(path, map_location=map_location, weights_only=True)``:
    tensors and plain containers only, so a file from someone else cannot run code when it is
    loaded. Raises :class:`MissingWeightsError` when the file does not exist, and
    :class:`WeightsFileError` when it is empty, truncated, damaged, holds anything but a dict of
    tensors (a training checkpoint, for instance), or does not fit ``model`` (missing or
    unexpected keys, wrong shapes). Each message names the file and says what to do; ``remedy``
    replaces that advice.
    """
    path = Path(path)
    fix = remedy or ("Save it again with torch.save(model.state_dict(), path) (as lesson 06 saves "
                     "course_cnn.pt), or ask whoever sent it for a new copy.")
    if not path.exists():
        raise MissingWeightsError(f"{path} does not exist. {fix}")
    if not path.is_file():
        raise WeightsFileError(f"{path} is not a file. {fix}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 (damage shows as RuntimeError, UnpicklingError, ...)
        if "deserialize object on" in str(exc):  # a CUDA file and no CUDA: not the file's fault
            raise CourseError(f"{path} holds tensors saved on a GPU that is not available "
                              "here: pass map_location='cpu'") from None
        raise WeightsFileError(f"{path} cannot be loaded: {_torch_load_problem(path, exc)}. "
                               f"{fix}") from None
    if not (isinstance(state, Mapping)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            keys = ", ".join(map(str, state))
            raise WeightsFileError(
                f"{path} holds a training checkpoint ({keys}), not a state_dict: load its "
                "'model' entry, e.g. model.load_state_dict(torch.load(path, "
                "weights_only=True)['model']).")
        raise WeightsFileError(f"{path} holds a {type(state).__name__}, not a state_dict (a "
                               f"dict of tensors). {fix}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        details = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        shown = "; ".join(d[:200].rstrip(".") for d in details[:3]) or str(exc)[:200]
        raise WeightsFileError(f"{path} does not fit {type(model).__name__}: {shown}. "
                               f"{fix}") from None
    return model


#: Where a saved state_dict records the dataset its network was trained on: a key of the root
#: module's entry in the state_dict's ``_metadata`` (the per-module dict that holds "version").
#: ``torch.load(weights_only=True)`` keeps it and ``load_state_dict`` ignores it, so such a file
#: loads like any other; a file without it is an MNIST network.
_DATASET_METADATA = "mnist_course.dataset"


def save_state(path: str | os.PathLike, model: nn.Module, *, dataset: str | None = None) -> Path:
    """Write ``model``'s ``state_dict``, on the CPU, to ``path`` atomically; return the path.

    The file loads anywhere with ``torch.load(path, weights_only=True)`` and
    ``model.load_state_dict(...)`` (or :func:`load_state`). ``dataset``: the dataset the network
    was trained on, other than MNIST (e.g. ``"fashion-mnist"``), recorded in the state_dict's
    ``_metadata`` for :func:`saved_dataset`; None or ``"mnist"`` records nothing.
    """
    path = Path(path)
    state = model.state_dict()
    cpu = OrderedDict((k, v.detach().cpu()) for k, v in state.items())  # loads anywhere
    cpu._metadata = OrderedDict((k, dict(v)) for k, v in getattr(state, "_metadata", {}).items())
    if dataset is not None and dataset != "mnist":
        cpu._metadata.setdefault("", {})[_DATASET_METADATA] = str(dataset)
    with atomic_write(path) as f:
        torch.save(cpu, f)
    return path


def saved_dataset(path: str | os.PathLike) -> str:
    """The dataset the state_dict in ``path`` was trained on, as :func:`save_state` recorded it:
    ``"mnist"`` when the file has no record (files written before the record existed, and every
    MNIST one). Read with ``weights_only=True``; a file that cannot be read raises
    :class:`WeightsFileError` (:func:`load_state` gives the full diagnosis)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (as in load_state)
        raise WeightsFileError(f"{path} cannot be loaded: {_torch_load_problem(path, exc)}. "
                               "Save it again with torch_cnn.save_state.") from None
    meta = getattr(state, "_metadata", None)
    root = meta.get("", {}) if isinstance(meta, Mapping) else {}
    record = root.get(_DATASET_METADATA, "mnist") if isinstance(root, Mapping) else "mnist"
    return str(record)


# --------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------

def summary_rows(model: CourseCNN) -> list[tuple[str, tuple[int, ...], int]]:
    """(layer, output shape without N, parameters) for each step of :class:`CourseCNN`.

    Traced on one blank image, so the shapes are the ones the model really produces.
    """
    p = next(model.parameters())
    x = torch.zeros(1, 1, 28, 28, dtype=p.dtype, device=p.device)
    rows = []

    def add(label, t, module=None):
        n = sum(q.numel() for q in module.parameters()) if module is not None else 0
        rows.append((label, tuple(t.shape[1:]), n))

    with torch.no_grad():
        for i in (1, 2, 3):
            conv = getattr(model, f"conv{i}")
            kh, kw = conv.kernel_size
            x = conv(x)
            add(f"conv{i} (Conv2d {kh}x{kw})", x, conv)
            x = F.relu(x)
            add(f"relu{i} (ReLU)", x)
            if i < 3:
                x = model.pool(x)
                add(f"pool{i} (MaxPool2d {model.pool.kernel_size})", x)
        x = torch.flatten(x, 1)
        add("flatten (Flatten)", x)
        x = model.fc1(x)
        add("fc1 (Linear)", x, model.fc1)
        x = F.relu(x)
        add("relu4 (ReLU)", x)
        x = model.fc2(x)
        add("fc2 (Linear)", x, model.fc2)
    return rows


def summary(model: CourseCNN, file=None) -> int:
    """Print a Keras-style table (layer, output shape, parameters); return the total (93,322).

    The table is ``summary_table.format_summary`` of :func:`summary_rows`, the same text
    ``numpy_cnn.summary`` prints for the NumPy weights.
    """
    total = count_params(model)
    print(format_summary(summary_rows(model), total), file=file or sys.stdout)
    return total


# --------------------------------------------------------------------------------------------
# Device and data
# --------------------------------------------------------------------------------------------

def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` to train on.

    - ``"auto"``: CUDA when PyTorch sees an NVIDIA GPU, else Apple's MPS (the GPU of an
      Apple-silicon Mac) when available, else the CPU.
    - ``"cpu"``, ``"cuda"`` (or ``"cuda:1"``), ``"mps"``: that device.

    Raises :class:`CourseError` when a GPU is asked for but not available.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = str(name).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise CourseError(f"device 'mps' was requested but PyTorch sees no Apple GPU "
                              f"(torch {torch.__version__}; MPS needs an Apple-silicon Mac and "
                              "macOS 12.3 or later). Use --device cpu or --device auto.")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CourseError(f"device {name!r} was requested but PyTorch sees no CUDA GPU "
                              f"(torch {torch.__version__}, built with CUDA "
                              f"{torch.version.cuda or 'no'}). Use --device cpu or --device auto, "
                              "or install a CUDA build of PyTorch on a machine with a GPU.")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise CourseError(f"device {name!r} is not understood: {exc}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CourseError(f"device {name!r} was requested but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise CourseError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'mps'")


def mnist_loaders(batch_size: int = 64, seed: int = 0, limit: int | None = None, root=None,
                  num_workers: int = 0, *, pin_memory: bool = False, test_batch_size: int = 1000,
                  dataset: str = "mnist"):
    """Training and test ``DataLoader`` s for MNIST: ``(train_loader, test_loader)``; for
    Fashion-MNIST with ``dataset="fashion-mnist"``, normalised with its own mean and std
    (0.2860, 0.3530).

    The images are loaded once with ``mnist_course.data.load_mnist`` (the course cache, so no
    download when it is there), normalised with ``data.normalize`` (exactly what
    ``ToTensor()`` + ``Normalize((0.1307,), (0.3081,))`` computes) and kept in a
    ``TensorDataset``: x float32 (N, 1, 28, 28), y int64 (N,). That is the same data as
    ``torchvision.datasets.MNIST(root, download=False, transform=...)`` (lesson 05 shows that
    dataset itself), but it skips a PIL image and a transform per example, which on a 2-core
    machine makes each epoch noticeably faster.

    - batch_size: training batch size; the test loader uses ``test_batch_size`` (no shuffling).
    - seed: the training order comes from a ``torch.Generator`` seeded with it, so two runs
      see the batches in the same order.
    - limit: train on the first ``limit`` training images only (the test set stays whole).
    - num_workers: 0 loads batches in the main process. With the data already in memory as
      tensors, worker processes only add start-up and copying cost, so 0 is fastest here.
    - pin_memory: set it when training on CUDA (page-locked memory copies to the GPU faster).
    """
    from torch.utils.data import DataLoader, TensorDataset

    from mnist_course import data

    if batch_size < 1:
        raise CourseError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise CourseError(f"limit must be at least 1 (or None for all 60,000), got {limit}")
    (x_train, y_train), (x_test, y_test) = data.load_mnist(root, dataset=dataset)
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    train = TensorDataset(torch.from_numpy(data.normalize(x_train, dataset=dataset)),
                          torch.from_numpy(y_train))
    test = TensorDataset(torch.from_numpy(data.normalize(x_test, dataset=dataset)),
                         torch.from_numpy(y_test))
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator,
                              num_workers=num_workers, pin_memory=pin_memory)
    test_loader = DataLoader(test, batch_size=test_batch_size, shuffle=False,
                             num_workers=num_workers, pin_memory=pin_memory)
    return train_loader, test_loader


class IdxDataset(torch.utils.data.Dataset):
    """MNIST from a pair of IDX files, the course's copy of lesson 07's exercise: both files read
    once (``data.read_idx``), the images normalised once. Items: (image float32 (1, 28, 28),
    label int)."""

    def __init__(self, images_path, labels_path) -> None:
        from mnist_course import data

        images, labels = data.read_idx(images_path), data.read_idx(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{len(images):,} images but {len(labels):,} labels")
        self.images = torch.from_numpy(data.normalize(images))            # (N, 1, 28, 28)
        self.labels = torch.from_numpy(labels.astype(np.int64))            # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------

def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _check_model_device(model: nn.Module, device: torch.device) -> None:
    params = next(model.parameters(), None)
    if params is not None and not _same_device(params.device, device):
        raise CourseError(f"the model is on {params.device} but device={str(device)!r}: move it "
                          f"first with model.to({str(device)!r}) (before making its optimiser), "
                          f"or pass device={str(params.device)!r}")


def _run_epoch(model: nn.Module, batches, loss_fn, device: torch.device, optimizer=None,
               scheduler=None, bar=None) -> tuple[EpochTotals, list[float]]:
    """One pass over ``batches``: the one loop behind train_one_epoch, evaluate and fit.

    With an optimizer: ``model.train()``, and per batch zero_grad, forward, loss, backward, step,
    then ``scheduler.step()`` when one is given. Without: ``model.eval()`` under
    ``torch.no_grad()``. ``loss_fn(logits, y)`` must return the batch MEAN (PyTorch's default
    reduction); :class:`~mnist_course.history.EpochTotals` weights it by the batch size, so the
    totals give the mean per sample. bar: the tqdm bar wrapping ``batches``, or None.

    The per-batch losses and correct counts stay on the device until the end of the pass and
    come back in one transfer (a GPU synchronises once per epoch, not once per step); they are
    then summed in Python floats, in order, exactly as ``total += loss.item() * len(y)`` would.
    Returns the totals and the loss of every batch.
    """
    training = optimizer is not None
    losses, corrects, sizes = [], [], []
    model.train(training)
    with torch.set_grad_enabled(training):
        for step, (x, y) in enumerate(batches):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            losses.append(loss.detach())
            corrects.append((logits.detach().argmax(dim=1) == y).sum())
            sizes.append(len(y))
            if bar is not None and step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    if not sizes:
        what = "training loader" if training else "evaluation loader"
        raise CourseError(f"the {what} is empty: there is nothing to "
                          f"{'train on' if training else 'score'}")
    step_loss = torch.stack(losses).float().cpu().tolist()
    totals = EpochTotals()
    for loss_value, correct, n in zip(step_loss, torch.stack(corrects).cpu().tolist(), sizes):
        totals.add(loss_value, correct, n)
    return totals, step_loss


def train_one_epoch(model: nn.Module, loader, optimizer, loss_fn=F.cross_entropy, device="cpu",
                    scheduler=None) -> float:
    """Train ``model`` for one pass over ``loader``; return the training loss, mean per sample.

    The package's version of lesson 06's exercise: ``model.train()``, then for each batch
    ``(x, y)`` (x (B, 1, 28, 28) float, y (B,) int64, both moved to ``device``): zero the
    gradients, forward, ``loss_fn(logits, y)`` (a batch mean), backward, ``optimizer.step()``,
    and ``scheduler.step()`` after every optimiser step when a scheduler is given (as
    ``OneCycleLR`` expects). The result weights each batch by its size, so a short last batch
    counts for what it holds. The model must already be on ``device``.
    """
    device = torch.device(device)
    _check_model_device(model, device)
    totals, _ = _run_epoch(model, loader, loss_fn, device, optimizer, scheduler)
    return totals.mean_loss


def evaluate(model: nn.Module, loader, loss_fn=F.cross_entropy, device="cpu"
             ) -> tuple[float, float]:
    """``(mean_loss, accuracy)`` of ``model`` over every batch of ``loader``, both per sample.

    Runs in ``eval()`` mode under ``torch.no_grad()`` and restores the model's previous mode
    afterwards. The model must already be on ``device``. accuracy is a float in [0, 1].
    """
    device = torch.device(device)
    _check_model_device(model, device)
    was_training = model.training
    try:
        totals, _ = _run_epoch(model, loader, loss_fn, device)
    finally:
        model.train(was_training)
    return totals.mean_loss, totals.accuracy


def predict(model: nn.Module, x, device=None, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes, int64 of shape (N,), for images ``x``.

    x: normalised float (N, 1, 28, 28), as a NumPy array or a tensor; uint8 images (N, 28, 28)
    straight from ``load_mnist`` are normalised first. Computed in batches, in ``eval()`` mode.
    """
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        from mnist_course import data

        x = data.normalize(x)
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        raise ShapeError("predict() got a uint8 tensor: pass normalised float images, or the "
                         "uint8 NumPy array from load_mnist")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device, dtype=torch.float32)
            out.append(model(xb).argmax(dim=1).cpu())
    model.train(was_training)
    if not out:
        return np.zeros(0, dtype=np.int64)
    return torch.cat(out).numpy().astype(np.int64)


def fit(model: nn.Module, train_loader, eval_loader, *, epochs: int, optimizer=None,
        scheduler=None, device="cpu", progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None, eval_name: str = "val") -> dict:
    """Train ``model`` with cross-entropy for ``epochs`` epochs; evaluate after each one.

    Each epoch is :func:`train_one_epoch` over ``train_loader`` (behind a progress bar) followed
    by :func:`evaluate` on ``eval_loader``. Loaders may be any iterables of ``(x, y)`` batches
    that have a length.

    - optimizer: any ``torch.optim`` optimiser over ``model.parameters()``; None means
      ``Adam(lr=1e-3)``.
    - scheduler: optional learning-rate scheduler, stepped after every optimiser step (as
      ``OneCycleLR`` expects).
    - device: ``"cpu"``, ``"cuda"``, ``"mps"`` or a ``torch.device``; the model is moved there
      (do it yourself before making the optimiser when you pass one), and so is each batch.
    - progress: a tqdm bar per epoch on stderr.
    - on_epoch(row): called with each epoch's row as soon as it is done.
    - eval_name: what ``eval_loader`` holds, used in the keys: ``"val"`` (default) for a
      validation split, ``"test"`` only for the final test evaluation.

    Returns the history dict (see ``mnist_course.history``): ``epochs``, one row per epoch with
    ``epoch``, ``loss`` (training loss, mean per sample over the epoch), ``train_acc`` (accuracy
    on the training batches while training), ``<eval_name>_loss``, ``<eval_name>_acc``, ``lr``
    (learning rate of the first parameter group at the start of the epoch) and ``seconds``
    (training time of the epoch, evaluation excluded); ``step_loss`` (the loss of every step);
    ``<eval_name>_accuracy`` (last epoch); ``train_seconds`` (sum of the epoch times) and
    ``seconds_per_epoch``.
    """
    if int(epochs) != epochs or epochs < 1:
        raise CourseError(f"epochs must be at least 1, got {epochs}")
    if not (isinstance(eval_name, str) and eval_name.isidentifier()) or eval_name == "train":
        raise CourseError(f"eval_name must be a short name such as 'val' or 'test' (not "
                          f"'train'), got {eval_name!r}")
    device = torch.device(device)
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = new_history()
    for epoch in range(1, epochs + 1):
        lr = float(optimizer.param_groups[0]["lr"])
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=True, ncols=80,
                   mininterval=0.5, file=sys.stderr, unit="batch",
                   disable=not (progress and live_progress()))
        start = time.perf_counter()
        try:
            totals, step_loss = _run_epoch(model, bar, F.cross_entropy, device, optimizer,
                                           scheduler, bar=bar if progress else None)
            seconds = time.perf_counter() - start  # _run_epoch has waited for the GPU
        finally:
            bar.close()
        eval_loss, eval_acc = evaluate(model, eval_loader, F.cross_entropy, device)
        row = {
            "epoch": epoch,
            "loss": totals.mean_loss,
            "train_acc": totals.accuracy,
            f"{eval_name}_loss": eval_loss,
            f"{eval_name}_acc": eval_acc,
            "lr": lr,
            "seconds": seconds,
        }
        history["step_loss"].extend(step_loss)
        history["epochs"].append(row)
        if on_epoch is not None:
            on_epoch(row)
    return finish_history(history, eval_name)
