"""`mnist-course train {numpy,torch}`, mnist_course.training and `mnist-course demo`, on subsets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mnist_course import CourseError, cli, data, demo, draw, numpy_cnn, torch_cnn, training
from mnist_course.history import format_epoch
from mnist_course.schedule import CosineDecay, cosine_factor

CONTRACT_KEYS = {"impl", "dataset", "epochs", "test_accuracy", "train_seconds",
                 "seconds_per_epoch", "params"}


def _train_cli(capsys, *args):
    code = cli.main(["train", *args, "--json", "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def torch_run(mnist_raw):
    return training.run("torch", epochs=1, limit=1000, device="cpu", progress=False)


def test_run_torch_returns_history_and_contract_keys(torch_run):
    r = torch_run
    assert CONTRACT_KEYS <= set(r)
    assert r["impl"] == "torch" and r["epochs"] == 1 and r["params"] == 93_322
    assert r["device"] == "cpu"
    assert len(r["history"]["epochs"]) == 1 and len(r["step_loss"]) == 16  # ceil(1000 / 64)
    # scored on the test set, so the keys say "test" (not "val")
    row = r["history"]["epochs"][0]
    assert set(row) == {"epoch", "loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
    assert r["test_accuracy"] == row["test_acc"] and row["lr"] == 1e-3
    assert 0.4 < r["test_accuracy"] <= 1.0  # 16 steps: far above chance (0.1)


@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_cli_train_json(capsys, mnist_raw, torch_run, impl, tmp_path):
    weights = tmp_path / ("w.npz" if impl == "numpy" else "w.pt")
    code, out, err = _train_cli(capsys, impl, "--limit", "1000", "--epochs", "1",
                                "--device", "cpu", "--save", str(weights))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("epoch 1/1  loss ")
    result = json.loads(lines[-1])
    assert set(result) == CONTRACT_KEYS
    assert result["impl"] == impl and result["epochs"] == 1 and result["params"] == 93_322
    assert result["dataset"] == "mnist"
    assert 0.4 < result["test_accuracy"] <= 1.0
    assert result["train_seconds"] > 0
    assert result["seconds_per_epoch"] == pytest.approx(result["train_seconds"])
    if impl == "torch":  # same seed, same subset: the very same figure as training.run
        assert result["test_accuracy"] == torch_run["test_accuracy"]
    # --save: the file holds the final weights, which score exactly what was reported
    assert f"saved the final weights to {weights}" in out
    assert [p.name for p in tmp_path.iterdir()] == [weights.name]  # no temporary file left
    (_, _), (x_test, y_test) = data.load_mnist()
    if impl == "numpy":
        params = numpy_cnn.load_params(weights)
        acc = float((numpy_cnn.predict(params, data.normalize(x_test)) == y_test).mean())
    else:
        model = torch_cnn.load_state(weights, torch_cnn.CourseCNN())
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
            torch.from_numpy(data.normalize(x_test)), torch.from_numpy(y_test)), batch_size=1000)
        acc = torch_cnn.evaluate(model, loader)[1]
    assert acc == result["test_accuracy"]


@pytest.mark.parametrize("target, words", [("no/such/folder/w.npz", "does not exist"),
                                           (".", "that is a folder")])
def test_cli_train_save_refuses_a_bad_path_before_training(capsys, tmp_path, monkeypatch,
                                                            target, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "_run_numpy", lambda *a: pytest.fail("trained anyway"))
    code = cli.main(["train", "numpy", "--save", target])
    err = capsys.readouterr().err
    assert code == 1 and words in err and "Traceback" not in err


class _Stop(Exception):
    pass


def test_numpy_and_torch_start_from_the_same_weights(monkeypatch, mnist_raw):
    """Both implementations must start from numpy_cnn.init_cnn(seed)."""
    from mnist_course import numpy_cnn, torch_cnn

    seen = {}

    def fake_fit(model, *args, **kwargs):
        seen["torch"] = torch_cnn.numpy_params(model)
        raise _Stop  # before any training

    monkeypatch.setattr(torch_cnn, "fit", fake_fit)
    with pytest.raises(_Stop):
        training.run("torch", epochs=1, limit=64, seed=5, device="cpu", progress=False)
    ref = numpy_cnn.init_cnn(5)
    assert all((seen["torch"][k] == ref[k]).all() for k in ref)


@pytest.mark.parametrize("args, message", [
    (["torch", "--epochs", "0"], "--epochs must be"),
    (["numpy", "--limit", "0"], "--limit must be at least 1"),
    (["torch", "--batch-size", "0"], "--batch-size must be"),
    (["numpy", "--lr", "-1"], "--lr must be positive"),
])
def test_cli_rejects_bad_arguments(capsys, args, message):
    code, _, err = _train_cli(capsys, *args)
    assert code == 1
    assert message in err and "Traceback" not in err


def test_cuda_requested_without_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = _train_cli(capsys, "torch", "--device", "cuda", "--limit", "64")
    assert code == 1
    assert "mnist-course: error:" in err and "no CUDA GPU" in err and "Traceback" not in err


def test_error_exit_from_the_real_command():
    """Through `python -m mnist_course`: exit code 1, one clear line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "mnist_course", "train", "torch", "--epochs",
                           "0"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("mnist-course: error: --epochs must be")
    assert "Traceback" not in proc.stderr


def test_run_rejects_unknown_impl():
    with pytest.raises(CourseError, match="'numpy' or 'torch'"):
        training.run("jax")


def test_format_epoch():
    row = {"epoch": 2, "loss": 0.12345, "train_acc": 0.96, "test_acc": 0.9812, "seconds": 12.34}
    assert format_epoch(row, 3) == (
        "epoch 2/3  loss 0.1235  train acc 0.9600  test acc 0.9812  12.3 s")
    assert format_epoch(row, 10).startswith("epoch  2/10  ")
    val_row = {"epoch": 1, "loss": 0.5, "train_acc": 0.9, "val_loss": 0.4, "val_acc": 0.95,
               "lr": 1e-3, "seconds": 1.0}
    assert "train acc 0.9000  val acc 0.9500  1.0 s" in format_epoch(val_row, 1)


def test_demo_on_a_tiny_subset(tmp_path, capsys, mnist_raw):
    assert demo.main(tmp_path / "res", epochs=1, device="cpu", limit=256, progress=False) == 0
    out = capsys.readouterr().out
    assert "2-core laptop" in out.split("\n\n")[0]  # says up front how long it takes
    table = out[out.index("implementation"):]
    assert "NumPy (by hand)" in table and "PyTorch (autograd)" in table
    assert table.count("93,322") == 2
    png = tmp_path / "res" / "learning_curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "learning_curves.png" in out and str(tmp_path) not in out  # no absolute paths
    # the weights stay for `mnist-course draw`, each network's own
    readers = draw.load_readers(tmp_path / "res", log=pytest.fail)
    assert readers.sources == {"numpy": data.display_path(tmp_path / "res" / "numpy_cnn.npz"),
                               "torch": data.display_path(tmp_path / "res" / "torch_cnn.pt")}
    assert "draw" in out.splitlines()[-1]


def test_demo_table_format():
    rows = [{"impl": "numpy", "device": "cpu", "params": 93322, "epochs": 3,
             "test_accuracy": 0.99123, "seconds_per_epoch": 101.26},
            {"impl": "torch", "device": "cuda", "params": 93322, "epochs": 3,
             "test_accuracy": 0.9921, "seconds_per_epoch": 3.04}]
    lines = demo.format_table(rows).splitlines()
    assert lines[0].split() == ["implementation", "parameters", "epochs", "test", "accuracy",
                                "s", "/", "epoch"]
    assert lines[2].split()[-4:] == ["93,322", "3", "0.9912", "101.3"]
    assert "on cuda" in lines[3] and lines[3].endswith("3.0")


def test_cosine_schedule_is_the_same_in_numpy_and_torch():
    """The NumPy wrapper and torch's LambdaLR give the same learning rate at every step."""

    class FakeAdam:
        lr = 1e-3

        def __init__(self):
            self.seen = []

        def step(self, params, grads):
            self.seen.append(self.lr)

    total = 10
    fake = FakeAdam()
    wrapped = CosineDecay(fake, total)
    for _ in range(total):
        wrapped.step({}, {})
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_factor(s, total))
    torch_lrs = []
    for _ in range(total):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert fake.seen == pytest.approx(torch_lrs, rel=1e-12)
    assert fake.seen[0] == 1e-3 and fake.seen[-1] < 0.03 * 1e-3
    assert cosine_factor(total, total) == 0.0
    with pytest.raises(CourseError, match="schedule"):
        training.run("torch", schedule="step")


def test_demo_speed_sentence_calls_a_near_tie_level():
    from mnist_course.demo import compare_speed
    assert "about the same time (27.2 s and 27.5 s)" in compare_speed(27.5, 27.2)
    assert "PyTorch was 1.5x faster" in compare_speed(30.0, 20.0)
    assert "PyTorch was 2.0x slower" in compare_speed(10.0, 20.0)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST: --dataset, the JSON's "dataset", and the record in the saved weights
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_cli_train_fashion_mnist_records_the_dataset(capsys, fashion_raw, tmp_path, impl):
    weights = tmp_path / ("w.npz" if impl == "numpy" else "w.pt")
    code, out, err = _train_cli(capsys, impl, "--dataset", "fashion-mnist", "--limit", "500",
                                "--epochs", "1", "--device", "cpu", "--save", str(weights))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == CONTRACT_KEYS and result["dataset"] == "fashion-mnist"
    assert f"{impl} on Fashion-MNIST: test accuracy" in out
    assert 0.3 < result["test_accuracy"] <= 1.0   # 8 steps on clothes: well above chance (0.1)
    # the weights say what they learnt, and still load the ordinary ways
    (_, _), (x_test, y_test) = data.load_mnist(dataset="fashion-mnist")
    x_test = data.normalize(x_test, dataset="fashion-mnist")
    if impl == "numpy":
        assert numpy_cnn.saved_dataset(weights) == "fashion-mnist"
        params = numpy_cnn.load_params(weights)
        assert set(params) == set(numpy_cnn.PARAM_SHAPES)
        acc = float((numpy_cnn.predict(params, x_test) == y_test).mean())
    else:
        assert torch_cnn.saved_dataset(weights) == "fashion-mnist"
        model = torch_cnn.CourseCNN()
        model.load_state_dict(torch.load(weights, weights_only=True))
        acc = float((torch_cnn.predict(model, x_test) == y_test).mean())
    assert acc == pytest.approx(result["test_accuracy"], abs=1e-4)


def test_mnist_weights_and_older_files_read_as_mnist(tmp_path):
    """An MNIST network carries no record, so its files are what they were; files written before
    the record existed (a plain dict of tensors, an .npz of weights alone) read as MNIST."""
    model = torch_cnn.CourseCNN()
    torch_cnn.save_state(tmp_path / "new.pt", model, dataset="mnist")
    torch.save({k: v for k, v in model.state_dict().items()}, tmp_path / "old.pt")
    numpy_cnn.save_params(tmp_path / "new.npz", numpy_cnn.init_cnn(0), dataset="mnist")
    with np.load(tmp_path / "new.npz") as f:
        assert set(f.files) == set(numpy_cnn.PARAM_SHAPES)
    for name in ("new.pt", "old.pt"):
        assert torch_cnn.saved_dataset(tmp_path / name) == "mnist"
    assert numpy_cnn.saved_dataset(tmp_path / "new.npz") == "mnist"


def test_an_unknown_dataset_is_refused_before_training(capsys, monkeypatch):
    monkeypatch.setattr(training, "_run_torch", lambda *a: pytest.fail("trained anyway"))
    with pytest.raises(CourseError, match="unknown dataset 'kmnist'"):
        training.run("torch", dataset="kmnist")
    with pytest.raises(SystemExit):    # argparse: only the two choices
        cli.main(["train", "torch", "--dataset", "kmnist"])
    assert "invalid choice: 'kmnist'" in capsys.readouterr().err
