"""mnist_course.torch_cnn: the model, NumPy <-> torch weights, loaders, the training loop."""

from __future__ import annotations

import contextlib
import io
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from mnist_course import CourseError, data, numpy_cnn
from mnist_course import torch_cnn as tc

KEYS = ("conv1_w", "conv1_b", "conv2_w", "conv2_b", "conv3_w", "conv3_b",
        "fc1_w", "fc1_b", "fc2_w", "fc2_b")


def _loaders(mnist, n_train, n_test=1000, batch_size=64, seed=0):
    (x_train, y_train), (x_test, y_test) = mnist
    train = TensorDataset(torch.from_numpy(data.normalize(x_train[:n_train])),
                          torch.from_numpy(y_train[:n_train]))
    test = TensorDataset(torch.from_numpy(data.normalize(x_test[:n_test])),
                         torch.from_numpy(y_test[:n_test]))
    g = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=g),
            DataLoader(test, batch_size=500))


def _model(seed=0, dtype=torch.float32):
    model = tc.CourseCNN().to(dtype)
    return tc.load_numpy_params(model, numpy_cnn.init_cnn(seed))


# ---------------------------------------------------------------------------- model


def test_shapes_and_parameter_count():
    model = tc.CourseCNN()
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert tc.count_params(model) == 93_322
    assert [n for n, _ in model.named_children() if n != "pool"] == [
        "conv1", "conv2", "conv3", "fc1", "fc2"]


@pytest.mark.parametrize("shape, hint", [
    ((4, 28, 28), "unsqueeze(1)"),
    ((4, 784), "view(-1, 1, 28, 28)"),
    ((4, 3, 28, 28), "(4, 3, 28, 28)"),
    ((4, 1, 32, 32), "(4, 1, 32, 32)"),
])
def test_wrong_input_shape_is_a_clear_error(shape, hint):
    with pytest.raises(tc.ShapeError, match=r"\(N, 1, 28, 28\)") as info:
        tc.CourseCNN()(torch.zeros(shape))
    assert hint in str(info.value)
    assert isinstance(info.value, CourseError) and isinstance(info.value, ValueError)


def test_integer_images_are_rejected():
    with pytest.raises(tc.ShapeError, match="normalize"):
        tc.CourseCNN()(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_summary_is_the_numpy_table():
    torch_out, numpy_out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(torch_out):
        total = tc.summary(tc.CourseCNN())
    with contextlib.redirect_stdout(numpy_out):
        numpy_cnn.summary(numpy_cnn.init_cnn(0))
    assert total == 93_322
    assert torch_out.getvalue() == numpy_out.getvalue()
    assert "(None, 64, 5, 5)" in torch_out.getvalue()
    assert "Total params: 93,322" in torch_out.getvalue()
    # one formatter: summary_table.format_summary of summary_rows, also to a file
    from mnist_course.summary_table import format_summary

    rows = tc.summary_rows(tc.CourseCNN())
    assert rows[0] == ("conv1 (Conv2d 3x3)", (32, 26, 26), 320) and len(rows) == 12
    assert format_summary(rows, 93_322) + "\n" == numpy_out.getvalue()
    assert tc.format_summary is format_summary
    buf = io.StringIO()
    assert tc.summary(tc.CourseCNN(), file=buf) == 93_322 and buf.getvalue() == torch_out.getvalue()


# ---------------------------------------------------------------------------- weight transfer


def test_numpy_round_trip_is_exact():
    params = numpy_cnn.init_cnn(seed=3)
    back = tc.numpy_params(tc.load_numpy_params(tc.CourseCNN(), params))
    assert tuple(back) == KEYS
    for k in KEYS:
        assert back[k].dtype == np.float32 and back[k].flags.c_contiguous, k
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)


def test_torch_round_trip_is_exact():
    torch.manual_seed(1)
    a = tc.CourseCNN()
    b = tc.load_numpy_params(tc.CourseCNN(), tc.numpy_params(a))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    # numpy_params returns copies: training the model later does not change them
    p = tc.numpy_params(a)
    with torch.no_grad():
        a.fc2.bias.add_(1.0)
    assert not np.array_equal(p["fc2_b"], tc.numpy_params(a)["fc2_b"])


def test_missing_and_extra_keys_are_named():
    params = numpy_cnn.init_cnn(0)
    del params["conv2_b"]
    params["conv4_w"] = np.zeros(3)
    with pytest.raises(tc.ShapeError, match="missing conv2_b.*unexpected conv4_w"):
        tc.load_numpy_params(tc.CourseCNN(), params)


def test_wrong_shape_names_key_and_both_shapes():
    params = numpy_cnn.init_cnn(0)
    params["fc1_w"] = params["fc1_w"].T  # torch layout by mistake
    with pytest.raises(tc.ShapeError) as info:
        tc.load_numpy_params(tc.CourseCNN(), params)
    msg = str(info.value)
    assert "fc1_w" in msg and "(64, 576)" in msg and "(576, 64)" in msg and "D_in" in msg


def test_logits_agree_with_numpy(mnist):
    (_, _), (x_test, _) = mnist
    x = data.normalize(x_test[:64])
    params = numpy_cnn.init_cnn(0)
    ref, _ = numpy_cnn.cnn_forward(params, x)
    model = _model(0)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-8)])
def test_autograd_gradients_agree_with_numpy_backward(mnist, dtype, tol):
    (_, _), (x_test, y_test) = mnist
    x = data.normalize(x_test[:64]).astype(dtype)
    y = y_test[:64]
    params = {k: v.astype(dtype) for k, v in numpy_cnn.init_cnn(1).items()}
    loss_ref, grads_ref = numpy_cnn.cnn_loss_and_grads(params, x, y)

    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    model = tc.load_numpy_params(tc.CourseCNN().to(tdtype), params)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert abs(loss.item() - loss_ref) <= tol * max(1.0, abs(loss_ref))
    grads = {}
    for layer in ("conv1", "conv2", "conv3", "fc1", "fc2"):
        module = getattr(model, layer)
        w = module.weight.grad.numpy()
        grads[f"{layer}_w"] = w.T if layer.startswith("fc") else w
        grads[f"{layer}_b"] = module.bias.grad.numpy()
    for k in KEYS:
        a, b = grads[k], grads_ref[k]
        err = np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))
        # elementwise relative error is fragile for near-zero entries in float32, so also
        # accept agreement relative to the largest gradient of that parameter
        scale = np.abs(b).max()
        assert err <= tol or np.abs(a - b).max() <= tol * scale, (k, err)


# ---------------------------------------------------------------------------- device, data


def _fake_gpus(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends, "mps", types.SimpleNamespace(is_available=lambda: mps))


@pytest.mark.parametrize("cuda, mps, want", [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_pick_device_auto_prefers_cuda_then_mps(monkeypatch, cuda, mps, want):
    _fake_gpus(monkeypatch, cuda, mps)
    assert tc.pick_device("auto") == torch.device(want)
    assert tc.pick_device(" Auto ") == torch.device(want)


def test_pick_device(monkeypatch):
    _fake_gpus(monkeypatch, cuda=False, mps=False)
    assert tc.pick_device("cpu") == torch.device("cpu")
    assert tc.pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(CourseError, match="no CUDA GPU.*--device cpu"):
        tc.pick_device("cuda")
    with pytest.raises(CourseError, match="no Apple GPU.*--device cpu"):
        tc.pick_device("mps")
    with pytest.raises(CourseError, match="unknown device 'tpu'.*'mps'"):
        tc.pick_device("tpu")
    _fake_gpus(monkeypatch, cuda=False, mps=True)
    assert tc.pick_device("mps") == torch.device("mps")


def test_mnist_loaders(mnist):
    (_, y_train), (x_test, _) = mnist
    train, test = tc.mnist_loaders(batch_size=100, seed=0, limit=300)
    assert len(train.dataset) == 300 and len(test.dataset) == 10_000
    xb, yb = next(iter(test))
    assert xb.dtype == torch.float32 and xb.shape == (1000, 1, 28, 28) and yb.dtype == torch.int64
    np.testing.assert_array_equal(xb.numpy(), data.normalize(x_test[:1000]))
    first = [y.tolist() for _, y in train]
    assert [y.tolist() for _, y in tc.mnist_loaders(batch_size=100, seed=0, limit=300)[0]] \
        == first
    # shuffled, nothing lost
    assert sorted(y for batch in first for y in batch) == sorted(y_train[:300].tolist())
    assert first != [y_train[i:i + 100].tolist() for i in (0, 100, 200)]
    other = [y.tolist() for _, y in tc.mnist_loaders(batch_size=100, seed=1, limit=300)[0]]
    assert other != first
    with pytest.raises(CourseError, match="limit"):
        tc.mnist_loaders(limit=0)


# ---------------------------------------------------------------------------- training


def _short_last_batch(n=100, batch_size=64, seed=0):
    """Random images and labels in a loader whose last batch (36) is shorter than the others."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y, DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _per_sample_reference(model, x, y):
    with torch.no_grad():
        logits = model(x)
    return (F.cross_entropy(logits, y).item(),
            (logits.argmax(dim=1) == y).sum().item() / len(y))


def test_train_one_epoch_returns_the_mean_per_sample():
    x, y, loader = _short_last_batch()
    model = _model(0)
    want_loss, _ = _per_sample_reference(model, x, y)
    # lr = 0: every batch is scored by the same weights, so the epoch loss is the full-data loss
    got = tc.train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.0))
    assert isinstance(got, float)
    assert got == pytest.approx(want_loss, rel=1e-5)
    batch_means = [F.cross_entropy(model(xb), yb).item() for xb, yb in loader]
    assert got != pytest.approx(float(np.mean(batch_means)), rel=1e-5)  # not the batch mean


def test_train_one_epoch_is_the_plain_loop_to_the_last_bit():
    """The lesson's loop (loss.item() * len(y) summed in Python) gives the very same numbers."""
    _, _, loader = _short_last_batch(n=300)
    ref = _model(0)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    total, count = 0.0, 0
    ref.train()
    for xb, yb in loader:
        loss = F.cross_entropy(ref(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(yb)
        count += len(yb)
    model = _model(0)
    got = tc.train_one_epoch(model, loader, torch.optim.Adam(model.parameters(), lr=1e-3))
    assert got == total / count
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_train_one_epoch_trains_and_steps_the_scheduler():
    _, _, loader = _short_last_batch()
    model = _model(0)
    before = tc.numpy_params(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    model.eval()
    tc.train_one_epoch(model, loader, opt, F.cross_entropy, "cpu", scheduler=sched)
    assert model.training
    assert sched.last_epoch == len(loader) == 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 0.25)
    after = tc.numpy_params(model)
    assert any(not np.array_equal(before[k], after[k]) for k in KEYS)


def test_evaluate_returns_loss_and_accuracy_per_sample():
    x, y, loader = _short_last_batch()
    model = _model(0)
    want_loss, want_acc = _per_sample_reference(model, x, y)
    model.train()
    loss, acc = tc.evaluate(model, loader)
    assert isinstance(loss, float) and isinstance(acc, float)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert acc == pytest.approx(want_acc, abs=1e-12)
    assert model.training  # the previous mode is restored
    assert all(p.grad is None for p in model.parameters())
    # any loss function with a mean reduction
    l1, _ = tc.evaluate(model, loader, lambda logits, t: logits.abs().mean(), "cpu")
    with torch.no_grad():
        assert l1 == pytest.approx(model(x).abs().mean().item(), rel=1e-5)


def test_loops_name_a_model_on_the_wrong_device():
    _, _, loader = _short_last_batch()
    model = _model(0)
    with pytest.raises(CourseError, match=r"model is on cpu but device='cuda'.*model.to"):
        tc.evaluate(model, loader, device="cuda")
    with pytest.raises(CourseError, match=r"model is on cpu but device='mps'"):
        tc.train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1),
                           device="mps")


def test_empty_loaders_are_named():
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64)))
    model = tc.CourseCNN()
    with pytest.raises(CourseError, match="evaluation loader is empty"):
        tc.evaluate(model, empty)
    with pytest.raises(CourseError, match="training loader is empty"):
        tc.train_one_epoch(model, empty, torch.optim.SGD(model.parameters(), lr=0.1))


def test_fit_learns_and_returns_the_history(mnist):
    torch.manual_seed(0)
    model = _model(0)
    train, test = _loaders(mnist, 2000)
    rows = []
    history = tc.fit(model, train, test, epochs=2, progress=False, on_epoch=rows.append,
                     eval_name="test")
    assert set(history) == {"epochs", "step_loss", "test_accuracy", "train_seconds",
                            "seconds_per_epoch"}
    assert rows == history["epochs"] and [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert set(r) == {"epoch", "loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
        assert all(isinstance(v, (int, float)) for v in r.values())
        assert r["lr"] == 1e-3  # the default Adam(1e-3)
    assert len(history["step_loss"]) == 2 * math.ceil(2000 / 64)
    assert history["test_accuracy"] == rows[-1]["test_acc"] > 0.85
    assert rows[1]["loss"] < rows[0]["loss"]
    assert history["train_seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
    assert history["seconds_per_epoch"] == pytest.approx(history["train_seconds"] / 2)
    # the last row's evaluation is evaluate() of the final model
    assert (rows[-1]["test_loss"], rows[-1]["test_acc"]) == pytest.approx(
        tc.evaluate(model, test))
    # predict and evaluate agree, and predict accepts raw uint8 images
    (_, _), (x_test, y_test) = mnist
    pred = tc.predict(model, x_test[:1000])
    assert pred.dtype == np.int64 and pred.shape == (1000,)
    assert (pred == y_test[:1000]).mean() == pytest.approx(tc.evaluate(model, test)[1])


def test_fit_is_train_one_epoch_then_evaluate():
    """Same seed, same batches: fit's numbers are those of the two building blocks."""
    _, _, loader = _short_last_batch()
    torch.manual_seed(0)
    a = _model(0)
    history = tc.fit(a, loader, loader, epochs=1, optimizer=torch.optim.SGD(a.parameters(),
                                                                            lr=0.05),
                     progress=False)
    b = _model(0)
    loss = tc.train_one_epoch(b, loader, torch.optim.SGD(b.parameters(), lr=0.05))
    row = history["epochs"][0]
    assert set(row) == {"epoch", "loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert row["loss"] == pytest.approx(loss, rel=1e-6)
    assert (row["val_loss"], row["val_acc"]) == pytest.approx(tc.evaluate(b, loader), rel=1e-6)
    assert history["val_accuracy"] == row["val_acc"] and "test_accuracy" not in history
    # the epoch loss is the size-weighted mean of the step losses (batches of 64 and 36)
    s1, s2 = history["step_loss"]
    assert row["loss"] == pytest.approx((64 * s1 + 36 * s2) / 100, rel=1e-6)


def test_fit_records_the_learning_rate_at_the_start_of_each_epoch():
    _, _, loader = _short_last_batch()
    model = _model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    history = tc.fit(model, loader, loader, epochs=3, optimizer=opt, scheduler=sched,
                     progress=False)
    assert [r["lr"] for r in history["epochs"]] == pytest.approx([0.01, 0.01 / 4, 0.01 / 16])


def test_fit_shows_a_progress_bar(capsys, monkeypatch):
    _, _, loader = _short_last_batch()
    monkeypatch.setattr(tc, "live_progress", lambda: True)   # a terminal or a notebook
    tc.fit(_model(0), loader, loader, epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "2/2" in err


def test_fit_keeps_a_log_file_free_of_bars(capsys, monkeypatch):
    _, _, loader = _short_last_batch()
    monkeypatch.setattr(tc, "live_progress", lambda: False)  # stderr redirected to a file
    tc.fit(_model(0), loader, loader, epochs=1, progress=True)
    assert "epoch 1/1" not in capsys.readouterr().err


def test_fit_is_deterministic(mnist):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = _model(0)
        train, test = _loaders(mnist, 640, n_test=500, seed=7)
        runs.append(tc.fit(model, train, test, epochs=1, progress=False))
    assert runs[0]["step_loss"] == runs[1]["step_loss"]
    assert runs[0]["val_accuracy"] == runs[1]["val_accuracy"]


def test_fit_steps_the_scheduler_after_every_step(mnist):
    model = _model(0)
    train, test = _loaders(mnist, 320, n_test=100)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=2 * len(train))
    tc.fit(model, train, test, epochs=2, optimizer=opt, scheduler=sched, progress=False)
    assert sched.last_epoch == 2 * len(train)


def test_fit_rejects_bad_arguments(mnist):
    train, test = _loaders(mnist, 64, n_test=64)
    with pytest.raises(CourseError, match="epochs must be at least 1"):
        tc.fit(tc.CourseCNN(), train, test, epochs=0)
    for bad in ("train", "", "val acc", None):
        with pytest.raises(CourseError, match="eval_name must be"):
            tc.fit(tc.CourseCNN(), train, test, epochs=1, eval_name=bad)
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64)))
    with pytest.raises(CourseError, match="empty"):
        tc.fit(tc.CourseCNN(), empty, test, epochs=1, progress=False)


# ---------------------------------------------------------------------------- load_state

class _Evil:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _state_error(path, model=None) -> str:
    with pytest.raises(tc.WeightsFileError) as info:
        tc.load_state(path, model if model is not None else tc.CourseCNN())
    msg = str(info.value)
    assert str(path) in msg and "Traceback" not in msg
    return msg


def test_load_state_round_trip(tmp_path):
    model = _model(seed=1)
    torch.save(model.state_dict(), tmp_path / "course_cnn.pt")
    fresh = tc.CourseCNN()
    assert tc.load_state(tmp_path / "course_cnn.pt", fresh) is fresh
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_load_state_missing_file(tmp_path):
    with pytest.raises(tc.MissingWeightsError) as info:
        tc.load_state(tmp_path / "course_cnn.pt", tc.CourseCNN())
    assert isinstance(info.value, FileNotFoundError)
    assert "course_cnn.pt does not exist" in str(info.value)
    assert "torch.save(model.state_dict(), path)" in str(info.value)


@pytest.mark.parametrize("damage, words", [
    ("empty", "is empty"),
    ("a few bytes", "truncated or damaged"),
    ("half", "truncated or damaged"),
    ("text", "damaged or not a PyTorch file"),
])
def test_load_state_damaged_file(tmp_path, damage, words):
    torch.save(_model().state_dict(), tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    content = {"empty": b"", "a few bytes": good[:7], "half": good[: len(good) // 2],
               "text": b"hello, these are not weights\n"}[damage]
    (tmp_path / "course_cnn.pt").write_bytes(content)
    assert words in _state_error(tmp_path / "course_cnn.pt")


def test_load_state_refuses_pickled_objects_without_running_them(tmp_path):
    ran = tmp_path / "ran"
    torch.save({"conv1.weight": _Evil(ran)}, tmp_path / "evil.pt")
    msg = _state_error(tmp_path / "evil.pt")
    assert "Python objects" in msg and "weights_only=True" in msg
    assert not ran.exists(), "loading ran code from the file"


def test_load_state_wrong_content(tmp_path):
    model = _model()
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    assert "training checkpoint (model, epoch)" in _state_error(tmp_path / "checkpoint.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "holds a list, not a state_dict" in _state_error(tmp_path / "list.pt")
    state = model.state_dict()
    state["fc1.weight"] = state["fc1.weight"].T.clone()
    del state["fc2.bias"]
    torch.save(state, tmp_path / "course_cnn.pt")
    msg = _state_error(tmp_path / "course_cnn.pt")
    assert "does not fit CourseCNN" in msg and "fc2.bias" in msg
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    assert "Unexpected key" in _state_error(tmp_path / "other.pt")
