"""Checks of the PyTorch lessons: the course CNN written as an ``nn.Module``."""

from __future__ import annotations

import numpy as np
import torch

from mnist_course import _oracle
from mnist_course.checks._core import _Check, _describe, _fmt_shape
from mnist_course.checks.cnn import _POOL_MISTAKES

__all__ = ["check_my_cnn"]

# The layers of the course CNN in the order of the forward pass: name -> (weight shape in
# torch's layout, the constructor that makes it). Linear weights are (D_out, D_in) in torch.
_LAYERS = {
    name: (_oracle.CNN_SHAPES[f"{name}_w"] if name.startswith("conv")
           else _oracle.CNN_SHAPES[f"{name}_w"][::-1], make)
    for name, make in (("conv1", "nn.Conv2d(1, 32, kernel_size=3)"),
                       ("conv2", "nn.Conv2d(32, 64, kernel_size=3)"),
                       ("conv3", "nn.Conv2d(64, 64, kernel_size=3)"),
                       ("fc1", "nn.Linear(576, 64)"),
                       ("fc2", "nn.Linear(64, 10)"))
}

# What each layer receives for one image, and what produces it.
_INPUTS = {
    "conv1": ((1, 28, 28), "the images"),
    "conv2": ((32, 13, 13), "conv1 -> ReLU -> max pool 2"),
    "conv3": ((64, 5, 5), "conv2 -> ReLU -> max pool 2"),
    "fc1": ((576,), "conv3 -> ReLU -> torch.flatten(x, 1), no pooling"),
    "fc2": ((64,), "fc1 -> ReLU"),
}

_FORWARD = ("x = F.max_pool2d(F.relu(self.conv1(x)), 2); x = F.max_pool2d(F.relu(self.conv2(x)), "
            "2); x = F.relu(self.conv3(x)); x = torch.flatten(x, 1); x = F.relu(self.fc1(x)); "
            "return self.fc2(x)")


def _explain_init(exc: Exception) -> str | None:
    if "Module.__init__()" in str(exc):
        return "call super().__init__() first in __init__, before assigning any layer."
    return None


def _layer_problem(model) -> str | None:
    """The first layer that is missing or has the wrong shape, as a message; else None."""
    for name, (want, make) in _LAYERS.items():
        layer = getattr(model, name, None)
        if not isinstance(layer, torch.nn.Module):
            what = "no layer attribute" if layer is None else f"a {type(layer).__name__} as"
            return (f"MyCNN has {what} {name!r}: create it in __init__ as self.{name} = {make}. "
                    f"The weights are loaded by these names: {', '.join(_LAYERS)}.")
        weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
        if not isinstance(weight, torch.Tensor):
            return f"self.{name} is a {type(layer).__name__} without a weight: use {make}."
        if not isinstance(bias, torch.Tensor):
            return f"self.{name} has no bias: keep bias=True (the default) in {make}."
        got = tuple(weight.shape)
        if got == want and tuple(bias.shape) == (want[0],):
            continue
        head = f"self.{name}.weight has shape {_fmt_shape(got)}; {make} has {_fmt_shape(want)}."
        return f"{head} {_shape_hint(name, got, want)}"
    return None


def _shape_hint(name: str, got: tuple, want: tuple) -> str:
    """Name the likely mistake behind a layer of the wrong shape."""
    if len(want) == 4:
        if len(got) != 4:
            return f"self.{name} should be a convolution, {_LAYERS[name][1]}."
        if got[2:] != want[2:]:
            return "Every convolution has kernel_size=3."
        if got[:2] == want[1::-1]:
            return "In and out channels are swapped: nn.Conv2d(in_channels, out_channels, 3)."
        if got[1] != want[1]:
            return (f"It takes {got[1]} input channels, but what comes in has {want[1]} "
                    f"({_INPUTS[name][1]}).")
        return f"It should give {want[0]} output channels, not {got[0]}."
    if len(got) != 2:
        return f"self.{name} should be a linear layer, {_LAYERS[name][1]}."
    if got == want[::-1]:
        return "In and out features are swapped: nn.Linear(in_features, out_features)."
    if got[1] != want[1]:
        if name == "fc1":
            before_conv3 = "the size of conv2's pooled output, before conv3, is used"
            mistakes = [*_POOL_MISTAKES, (64 * 5 * 5, before_conv3)]
            why = next((f" ({got[1]} is what you get when {what})"
                        for size, what in mistakes if size == got[1]), "")
            return (f"It takes {got[1]} features; conv3's output (N, 64, 3, 3) flattens to "
                    f"64 * 3 * 3 = 576{why}.")
        return f"It takes {got[1]} features; fc1 gives {want[1]}."
    return f"It should give {want[0]} features, not {got[0]}."


def _load(model, params: dict) -> None:
    """Copy the NumPy parameters (linear weights (D_in, D_out)) into the model's layers."""
    with torch.no_grad():
        for name in _LAYERS:
            layer = getattr(model, name)
            w = params[f"{name}_w"]
            w = w if name.startswith("conv") else w.T
            layer.weight.copy_(torch.as_tensor(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.as_tensor(params[f"{name}_b"]))


def _forward_problem(seen: dict, n: int, raised: bool) -> str | None:
    """The first layer that received a wrong shape (or was never called), as a hint."""
    previous = "the input"
    for name, (per_image, source) in _INPUTS.items():
        want = (n, *per_image)
        if name not in seen:
            if raised:
                return (f"the error comes before self.{name} is reached, after {previous}: "
                        f"follow the shapes, {_FORWARD}.")
            return f"forward never calls self.{name}: {_FORWARD}."
        got = seen[name]
        if got != want:
            return f"self.{name} receives {_fmt_shape(got)}, expected {_fmt_shape(want)}: " \
                   f"{_input_hint(name, got, want)}"
        previous = f"self.{name}"
    return None


def _input_hint(name: str, got: tuple, want: tuple) -> str:
    source = _INPUTS[name][1]
    if name == "fc1":
        if len(got) == 4:
            return "x is not flattened before fc1: torch.flatten(x, 1) turns (N, 64, 3, 3) " \
                   "into (N, 576)."
        if len(got) == 1:
            return "torch.flatten(x) flattens the batch too: torch.flatten(x, 1) keeps one " \
                   "row per image."
        if len(got) == 2 and got[1] == 64:
            return "there is a pooling after conv3: there should be none (conv3 -> ReLU -> " \
                   "flatten gives 64 * 3 * 3 = 576)."
        for size, what in _POOL_MISTAKES:
            if len(got) == 2 and got[1] == size:
                return f"{what} ({size} = 64 * {int(np.sqrt(size // 64))}**2 features)."
        return f"it should get {source}."
    if len(got) == len(want) and got[:2] == want[:2] and got[2] > want[2]:
        return f"a max pooling is missing before {name}: it should get {source}."
    if len(got) == len(want) and got[:2] == want[:2] and got[2] < want[2]:
        return f"one pooling too many before {name}: it should get {source}."
    return f"it should get {source}."


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_my_cnn(cls) -> None:
    """Check an ``nn.Module`` class for the course CNN: ``cls()`` must have the layers conv1,
    conv2, conv3 (``nn.Conv2d``) and fc1, fc2 (``nn.Linear``) of the course shapes, and with
    the same weights its logits (N, 10) must equal those of the course CNN computed by
    ``torch.nn.functional`` in float64.

    A missing layer, wrong channel or feature counts, a wrong flatten size and a forward pass
    that raises are reported with the layer and the shapes, not as a traceback.
    """
    n = 4
    chk = _Check("check_my_cnn", 1)
    chk.case(1, f"{getattr(cls, '__name__', 'cls')}() with the course CNN's weights (seed 3), "
                f"x ({n}, 1, 28, 28) float32", n)
    model = chk.call(cls, signature="MyCNN() with no arguments", explain=_explain_init)
    if not isinstance(model, torch.nn.Module):
        chk.fail(f"cls() should build an nn.Module; it built {_describe(model)}.",
                 "Likely bug: class MyCNN(nn.Module): ... with super().__init__() in __init__.")
    problem = _layer_problem(model)
    if problem:
        chk.fail(problem)
    params = _oracle.init_cnn_params(seed=3)
    _load(model, params)
    x = np.random.default_rng(3).standard_normal((n, 1, 28, 28)).astype(np.float32)
    seen = {}

    def record(name):
        def hook(_module, args):
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, tuple(args[0].shape))
        return hook

    handles = [getattr(model, name).register_forward_pre_hook(record(name)) for name in _LAYERS]
    device = model.conv1.weight.device
    def forward(images):
        return model(images)

    forward.__name__ = f"{type(model).__name__}.forward"
    try:
        model.eval()
        with torch.no_grad():
            out = chk.call(forward, torch.from_numpy(x).to(device),
                           explain=lambda exc: _forward_problem(seen, n, raised=True))
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor):
        chk.fail(f"MyCNN's forward should return the logits, a tensor (N, 10); it returned "
                 f"{_describe(out)}.", "Likely bug: a missing `return`?" if out is None else None)
    problem = _forward_problem(seen, n, raised=False)
    if tuple(out.shape) != (n, 10):
        chk.fail(f"{n} images gave logits of shape {_fmt_shape(out.shape)}; expected "
                 f"({n}, 10).", f"Likely bug: {problem}" if problem else None)
    got = out.detach().cpu().numpy()
    params64 = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    x64 = x.astype(np.float64)
    ref = _oracle.cnn_logits(params64, x64)
    alternatives = [
        (lambda: np.maximum(ref, 0), ("all the logits are >= 0: there is a ReLU after fc2, the "
                                     "last layer; return self.fc2(x) as it is.")),
        (lambda: _softmax(ref), ("forward returns probabilities (a softmax): return the logits; "
                                "F.cross_entropy applies the log-softmax itself.")),
        (lambda: ref - np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1, keepdims=True))
         - ref.max(1, keepdims=True),
         ("forward returns log-probabilities (log_softmax): return the logits; "
         "F.cross_entropy applies the log-softmax itself.")),
        (lambda: _oracle.cnn_logits(params64, x64, flatten="hwc"),
         "the flatten order: torch.flatten(x, 1) on (N, 64, 3, 3), no permute."),
    ]
    for layer in _oracle.CNN_RELUS:
        alternatives.append((
            lambda layer=layer: _oracle.cnn_logits(
                params64, x64, relus=tuple(r for r in _oracle.CNN_RELUS if r != layer)),
            f"the ReLU after {layer} is missing: {_FORWARD}."))
    chk.compare("logits", got, ref, alternatives=alternatives,
                fallback_hint=problem or f"the forward pass differs from the course CNN: "
                                         f"{_FORWARD}.",
                fallback_first=problem is not None)
    chk.passed(detail="the logits equal the course CNN's with the same weights")

