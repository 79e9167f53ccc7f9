"""`mnist-course train torch --nproc N`: data parallelism with torch.distributed (gloo, CPU).

One real run with 2 processes (it takes ~8 s to start on 2 cores) must give the weights that one
process computes on the same global batches; the errors that need no process group are checked
without starting any.
"""

from __future__ import annotations

import json
import socket

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from mnist_course import CourseError, cli, data, distributed, numpy_cnn, torch_cnn

LIMIT = 256  # 4 global batches of 64: each of the 2 ranks computes 32 images per step


def _one_process_reference() -> dict:
    """What 1 process computes from the same start, on the same global batches: the order of a
    DistributedSampler with one replica (the 2 ranks take its even and its odd positions)."""
    (x, y), _ = data.load_mnist()
    train = TensorDataset(torch.from_numpy(data.normalize(x[:LIMIT])), torch.from_numpy(y[:LIMIT]))
    sampler = DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler.set_epoch(1)
    loader = DataLoader(train, batch_size=64, sampler=sampler)
    torch.manual_seed(0)
    model = torch_cnn.load_numpy_params(torch_cnn.CourseCNN(), numpy_cnn.init_cnn(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch_cnn.train_one_epoch(model, loader, opt)   # --schedule constant
    return model.state_dict()


def _train(capfd, nproc: int, weights) -> dict:
    code = cli.main(["train", "torch", "--nproc", str(nproc), "--limit", str(LIMIT),
                     "--epochs", "1", "--schedule", "constant", "--json", "--no-progress",
                     "--device", "cpu", "--save", str(weights)])
    out = capfd.readouterr().out                 # capfd: the ranks print from child processes
    assert code == 0
    assert out.count("epoch 1/1") == 1          # rank 0 alone prints the epoch line
    return json.loads(out.strip().splitlines()[-1])


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_train_exactly_what_one_process_trains(capfd, mnist_raw, tmp_path):
    """`--nproc 2` against what `--nproc 1` computes: one process on the same global batches (the
    order of a DistributedSampler with one replica). Computed here without a process group, it
    spares a second start of the processes (~8 s); by hand the two commands agree to 2.5e-7."""
    two = _train(capfd, 2, tmp_path / "a.pt")
    assert two["world_size"] == 2 and two["params"] == 93_322 and two["epochs"] == 1
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    assert _max_diff(a, _one_process_reference()) <= 1e-4


@pytest.mark.parametrize("args, words", [
    (["train", "torch", "--nproc", "2", "--batch-size", "63"], "must split evenly"),
    (["train", "torch", "--nproc", "0"], "at least 1"),
    (["train", "numpy", "--nproc", "2"], "use `train torch --nproc N`"),
    (["train", "torch", "--nproc", "2", "--device", "cuda"], "needs 2 GPUs, one per process"),
    (["train", "torch", "--nproc", "2", "--device", "mps"], "--device mps is not supported"),
])
def test_bad_nproc_arguments_are_one_line_errors(capsys, args, words):
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_taken_port_is_named_before_anything_starts(monkeypatch, mnist_raw):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        monkeypatch.setenv("MASTER_PORT", str(port))
        with pytest.raises(CourseError, match=rf"port {port} on 127\.0\.0\.1 is already in use"):
            distributed.run(2, epochs=1, limit=LIMIT)


def test_torchrun_variables_make_this_process_one_rank(monkeypatch):
    for var in distributed.LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not distributed.under_torchrun()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert distributed.under_torchrun()
    with pytest.raises(CourseError, match="torchrun started 3 processes but --nproc is 2"):
        distributed.run(2, epochs=1)


@pytest.mark.parametrize("gpus, device, nproc, expected", [
    (0, "auto", 2, ("gloo", "cpu")),
    (2, "auto", 2, ("nccl", "cuda")),
    (1, "auto", 2, ("gloo", "cpu")),     # not one GPU per process: the CPU
    (4, "cpu", 2, ("gloo", "cpu")),
])
def test_backend_is_nccl_only_with_one_gpu_per_process(monkeypatch, gpus, device, nproc,
                                                       expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert distributed.choose_backend(device, nproc) == expected
