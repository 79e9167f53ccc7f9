"""The learner's package ``mine``: keep.save writes it, keep.use reads it (or falls back)."""

from __future__ import annotations

import importlib
import linecache
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_course import data, keep, numpy_cnn

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ["relu_forward", "relu_backward", "linear_forward", "linear_backward", "softmax_cross_entropy", "conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A fresh folder as the notebook's folder; mine/ forgotten before and after."""
    monkeypatch.chdir(tmp_path)
    keep._forget_package()
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    keep._forget_package()


def cell(source: str, namespace: dict | None = None, name: str = "cell") -> dict:
    """Run ``source`` the way Jupyter runs a cell: its text registered in linecache under a
    file name of its own, in the notebook's __main__ namespace."""
    namespace = {"__name__": "__main__", "np": np} if namespace is None else namespace
    filename = f"<{name} {len(linecache.cache)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    return namespace


LAYER = '''
SCALE = 2


def _double(x):
    return x * SCALE


def relu_forward(x):
    """ReLU."""
    return np.maximum(_double(x) / SCALE, 0), x


def relu_backward(dout, cache):
    return dout * (cache > 0)
'''


def test_save_writes_one_readable_file_per_name_and_use_reads_them(folder, capsys):
    ns = cell(LAYER)
    keep.save(ns["relu_forward"], ns["relu_backward"], lesson="01")
    assert "✓ saved to mine/: relu_forward, relu_backward" in capsys.readouterr().out
    text = (folder / "mine" / "relu_forward.py").read_text()
    assert "import numpy as np" in text and "SCALE = 2" in text
    assert text.index("def _double") < text.index("def relu_forward")  # its helper, first
    assert "From lesson 01" in text
    init = (folder / "mine" / "__init__.py").read_text()
    assert "from .relu_forward import relu_forward" in init
    assert keep.saved_names(folder) == ["relu_backward", "relu_forward"]

    fwd, bwd = keep.use("relu_forward", "relu_backward", fallback=numpy_cnn)
    assert "relu_forward, relu_backward: yours, from mine/" in capsys.readouterr().out
    assert fwd.__module__ == "mine.relu_forward"
    x = np.array([-1.0, 2.0])
    assert np.array_equal(fwd(x)[0], [0.0, 2.0])
    assert np.array_equal(bwd(np.ones(2), x), [0.0, 1.0])


def test_saving_again_takes_the_new_code(folder):
    ns = cell(LAYER)
    keep.save(ns["relu_forward"], quiet=True)
    cell("def relu_forward(x):\n    return np.abs(x), x\n", ns)
    keep.save(ns["relu_forward"], quiet=True)
    fwd = keep.use("relu_forward", fallback=numpy_cnn, quiet=True)
    assert np.array_equal(fwd(np.array([-3.0]))[0], [3.0])


def test_save_under_another_name(folder):
    ns = cell("def conv_fast(x, w, b, stride=1, pad=0):\n    return x, (x, w)\n")
    keep.save(conv2d_forward=ns["conv_fast"], quiet=True)
    text = (folder / "mine" / "conv2d_forward.py").read_text()
    assert text.rstrip().endswith("conv2d_forward = conv_fast")
    assert keep.use("conv2d_forward", fallback=numpy_cnn, quiet=True).__name__ == "conv_fast"


def test_save_a_class_and_what_it_imports(folder):
    ns = cell("from mnist_course.gradcheck import rel_error\n\n"
              "class Adam:\n"
              "    def __init__(self, lr=1e-3):\n        self.lr = lr\n\n"
              "    def step(self, params, grads):\n"
              "        for k in params:\n            params[k] -= self.lr * np.sign(grads[k])\n"
              "        return rel_error(params[k], params[k])\n")
    keep.save(ns["Adam"], quiet=True)
    text = (folder / "mine" / "Adam.py").read_text()
    assert "from mnist_course.gradcheck import rel_error" in text and "class Adam:" in text
    opt = keep.use("Adam", fallback=numpy_cnn, quiet=True)(lr=0.5)
    params = {"w": np.array([1.0, 1.0])}
    opt.step(params, {"w": np.array([2.0, -3.0])})
    assert np.array_equal(params["w"], [0.5, 1.5])


@pytest.mark.parametrize("source, name, message", [
    ("def one_hot(y):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n", "one_hot",
     "still a stub"),
    ("table = np.ones(3)\n\ndef f(x):\n    return x + table\n", "f",
     "reads the notebook variable 'table'"),
    ("def g(x):\n    return x\n\nh = g\n\ndef f(x):\n    return h(x)\n", "f",
     "another name for g"),
])
def test_save_refuses_with_the_remedy_and_writes_nothing(folder, source, name, message):
    ns = cell(source)
    with pytest.raises(keep.KeepError, match=message):
        keep.save(ns[name])
    assert not (folder / "mine").exists()


def test_save_refuses_what_is_not_a_function():
    with pytest.raises(keep.KeepError, match="functions and classes"):
        keep.save(np.zeros(3))
    with pytest.raises(keep.KeepError, match="at least one"):
        keep.save()


def test_use_falls_back_visibly_and_keeps_pairs_together(folder, capsys):
    ns = cell(LAYER)
    keep.save(ns["relu_forward"], quiet=True)  # the backward pass was never saved
    fwd, bwd = keep.use("relu_forward", "relu_backward", fallback=numpy_cnn)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [("mine/ has no relu_backward: using the course's mnist_course.numpy_cnn for "
                   "relu_forward, relu_backward")]
    assert (fwd, bwd) == (numpy_cnn.relu_forward, numpy_cnn.relu_backward)  # both, not a mix
    assert keep.use("train_val_split", fallback=data, quiet=True) is data.train_val_split


def test_use_falls_back_when_mine_does_not_import(folder, capsys):
    ns = cell(LAYER)
    keep.save(ns["relu_forward"], ns["relu_backward"], quiet=True)
    (folder / "mine" / "relu_forward.py").write_text("def relu_forward(x:\n")
    fwd, _ = keep.use("relu_forward", "relu_backward", fallback=numpy_cnn)
    assert fwd is numpy_cnn.relu_forward
    assert "mine/ does not import (SyntaxError" in capsys.readouterr().out


def test_use_names_what_the_fallback_lacks(folder):
    with pytest.raises(keep.KeepError, match="no fallback for nothing_like_this"):
        keep.use("nothing_like_this", fallback=numpy_cnn, quiet=True)


def _import_mine(folder: Path):
    keep._forget_package()
    sys.path.insert(0, str(folder))
    return importlib.import_module("mine")


def test_build_from_the_solutions_gives_the_contract(folder):
    """What lessons 00-03 save, made from the solutions: numpy_cnn's names and results, and the
    vectorised versions of lesson 02, never its naive loops."""
    for name in ("00_data", "01_numpy_mlp", "02_numpy_layers", "03_numpy_cnn"):
        shutil.copy(ROOT / "solutions" / f"{name}.ipynb", folder)
    names = keep.build(sorted(folder.glob("*.ipynb")), folder)
    assert set(CONTRACT) | {"train_val_split", "init_params", "cnn_forward",
                            "cnn_loss_and_grads", "Adam"} <= set(names)
    mine = _import_mine(folder)
    assert mine.conv2d_forward.__name__ == "conv2d_forward_fast"
    assert mine.maxpool2d_backward.__name__ == "maxpool2d_backward_fast"
    assert "BEGIN SOLUTION" not in (folder / "mine" / "conv2d_forward.py").read_text()

    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    for opts in ({}, {"stride": 2, "pad": 1}):
        out, cache = mine.conv2d_forward(x, w, b, **opts)
        ref, ref_cache = numpy_cnn.conv2d_forward(x, w, b, **opts)
        assert np.allclose(out, ref, atol=1e-12)
        dout = rng.standard_normal(out.shape)
        for a, r in zip(mine.conv2d_backward(dout, cache), numpy_cnn.conv2d_backward(dout, ref_cache)):
            assert np.allclose(a, r, atol=1e-12)
    ties = rng.integers(0, 3, (2, 3, 9, 8)).astype(float)
    out, cache = mine.maxpool2d_forward(ties)
    ref, ref_cache = numpy_cnn.maxpool2d_forward(ties)
    dout = rng.standard_normal(out.shape)
    assert np.array_equal(out, ref)
    assert np.array_equal(mine.maxpool2d_backward(dout, cache),
                          numpy_cnn.maxpool2d_backward(dout, ref_cache))
    logits, y = rng.standard_normal((5, 10)) * 1e4, rng.integers(0, 10, 5)
    loss, dlogits = mine.softmax_cross_entropy(logits, y)
    ref_loss, ref_dlogits = numpy_cnn.softmax_cross_entropy(logits, y)
    assert np.isclose(loss, ref_loss) and np.allclose(dlogits, ref_dlogits)

    params = {k: v.astype(np.float64) for k, v in mine.init_params(seed=0).items()}
    xb, yb = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4)
    loss, grads = mine.cnn_loss_and_grads(params, xb, yb)
    ref_loss, ref_grads = numpy_cnn.cnn_loss_and_grads(params, xb, yb)
    assert np.isclose(loss, ref_loss, rtol=1e-12)
    assert all(np.allclose(grads[k], ref_grads[k], rtol=1e-9, atol=1e-12) for k in ref_grads)

    xs, ys = np.arange(100).reshape(50, 2), np.arange(50)
    for a, r in zip(mine.train_val_split(xs, ys, n_val=7, seed=3),
                    data.train_val_split(xs, ys, n_val=7, seed=3)):
        assert np.array_equal(a, r)
    keep._forget_package()


def test_the_command_builds_a_folder_and_reports(tmp_path, capsys):
    shutil.copy(ROOT / "solutions" / "00_data.ipynb", tmp_path)
    assert keep.main(["build", str(tmp_path)]) == 0
    assert "1 names (train_val_split)" in capsys.readouterr().out
    assert (tmp_path / "mine" / "train_val_split.py").is_file()
    keep._forget_package()


def test_use_falls_back_to_a_dict_of_the_course_counterparts(folder, capsys):
    got = keep.use("MyCNN", fallback={"MyCNN": numpy_cnn.Adam})
    assert got is numpy_cnn.Adam
    assert "using the course's mnist_course.optim.Adam for MyCNN" in capsys.readouterr().out
