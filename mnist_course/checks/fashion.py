"""Checks of lesson 12, Fashion-MNIST on your own: the preprocessing, the confused pairs, and
your trained model judged on the test set.

``check_fashion_model`` does not read your code: it takes the trained model and the function
that prepares its input, runs them on the 10,000 Fashion-MNIST test images and measures the
accuracy. When it is below the bar, it measures again with one thing changed at a time (the
model in evaluation mode, another preprocessing) to name the likely cause.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

from mnist_course import data
from mnist_course.checks._core import _Check, _describe

__all__ = ["check_confused_pairs", "check_fashion_model", "check_fashion_preprocess"]

#: The accuracy on the Fashion-MNIST test set that check_fashion_model asks for.
FASHION_BAR = 0.90
_FASHION = data.DATASETS["fashion-mnist"]
_SIG_PRE = "preprocess(images) -> float32 tensor (N, 1, 28, 28)"
_SIG_PAIRS = "confused_pairs(cm, k=5) -> [(i, j, count), ...]"
_CHUNK = 1000            # test images per forward pass


def _normalised(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float64 ``(x / 255 - mean) / std``."""
    return (images[:, None].astype(np.float64) / 255 - mean) / std


def _as_numpy(value, chk: _Check, what: str) -> np.ndarray:
    """A tensor or an array as a NumPy array; anything else fails with what it was."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    chk.fail(f"{what} should be a float32 tensor of shape (N, 1, 28, 28); it is "
             f"{_describe(value)}.")
    return value  # pragma: no cover (fail raises)


# --------------------------------------------------------------------------------------------
# Exercise 1: Fashion-MNIST's own normalisation
# --------------------------------------------------------------------------------------------

def _preprocess_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(12)
    batch = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    shirt = np.zeros((1, 28, 28), np.uint8)
    shirt[0, 4:24, 8:20] = 180                                   # a grey body
    shirt[0, 4:12, 3:25] = 120                                   # sleeves, darker
    extremes = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    return [("5 images of random pixels", batch),
            ("one image alone, shape (1, 28, 28)", shirt),
            ("an all-black and an all-white image", extremes)]


def _preprocess_mistakes(images: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """(what a classic mistake returns, the hint that names it) for check_fashion_preprocess."""
    mean, std = _FASHION.mean, _FASHION.std
    x = images[:, None].astype(np.float64)
    batch_stats = (x - x.mean()) / x.std() if x.std() > 0 else x
    return [
        (_normalised(images, data.MEAN, data.STD),
         (f"MNIST's normalisation ((x / 255 - {data.MEAN}) / {data.STD}): Fashion-MNIST's "
          f"pixels have their own mean {mean:.4f} and standard deviation {std:.4f} "
          "(data.get_dataset('fashion-mnist').mean and .std).")),
        (x / 255, ("scaled to [0, 1] but not normalised: subtract the mean 0.2860, then "
                   "divide by the standard deviation 0.3530.")),
        ((x - mean) / std, ("not divided by 255 first: the mean and std are those of pixels "
                            "scaled to [0, 1].")),
        (_normalised(images, std, mean),
         f"the mean and the standard deviation are swapped: (x / 255 - {mean:.4f}) / {std:.4f}."),
        ((x / 255 - mean) * std, f"multiplied by the standard deviation: divide by {std:.4f}."),
        (batch_stats, ("normalised with this batch's own mean and std: use the training set's "
                       "constants, the same for every image, so that an image gives the same "
                       "input alone or in any batch.")),
    ]


def check_fashion_preprocess(fn) -> None:
    """Check ``preprocess(images)``: uint8 images (N, 28, 28), as ``data.load_mnist`` gives them,
    to the network's input, a float32 tensor (N, 1, 28, 28) equal to ``(x / 255 - 0.2860) /
    0.3530``, Fashion-MNIST's own mean and standard deviation. The images are left unchanged."""
    cases = _preprocess_cases()
    chk = _Check("check_fashion_preprocess", len(cases))
    mean, std = _FASHION.mean, _FASHION.std
    for i, (desc, images) in enumerate(cases, 1):
        n = len(images)
        chk.case(i, desc, n)
        given = images.copy()
        out = chk.call(fn, given, signature=_SIG_PRE)
        chk.unchanged(images, given, "preprocess changed the images it was given: compute new "
                                     "values (x / 255 creates a new array) and leave the input "
                                     "as it is.")
        got = _as_numpy(out, chk, "preprocess(images)")
        if not isinstance(out, torch.Tensor):
            chk.fail(f"preprocess returned a NumPy array {got.shape}; return a torch tensor "
                     "(torch.from_numpy(...)), which the model and a TensorDataset take.")
        if got.dtype.kind in "iub":
            chk.fail(f"preprocess returned integers ({got.dtype}): the network needs floats, "
                     "scaled by 1/255 and normalised.")
        ref = _normalised(images, mean, std)
        if got.shape != ref.shape:
            hints = {(n, 28, 28): "the channel axis is missing: (N, 28, 28) -> (N, 1, 28, 28), "
                                  "e.g. x[:, None] or x.unsqueeze(1).",
                     (n, 784): "the images are flattened: the CNN takes (N, 1, 28, 28)."}
            chk.fail(f"preprocess returned shape {tuple(got.shape)}; expected {ref.shape}.",
                     f"Likely bug: {hints[got.shape]}" if got.shape in hints else None)
        if got.dtype != np.float32:
            chk.fail(f"preprocess returned {out.dtype}; the model's weights are float32, so "
                     "return float32 (.float() on a tensor, .astype(np.float32) on an array).")
        chk.compare("preprocess(images)", got, ref, alternatives=_preprocess_mistakes(images),
                    fallback_hint=(f"compute (x / 255 - {mean:.4f}) / {std:.4f} with x as float32, "
                                   "then add the channel axis."))
    chk.passed(detail="Fashion-MNIST's mean 0.2860 and std 0.3530")


# --------------------------------------------------------------------------------------------
# Exercise 2: which classes are mistaken for each other
# --------------------------------------------------------------------------------------------

def _reference_pairs(cm: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    c = cm.shape[0]
    pairs = [(i, j, int(cm[i, j] + cm[j, i])) for i in range(c) for j in range(i + 1, c)]
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs[:k]


def _pair_cases() -> list[tuple[str, np.ndarray, int]]:
    small = np.array([[50, 3, 0],
                      [9, 40, 2],
                      [1, 5, 60]])
    rng = np.random.default_rng(3)
    ten = rng.integers(0, 6, size=(10, 10))
    ten[6, 0], ten[0, 6] = 60, 35            # shirt -> T-shirt more often than the reverse
    ten[4, 2], ten[2, 4] = 12, 40            # coat and pullover
    ten[6, 2], ten[2, 6] = 20, 31            # a tie with the pair below: order by (i, j)
    ten[6, 4], ten[4, 6] = 50, 1
    np.fill_diagonal(ten, 900)
    one_way = np.diag([30, 30, 30, 30]) + np.triu(np.arange(16).reshape(4, 4), 1)
    return [("a 3x3 matrix, k=2", small, 2),
            ("a 10x10 matrix with a tie, k=5", ten, 5),
            ("a 4x4 matrix whose mistakes all lie above the diagonal, k=3", one_way, 3)]


def _as_triples(result, chk: _Check, k: int) -> list[tuple[int, int, int]]:
    if isinstance(result, np.ndarray):
        result = result.tolist()
    if not isinstance(result, (list, tuple)):
        chk.fail(f"confused_pairs should return a list of (i, j, count) triples; it returned "
                 f"{_describe(result)}.")
    if len(result) != k:
        chk.fail(f"confused_pairs returned {len(result)} pairs; expected k = {k}.")
    triples = []
    for item in result:
        item = item.tolist() if isinstance(item, np.ndarray) else item
        if not (isinstance(item, (list, tuple)) and len(item) == 3 and all(
                isinstance(v, (numbers.Integral, np.integer)) or (
                    isinstance(v, numbers.Real) and float(v).is_integer()) for v in item)):
            chk.fail(f"each pair should be a triple of whole numbers (i, j, count); one is "
                     f"{item!r}.")
        triples.append(tuple(int(v) for v in item))
    return triples


def check_confused_pairs(fn) -> None:
    """Check ``confused_pairs(cm, k=5)``: the k pairs of different classes most often mistaken
    for each other in the confusion matrix ``cm`` (rows true, columns predicted), as triples
    ``(i, j, count)`` with ``i < j`` and ``count = cm[i, j] + cm[j, i]``, largest count first,
    ties in order of ``(i, j)``. ``cm`` is left unchanged."""
    cases = _pair_cases()
    chk = _Check("check_confused_pairs", len(cases))
    for n_case, (desc, cm, k) in enumerate(cases, 1):
        chk.case(n_case, desc)
        given = cm.copy()
        result = chk.call(fn, given, k=k, signature=_SIG_PAIRS)
        chk.unchanged(cm, given, "confused_pairs changed cm (set its diagonal to 0 in place?): "
                                 "work on a copy, e.g. cm.copy() or cm + cm.T.")
        got = _as_triples(result, chk, k)
        ref = _reference_pairs(cm, k)
        if got == ref:
            continue
        c = cm.shape[0]
        hint = None
        if any(i == j for i, j, _ in got):
            hint = ("a pair (i, i) is listed: the diagonal counts the right answers; leave it "
                    "out.")
        elif any(i > j for i, j, _ in got):
            hint = "list each pair once, with i < j, and count both directions into it."
        else:
            one_way = sorted(((i, j, int(cm[i, j])) for i in range(c) for j in range(c)
                              if i != j), key=lambda p: (-p[2], p[0], p[1]))
            got_set = {(i, j) for i, j, _ in got}
            if all(cnt == int(cm[i, j]) for i, j, cnt in got) and any(
                    cnt != int(cm[i, j] + cm[j, i]) for i, j, cnt in got):
                hint = ("the counts are cm[i, j] alone: add the mistakes the other way round, "
                        "cm[i, j] + cm[j, i] (a shirt read as a T-shirt and a T-shirt read as "
                        "a shirt are one confusion).")
            by_one_way: list[tuple[int, int]] = []
            for i, j, _ in one_way:
                if (min(i, j), max(i, j)) not in by_one_way:
                    by_one_way.append((min(i, j), max(i, j)))
            if hint is None and got_set == set(by_one_way[:k]) and \
                    got_set != {(i, j) for i, j, _ in ref}:
                hint = "the pairs were chosen by one direction only: rank by cm[i, j] + cm[j, i]."
            elif hint is None and sorted(got, key=lambda p: (-p[2], p[0], p[1])) == ref:
                hint = ("the right pairs in the wrong order: largest count first, and ties in "
                        "order of (i, j).")
            elif hint is None and sorted(got) == sorted(_reference_pairs(cm, c * c)[-k:]):
                hint = "the smallest counts: sort from the largest down."
        chk.fail(f"got {got}", f"expected {ref}", f"Likely bug: {hint}" if hint else None)
    chk.passed(show_error=False)


# --------------------------------------------------------------------------------------------
# The open exercise: a trained model, with its preprocessing, on the test set
# --------------------------------------------------------------------------------------------

def _model_place(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, (p.dtype if p.is_floating_point() else torch.float32)
    return torch.device("cpu"), torch.float32


def _inputs(preprocess, images: np.ndarray, chk: _Check) -> torch.Tensor:
    """preprocess over the images in chunks, as one float tensor on the CPU."""
    parts = []
    for start in range(0, len(images), _CHUNK):
        out = chk.call(preprocess, images[start:start + _CHUNK].copy(), signature=_SIG_PRE)
        if not isinstance(out, (torch.Tensor, np.ndarray)):
            chk.fail(f"preprocess should return a tensor (or NumPy array) of model inputs; it "
                     f"returned {_describe(out)}.")
        t = torch.as_tensor(out).detach().cpu()
        if not t.is_floating_point():
            chk.fail(f"preprocess returned {t.dtype} values: the network needs floats, the way "
                     "its training images were prepared (scaled by 1/255 and normalised).")
        if len(t) != len(images[start:start + _CHUNK]):
            chk.fail(f"preprocess turned {min(_CHUNK, len(images) - start)} images into "
                     f"{len(t)} inputs (shape {tuple(t.shape)}): keep one input per image, "
                     "along the first axis.")
        parts.append(t)
    return torch.cat(parts)


def _forward_explained(exc: Exception, x: torch.Tensor) -> str | None:
    shape = tuple(x.shape)
    if x.ndim == 3:
        return (f"preprocess gives {shape}, without the channel axis: a Conv2d takes "
                "(N, 1, 28, 28).")
    if x.ndim == 2:
        return f"preprocess gives flat vectors {shape}: a CNN takes (N, 1, 28, 28)."
    if x.dtype == torch.float64:
        return "preprocess gives float64; the model's weights are float32: return float32."
    return None


def _predict(model: nn.Module, x: torch.Tensor, train_mode: bool, chk: _Check) -> np.ndarray:
    """The class with the largest output for every input, with the model in the mode asked;
    the model's weights, buffers and mode are restored afterwards."""
    device, dtype = _model_place(model)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    preds = []
    try:
        model.train(train_mode)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)                                  # dropout's draws, if any
            for start in range(0, len(x), _CHUNK):
                xb = x[start:start + _CHUNK].to(device=device, dtype=dtype)
                out = chk.call(model, xb, explain=lambda exc, xb=xb: _forward_explained(exc, xb))
                if not isinstance(out, torch.Tensor):
                    chk.fail(f"model(x) returned {_describe(out)}; it should return one tensor "
                             "of logits, shape (N, 10).")
                if out.shape != (len(xb), 10):
                    if out.ndim == 1 and len(out) == len(xb):
                        hint = ("one number per image: return the 10 logits (no argmax inside "
                                "the model; the check takes the largest).")
                    elif out.ndim == 2 and len(out) == len(xb):
                        hint = (f"{out.shape[1]} outputs per image: the last layer needs 10, "
                                "one per class.")
                    else:
                        hint = "the batch axis should come first: (N, 10)."
                    chk.fail(f"model(x) has shape {tuple(out.shape)} for {len(xb)} images; "
                             f"expected ({len(xb)}, 10).", f"Likely bug: {hint}")
                if not torch.isfinite(out).all():
                    chk.fail("model(x) contains inf or nan: the training diverged (too large a "
                             "learning rate?) or the input is not what it was trained on.")
                preds.append(out.argmax(dim=1).cpu())
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    return torch.cat(preds).numpy()


def _alternatives(images: np.ndarray, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Other ways to prepare the images, shaped like the learner's inputs."""
    x = torch.from_numpy(images).float()
    ways = {
        f"Fashion-MNIST's normalisation, (x / 255 - {_FASHION.mean:.4f}) / {_FASHION.std:.4f}":
            (x / 255 - _FASHION.mean) / _FASHION.std,
        f"MNIST's normalisation, (x / 255 - {data.MEAN}) / {data.STD}":
            (x / 255 - data.MEAN) / data.STD,
        "pixels scaled to [0, 1], x / 255": x / 255,
        "the raw pixel values 0 to 255": x,
    }
    if like.numel() != x.numel():
        return {}
    return {name: t.reshape(like.shape) for name, t in ways.items()}


def check_fashion_model(model, preprocess) -> float:
    """Check a trained Fashion-MNIST classifier by measuring it: ``preprocess`` prepares the
    10,000 test images (uint8 (N, 28, 28), as ``data.load_mnist(dataset="fashion-mnist")``
    gives them) and ``model``, as it is handed over (in its current mode, on its own device),
    must read at least 90% of them. Returns the test accuracy; the model is left as it was.

    Below the bar, the check names the likely cause: a model left in training mode, a
    preprocessing unlike the one it was trained with (MNIST's constants, no normalisation),
    a model that answers one class, or simply too little training.
    """
    chk = _Check("check_fashion_model", 1)
    if not isinstance(model, nn.Module):
        chk.fail(f"model should be your trained network, a torch nn.Module; it is "
                 f"{_describe(model)}.")
    if not callable(preprocess):
        chk.fail(f"preprocess should be a function from uint8 images (N, 28, 28) to the "
                 f"model's input; it is {_describe(preprocess)}.")
    _, (images, labels) = data.load_mnist(dataset="fashion-mnist")

    probe = _inputs(preprocess, images[:8], chk)
    alone = _inputs(preprocess, images[:1], chk)
    if alone.shape[1:] != probe.shape[1:] or not torch.allclose(alone[0], probe[0], atol=1e-5):
        chk.fail("preprocess gives an image different numbers alone and in a batch: it "
                 "normalises with the batch's own statistics? Use fixed constants (the "
                 "training set's), the same for every image.")
    _predict(model, probe, model.training, chk)                # shapes and outputs, quickly

    x = _inputs(preprocess, images, chk)
    acc = float(np.mean(_predict(model, x, model.training, chk) == labels))
    if acc >= FASHION_BAR:
        note = ("; note: the model was handed over in training mode, call model.eval() first"
                if model.training else "")
        print(f"✓ check_fashion_model: test accuracy {acc:.4f} on {len(labels):,} Fashion-MNIST "
              f"test images (the bar is {FASHION_BAR:.2f}){note}")
        return acc

    head = (f"the model reads {acc:.4f} of the {len(labels):,} test images; the bar is "
            f"{FASHION_BAR:.2f}.")
    mode = model.training
    if model.training:
        acc_eval = float(np.mean(_predict(model, x, False, chk) == labels))
        if acc_eval >= FASHION_BAR or acc_eval >= acc + 0.02:
            chk.fail(head, f"Likely bug: the model is in training mode (model.training is "
                           f"True): dropout still drops units and batch norm normalises with "
                           f"each batch's statistics. Call model.eval() before handing it over; "
                           f"in evaluation mode it reads {acc_eval:.4f}.")
        acc, mode = max(acc, acc_eval), (acc_eval < acc)
    found = []
    for name, alt in _alternatives(images, x).items():
        if torch.allclose(alt, x.to(alt.dtype), atol=1e-4):
            continue
        found.append((float(np.mean(_predict(model, alt, mode, chk) == labels)), name))
    mnist_like = _alternatives(images[:8], probe)
    uses_mnist = any("MNIST's normalisation" in n and not n.startswith("Fashion") and
                     torch.allclose(t, probe.to(t.dtype), atol=1e-4)
                     for n, t in mnist_like.items())
    if found:
        best, name = max(found)
        if best >= FASHION_BAR or best >= acc + 0.05:
            mnist = (f" Yours uses MNIST's constants ({data.MEAN}, {data.STD}); Fashion-MNIST's "
                     f"mean and std are {_FASHION.mean:.4f} and {_FASHION.std:.4f}."
                     if uses_mnist else "")
            chk.fail(head, f"Likely bug: the preprocessing does not match the training: your "
                           f"preprocess gives inputs of mean {float(x.mean()):.3f} and std "
                           f"{float(x.std()):.3f}; with {name} instead, the same model reads "
                           f"{best:.4f}.{mnist} Prepare test images exactly as the training "
                           "images were: pass both through the same function.")
    preds = _predict(model, x, mode, chk)
    counts = np.bincount(preds, minlength=10)
    top = int(counts.argmax())
    if counts[top] > 0.5 * len(preds):
        chk.fail(head, f"Likely bug: it answers class {top} ({_FASHION.classes[top]}) for "
                       f"{counts[top] / len(preds):.0%} of the images: an untrained model, or "
                       "one whose input is far from what it was trained on (check preprocess).")
    chk.fail(head, "The model and its preprocessing work together; it needs a better recipe or "
                   "more training. Judge each change on the validation images, not with this "
                   "check: every run of it reads the test set.")
    return acc  # pragma: no cover (fail raises)
