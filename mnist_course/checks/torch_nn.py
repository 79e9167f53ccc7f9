"""Checks of the PyTorch lessons: the course CNN as an ``nn.Module`` and as an ``nn.Sequential``
(lesson 06), and with batch norm and dropout (lesson 07)."""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F

from mnist_course import _oracle
from mnist_course.checks._core import TOL_FLOAT32, _Check, _describe, _fmt_shape
from mnist_course.checks.cnn import _POOL_MISTAKES

__all__ = ["check_my_cnn", "check_regularized_cnn", "check_sequential"]

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
    _load_layers({name: getattr(model, name) for name in _LAYERS}, params)


def _load_layers(layers: dict, params: dict) -> None:
    """Copy the NumPy parameters into layers, a dict course name -> nn.Conv2d or nn.Linear."""
    with torch.no_grad():
        for name, layer in layers.items():
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


# --------------------------------------------------------------------------------------------
# The course CNN as one nn.Sequential (lesson 06)
# --------------------------------------------------------------------------------------------

def _own_rng(check):
    """Run a check on a copy of torch's global random state: building models, dropout and
    DataLoaders draw from it, and the learner's seeded notebook must not notice."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return check(*args, **kwargs)
    return wrapper


_N_PARAMS = 93_322
_SEQUENTIAL = ("nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, "
               "3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), "
               "nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10))")
_ORDINAL = {"conv1": "first nn.Conv2d (conv1)", "conv2": "second nn.Conv2d (conv2)",
            "conv3": "third nn.Conv2d (conv3)", "fc1": "first nn.Linear (fc1)",
            "fc2": "second nn.Linear (fc2)"}


def _layer_names(model) -> str:
    """The model's leaf modules in order, e.g. 'Conv2d -> ReLU -> MaxPool2d'."""
    leaves = [type(m).__name__ for m in model.modules() if not list(m.children())]
    return " -> ".join(leaves) if leaves else "(no layers)"


def _weight_layer(layer, name: str, make: str) -> str | None:
    """What is wrong with one Conv2d/Linear against the course layer name, or None."""
    want = _LAYERS[name][0]
    got = tuple(layer.weight.shape)
    if got != want:
        return (f"the {_ORDINAL[name]} has weight shape {_fmt_shape(got)}; {make} has "
                f"{_fmt_shape(want)}. {_shape_hint(name, got, want)}")
    if layer.bias is None:
        return f"the {_ORDINAL[name]} has no bias: keep bias=True (the default) in {make}."
    return None


def _sequential_problem(seen: dict, n: int) -> str | None:
    """The first weight layer that received a wrong shape, as a hint (a Sequential's layers
    run in order, so a layer never reached means the error came before it)."""
    previous = "the input"
    for name, (per_image, source) in _INPUTS.items():
        want = (n, *per_image)
        if name not in seen:
            return (f"the error comes after {previous}, before the {_ORDINAL[name]}, which "
                    f"should get {source}.")
        got = seen[name]
        if got != want:
            if name == "fc1" and len(got) == 4:
                hint = ("nn.Flatten() is missing before the first nn.Linear: it turns "
                        "(N, 64, 3, 3) into (N, 576).")
            else:
                hint = _input_hint(name, got, want)
            return (f"the {_ORDINAL[name]} receives {_fmt_shape(got)}, expected "
                    f"{_fmt_shape(want)}: {hint}")
        previous = f"the {_ORDINAL[name]}"
    return None


def _record_inputs(layers: dict, seen: dict) -> list:
    """Forward pre-hooks that store the input shape of each layer in seen; returns handles."""
    def record(name):
        def hook(_module, args):
            if args and isinstance(args[0], torch.Tensor):
                seen.setdefault(name, tuple(args[0].shape))
        return hook

    return [layer.register_forward_pre_hook(record(name)) for name, layer in layers.items()]


@_own_rng
@_oracle._single_thread
def check_sequential(fn) -> None:
    """Check ``make_sequential() -> nn.Sequential``: the course CNN as one ``nn.Sequential``.

    The course CNN's weights are loaded into its nn.Conv2d and nn.Linear modules in order (each
    linear weight transposed, (D_out, D_in)); its logits for 4 images must equal those of the
    course CNN computed by ``torch.nn.functional`` in float64, and it has 93,322 parameters.
    """
    n = 4
    chk = _Check("check_sequential", 1)
    chk.case(1, f"make_sequential() with the course CNN's weights (seed 4), x ({n}, 1, 28, 28) "
                f"float32", n)
    model = chk.call(fn, signature="make_sequential() -> nn.Sequential")
    if not isinstance(model, torch.nn.Sequential):
        chk.fail(f"make_sequential() should return an nn.Sequential; it returned "
                 f"{_describe(model)}.", f"Likely bug: return {_SEQUENTIAL}.")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    kinds = [type(m).__name__ for m in layers]
    if kinds != ["Conv2d"] * 3 + ["Linear"] * 2:
        chk.fail(f"its layers with weights are {', '.join(kinds) or 'none'}; the course CNN has "
                 f"3 nn.Conv2d, then 2 nn.Linear.", f"Your layers: {_layer_names(model)}.",
                 f"Expected: {_SEQUENTIAL}.")
    named = dict(zip(_LAYERS, layers))
    for name, layer in named.items():
        problem = _weight_layer(layer, name, _LAYERS[name][1])
        if problem:
            chk.fail(problem)
    count = sum(p.numel() for p in model.parameters())
    if count != _N_PARAMS:
        chk.fail(f"it has {count:,} parameters; the course CNN has {_N_PARAMS:,}.",
                 f"Your layers: {_layer_names(model)}. Only the 3 convolutions and the 2 linear "
                 f"layers have parameters.")
    params = _oracle.init_cnn_params(seed=4)
    _load_layers(named, params)
    x = np.random.default_rng(4).standard_normal((n, 1, 28, 28)).astype(np.float32)
    seen = {}
    handles = _record_inputs(named, seen)

    def forward(images):
        return model(images)

    forward.__name__ = "the Sequential's forward"
    try:
        model.eval()
        with torch.no_grad():
            out = chk.call(forward, torch.from_numpy(x),
                           explain=lambda exc: _sequential_problem(seen, n))
    finally:
        for handle in handles:
            handle.remove()
    layer_line = f"Your layers: {_layer_names(model)}."
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, 10):
        problem = _sequential_problem(seen, n)
        chk.fail(f"{n} images gave {_describe(out)}; expected logits of shape ({n}, 10).",
                 f"Likely bug: {problem}" if problem else None, layer_line)
    params64 = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    ref = _oracle.cnn_logits(params64, x.astype(np.float64))
    end = "end with nn.Linear(64, 10): its outputs are the logits"
    alternatives = [
        (lambda: np.maximum(ref, 0), f"all the logits are >= 0: a ReLU after the last layer; {end}."),
        (lambda: _softmax(ref), (f"probabilities: a softmax at the end; {end} (F.cross_entropy "
                                 f"applies the log-softmax itself).")),
        (lambda: np.log(_softmax(ref)), (f"log-probabilities: a log-softmax at the end; {end} "
                                         f"(F.cross_entropy applies it itself).")),
    ]
    for layer in _oracle.CNN_RELUS:
        alternatives.append((
            lambda layer=layer: _oracle.cnn_logits(
                params64, x.astype(np.float64),
                relus=tuple(r for r in _oracle.CNN_RELUS if r != layer)),
            f"the nn.ReLU() after {layer} is missing."))
    try:
        chk.compare("logits", out.detach().cpu().numpy(), ref, alternatives=alternatives,
                    fallback_hint=f"the layers differ from the course CNN: {_SEQUENTIAL}.")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n  {layer_line}") from None
    _sequential_train_mode(chk, model, x, ref, layer_line)
    chk.passed(detail=f"{_N_PARAMS:,} parameters, the logits equal the course CNN's")


_TRAIN_ONLY = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._NormBase)


def _sequential_train_mode(chk, model, x, ref, layer_line) -> None:
    """The same logits in training mode: a layer that acts only in training (dropout, batch
    norm) is not part of lesson 06's CNN, and evaluation mode alone hides it."""
    __tracebackhide__ = True
    extra = [f"{name or 'the model'} = {type(m).__name__}" for name, m in model.named_modules()
             if isinstance(m, _TRAIN_ONLY)]
    state = copy.deepcopy(model.state_dict())
    try:
        model.train()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            out = model(torch.from_numpy(x))
    finally:
        model.load_state_dict(state)
        model.eval()
    got = out.detach().cpu().numpy().astype(np.float64)
    err = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))
    if err <= TOL_FLOAT32:
        return
    what = (f"it holds {', '.join(extra)}, which acts only in training mode"
            if extra else "some layer behaves differently in training mode")
    chk.fail(f"in training mode (model.train()) the logits differ from the course CNN's by "
             f"{err:.1e} (relative), although they match in evaluation mode.",
             f"Likely bug: {what}: lesson 06's CNN has no dropout and no batch norm, so "
             f"model.train() and model.eval() must give the same logits. Remove the extra "
             f"layer ({_SEQUENTIAL}).", layer_line)


# --------------------------------------------------------------------------------------------
# The course CNN with batch norm and dropout (lesson 07)
# --------------------------------------------------------------------------------------------

_REG_PARAMS = _N_PARAMS + 2 * (32 + 64 + 64 + 64)
_BN_WHERE = {"conv1": "nn.BatchNorm2d(32) after conv1", "conv2": "nn.BatchNorm2d(64) after conv2",
             "conv3": "nn.BatchNorm2d(64) after conv3", "fc1": "nn.BatchNorm1d(64) after fc1"}
_REG_FORWARD = ("conv -> BatchNorm2d -> ReLU (-> max pool after conv1 and conv2) for each "
                "convolution, flatten, fc1 -> BatchNorm1d -> ReLU -> Dropout -> fc2")
_DROPOUT_CHECK_N = 16  # 1,024 units of fc1, about 450 of them active: the rate +- 0.025


def _bn_stats(seed: int) -> dict:
    """Affine parameters and running statistics (gamma, beta, mean, var) per course layer.

    The batch norms after conv2 and conv3 get the same values, so that the two
    nn.BatchNorm2d(64) may be declared in either order.
    """
    rng = np.random.default_rng(seed)
    stats = {}
    for name, size in (("conv1", 32), ("conv2", 64), ("fc1", 64)):
        stats[name] = (rng.uniform(0.5, 1.5, size), 0.2 * rng.standard_normal(size),
                       0.2 * rng.standard_normal(size), rng.uniform(0.5, 2.0, size))
    stats["conv3"] = stats["conv2"]
    return {k: tuple(a.astype(np.float32) for a in v) for k, v in stats.items()}


@_oracle._single_thread
def _regularized_oracle(params: dict, stats: dict, x: np.ndarray, train: bool,
                        after_relu=(), skip=()) -> tuple[np.ndarray, np.ndarray]:
    """(fc2's input before dropout, logits without dropout) of the regularised course CNN, in
    float64. train: batch statistics instead of running ones. after_relu, skip: course layers
    whose batch norm comes after the ReLU, or is left out (known bugs)."""
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in params.items()}

    def norm(h, name):
        if name in skip:
            return h
        g, b, m, v = (torch.tensor(np.asarray(a, dtype=np.float64)) for a in stats[name])
        return F.batch_norm(h, m, v, g, b, training=train, momentum=0.0, eps=1e-5)

    def block(h, name):
        h = F.relu(norm(h, name)) if name not in after_relu else norm(F.relu(h), name)
        return F.max_pool2d(h, 2) if name in ("conv1", "conv2") else h

    with torch.no_grad():
        h = torch.tensor(np.asarray(x, dtype=np.float64))
        for name in ("conv1", "conv2", "conv3"):
            h = block(F.conv2d(h, p[f"{name}_w"], p[f"{name}_b"]), name)
        h = block(torch.flatten(h, 1) @ p["fc1_w"] + p["fc1_b"], "fc1")
        return h.numpy(), (h @ p["fc2_w"] + p["fc2_b"]).numpy()


def _find_layers(model) -> tuple[dict, str | None]:
    """The course layers of model by weight shape, name -> module; or a problem."""
    found = {}
    for name, (want, make) in _LAYERS.items():
        kind = torch.nn.Conv2d if name.startswith("conv") else torch.nn.Linear
        layers = [m for m in model.modules() if isinstance(m, kind)]
        match = [m for m in layers if tuple(m.weight.shape) == want and m.bias is not None]
        if not match:
            return found, (f"no {make} (weight shape {_fmt_shape(want)}, with a bias) found: "
                           f"the regularised CNN keeps the course CNN's five layers. Your layers: "
                           f"{_layer_names(model)}.")
        found[name] = match[0]
    return found, None


def _batch_dependent(model) -> bool:
    """True when, in eval mode, an image's logits depend on the other images of the batch."""
    x = torch.from_numpy(np.random.default_rng(6).standard_normal((8, 1, 28, 28))
                         .astype(np.float32))
    model.eval()
    try:
        with torch.no_grad():
            a, b = model(x)[:4], model(x[:4].clone())
        return not torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    except NotImplementedError:
        raise
    except Exception:  # noqa: BLE001 (a model that fails here is reported by the later cases)
        return False


def _bn_problem(model) -> str | None:
    """What is wrong with the batch norm layers (missing, wrong sizes, no running statistics)."""
    bn2d = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn1d = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    want = ", ".join(_BN_WHERE.values())
    functional = ("batch statistics used in eval mode: batch norm without running statistics "
                  "(F.batch_norm(x, None, None, ...), or track_running_stats=False), so that in "
                  "eval mode one image's output depends on the other images of the batch. Use "
                  "the modules nn.BatchNorm2d / nn.BatchNorm1d: they keep running averages and "
                  "use them after model.eval().")
    if not bn2d and not bn1d:
        if _batch_dependent(model):
            return functional
        return f"no batch norm layers: BatchNorm missing. Add {want}."
    if any(m.running_mean is None for m in bn2d + bn1d):
        return functional
    sizes2d = sorted(m.num_features for m in bn2d)
    sizes1d = [m.num_features for m in bn1d]
    if sizes2d != [32, 64, 64] or sizes1d != [64]:
        return (f"batch norm layers: nn.BatchNorm2d with {sizes2d} features and nn.BatchNorm1d "
                f"with {sizes1d}; expected {want} (BatchNorm missing or of the wrong size).")
    return None


def _load_regularized(model, layers: dict, params: dict, stats: dict) -> list:
    """Load the weights and the batch norm values; return the batch norm modules."""
    _load_layers(layers, params)
    bn2d = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn1d = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    by_size = {32: ["conv1"], 64: ["conv2", "conv3"]}
    pairs = [(m, by_size[m.num_features][0]) for m in bn2d] + [(bn1d[0], "fc1")]
    with torch.no_grad():
        for module, name in pairs:
            g, b, mean, var = (torch.from_numpy(a.copy()) for a in stats[name])
            module.weight.copy_(g)
            module.bias.copy_(b)
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
    return [m for m, _ in pairs]


def _buffers(bns: list) -> list:
    return [(m.running_mean.clone(), m.running_var.clone()) for m in bns]


def _forward_capture(chk: _Check, model, fc2, x: torch.Tensor, seen: dict, layers: dict):
    """model(x) without gradients; returns (logits, fc2's input)."""
    captured = []
    handles = _record_inputs(layers, seen)
    handles.append(fc2.register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].detach().clone())))

    def forward(images):
        return model(images)

    forward.__name__ = f"{type(model).__name__}.forward"
    try:
        with torch.no_grad():
            out = chk.call(forward, x, explain=lambda exc: _forward_problem(seen, len(x), True))
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), 10):
        chk.fail(f"{len(x)} images gave {_describe(out)}; expected logits of shape "
                 f"({len(x)}, 10).")
    return out, (captured[-1] if captured else None)


def _check_dropout(chk: _Check, z: torch.Tensor, h: np.ndarray, logits: torch.Tensor,
                   fc2, p: float, default: bool) -> float:
    """z, fc2's input in train mode, must be h (no dropout) with a fraction p of the units set
    to 0 and the others scaled by 1 / (1 - p). Returns the measured rate."""
    with torch.no_grad():
        after_fc2 = fc2(z).numpy()
    got = logits.numpy()
    if not np.allclose(got, after_fc2, rtol=1e-4, atol=1e-5):
        zeros = (got == 0) & (after_fc2 != 0)
        hint = ("dropout after the last layer: it sets logits to 0; drop fc1's units instead "
                "(Dropout between fc1's ReLU and fc2), and return fc2's output as it is."
                if zeros.any() else "fc2 must be the last layer: return its output as it is.")
        chk.fail("in train mode the logits are not fc2's output.", f"Likely bug: {hint}")
    z = z.numpy().astype(np.float64)
    sel = h > 0.05 * h.max()
    ratio = z[sel] / h[sel]
    dropped = ratio == 0
    rate = float(dropped.mean())
    where = f"Likely bug: the order is {_REG_FORWARD}."
    if not dropped.any():
        chk.fail("in train mode no unit of fc1 is dropped: no dropout before fc2.",
                 f"Likely bug: nn.Dropout(dropout) is missing or not applied; {_REG_FORWARD}.")
    scale = float(np.median(ratio[~dropped]))
    if np.any(np.abs(ratio[~dropped] - scale) > 1e-2 * scale):
        chk.fail("in train mode the units fc2 receives are not fc1 -> BatchNorm1d -> ReLU with "
                 "some of them set to 0.", where)
    if abs(rate - p) > 0.1:
        if abs(rate - (1 - p)) <= 0.1:
            hint = (f"the units are kept with probability p: p is the probability to DROP a "
                    f"unit, nn.Dropout(p={p}).")
        elif default:
            hint = "nn.Dropout(dropout): the rate given to the constructor."
        else:
            hint = ("the dropout argument is ignored (a fixed rate?): pass it on, "
                    "nn.Dropout(dropout).")
        chk.fail(f"dropout rate: {rate:.2f} of fc1's active units were dropped; expected "
                 f"{p}.", f"Likely bug: {hint}")
    if abs(scale * (1 - p) - 1) > 1e-3:
        chk.fail(f"the kept units are multiplied by {scale:.3f}; expected 1 / (1 - p) = "
                 f"{1 / (1 - p):.3f}.", "Likely bug: inverted dropout scales the kept units "
                 "by 1 / (1 - p) in training; nn.Dropout does it for you.")
    return rate


@_own_rng
@_oracle._single_thread
def check_regularized_cnn(cls) -> None:
    """Check ``RegularizedCNN(dropout=0.3)``: the course CNN with batch norm and dropout.

    conv -> ``nn.BatchNorm2d`` -> ReLU (-> max pool) for each convolution, and fc1 ->
    ``nn.BatchNorm1d(64)`` -> ReLU -> ``nn.Dropout(dropout)`` -> fc2: 93,770 parameters. With
    the course CNN's weights and random batch norm values loaded, in eval mode the logits must
    equal a float64 reference (``torch.nn.functional``), twice in a row, without changing the
    running statistics; in train mode the batch norms must use the batch's statistics and
    update their running ones, and the given fraction of fc1's units must be dropped (measured
    on 16 images, for dropout 0.3 and 0.6; two passes must differ).

    Runs with one torch thread and a copy of torch's random state (both restored afterwards).
    """
    chk = _Check("check_regularized_cnn", 4)
    name = getattr(cls, "__name__", "cls")
    signature = "RegularizedCNN(dropout=0.3)"
    chk.case(1, f"{name}(): the layers and {_REG_PARAMS:,} parameters")
    model = chk.call(cls, signature=signature, explain=_explain_init)
    if not isinstance(model, torch.nn.Module):
        chk.fail(f"cls() should build an nn.Module; it built {_describe(model)}.")
    layers, problem = _find_layers(model)
    problem = problem or _bn_problem(model)
    if problem:
        chk.fail("the layers are not those of the regularised course CNN.",
                 f"Likely bug: {problem}")
    count = sum(p.numel() for p in model.parameters())
    if count != _REG_PARAMS:
        chk.fail(f"it has {count:,} parameters; expected {_REG_PARAMS:,} = {_N_PARAMS:,} + "
                 f"2 * (32 + 64 + 64 + 64), the course CNN plus a scale and a shift per "
                 f"batch-normalised channel.", f"Your layers: {_layer_names(model)}.")

    n = 8
    chk.case(2, f"eval mode, the course CNN's weights and random batch norm statistics (seed 5), "
                f"x ({n}, 1, 28, 28) float32", n)
    params = _oracle.init_cnn_params(seed=5)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    stats = _bn_stats(5)
    bns = _load_regularized(model, layers, params, stats)
    x = np.random.default_rng(5).standard_normal((n, 1, 28, 28)).astype(np.float32)
    before = _buffers(bns)
    model.eval()
    seen = {}
    out1, _ = _forward_capture(chk, model, layers["fc2"], torch.from_numpy(x), seen, layers)
    out2, _ = _forward_capture(chk, model, layers["fc2"], torch.from_numpy(x), seen, layers)
    if not torch.equal(out1, out2):
        chk.fail("in eval mode two passes over the same images gave different logits.",
                 "Likely bug: dropout in eval mode: F.dropout(x, p) drops whatever the mode; "
                 "use nn.Dropout(dropout), or F.dropout(x, p, training=self.training).")
    for (m0, v0), (m1, v1) in zip(before, _buffers(bns)):
        if not (torch.equal(m0, m1) and torch.equal(v0, v1)):
            chk.fail("in eval mode the batch norms' running statistics changed.",
                     "Likely bug: batch norm forced into training mode (F.batch_norm(..., "
                     "training=True)): use the nn.BatchNorm modules, which follow model.eval().")
    ref = _regularized_oracle(params, stats, x, train=False)[1]
    alternatives = []
    for layers_after in (tuple(_BN_WHERE), ("conv1", "conv2", "conv3"), ("fc1",)):
        alternatives.append((
            lambda after=layers_after: _regularized_oracle(params, stats, x, False,
                                                           after_relu=after)[1],
            (f"BN placed after the ReLU (at {', '.join(layers_after)}): layer -> BatchNorm -> "
            f"ReLU, the batch norm comes first.")))
    for layer, where in _BN_WHERE.items():
        alternatives.append((
            lambda layer=layer: _regularized_oracle(params, stats, x, False, skip=(layer,))[1],
            f"BatchNorm missing in forward: the {where} is not applied."))
    chk.compare("logits", out1.numpy(), ref, alternatives=alternatives,
                fallback_hint=f"the order is {_REG_FORWARD}.")

    n = _DROPOUT_CHECK_N
    x = np.random.default_rng(7).standard_normal((n, 1, 28, 28)).astype(np.float32)
    rates = []
    for case, p in ((3, None), (4, 0.6)):
        chk.case(case, f"train mode, {name}({'' if p is None else f'dropout={p}'}), x ({n}, 1, "
                       f"28, 28) float32", n)
        if p is not None:
            model = chk.call(cls, dropout=p, signature=signature)
            layers, _ = _find_layers(model)
        bns = _load_regularized(model, layers, params, stats)
        before = _buffers(bns)
        model.train()
        torch.manual_seed(case)
        out1, z = _forward_capture(chk, model, layers["fc2"], torch.from_numpy(x), seen, layers)
        out2 = out1
        if p is None:  # train mode must be random: a second pass differs
            out2 = _forward_capture(chk, model, layers["fc2"], torch.from_numpy(x), seen,
                                    layers)[0]
        for module, (m0, v0) in zip(bns, before):
            if torch.equal(m0, module.running_mean) or torch.equal(v0, module.running_var):
                chk.fail("in train mode a batch norm's running statistics did not change.",
                         "Likely bug: batch norm without running statistics, or not in "
                         "training mode: use the nn.BatchNorm modules, which follow "
                         "model.train().")
        h = _regularized_oracle(params, stats, x, train=True)[0]
        rates.append(_check_dropout(chk, z, h, out1, layers["fc2"], 0.3 if p is None else p,
                                    default=p is None))
        if out2 is not out1 and torch.equal(out1, out2):
            chk.fail("in train mode two passes over the same images gave the same logits: "
                     "no dropout in training.")
    chk.passed(show_error=False,
               detail=f"{_REG_PARAMS:,} parameters, measured dropout rates "
                      f"{rates[0]:.2f} and {rates[1]:.2f} (expected 0.3 and 0.6)")
