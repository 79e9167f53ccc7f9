"""Data-parallel training of the course CNN with ``torch.distributed`` (gloo, so any CPU works).

``mnist-course train torch --nproc N`` runs :func:`run`: N processes on this machine, each a
*rank* of one process group. Every rank holds the same model (``init_cnn(seed)``), wrapped in
``DistributedDataParallel``; a ``DistributedSampler`` gives each rank its own 1/N of every
epoch's shuffled order; in ``backward`` DDP averages the gradients over the ranks (an
all-reduce), so every rank takes the same Adam step and the models stay identical. ``--batch-size``
is the *global* batch: each rank computes ``batch_size // N`` images per step, and the mean of
the N equal-sized shard gradients is exactly the gradient of the global batch. Rank 0 scores the
test set after each epoch, prints the epoch line and writes ``--save``.

The same code runs under ``torchrun --nproc-per-node N -m mnist_course train torch`` (the
launcher sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``); then this process is
one rank and nothing is spawned.

On one machine with 2 cores, 2 processes cannot train faster than 1: they share the same cores,
and each step adds an all-reduce. Data parallelism pays off with one process per GPU (backend
``nccl``) or per machine.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from mnist_course import CourseError

__all__ = ["LAUNCHER_VARS", "choose_backend", "find_free_port", "run", "under_torchrun"]

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """True when a launcher such as ``torchrun`` started this process as one rank of a group."""
    return all(v in os.environ for v in LAUNCHER_VARS)


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise CourseError(
                f"port {port} on {host} is already in use, so the processes cannot meet there: "
                f"set MASTER_PORT to a free port (or unset it and a free one is picked)"
            ) from None


def choose_backend(device: str, nproc: int) -> tuple[str, str]:
    """``(backend, device type)`` for ``nproc`` processes on this machine: ``("nccl", "cuda")``
    when every process can have its own GPU (``device`` "auto" or "cuda"), else
    ``("gloo", "cpu")``. Apple's MPS has no collective backend, so "auto" uses the CPU there.
    Raises CourseError for "cuda" without enough GPUs, or a device DDP cannot use."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise CourseError(f"--nproc runs on the CPU (gloo) or one GPU per process (nccl); "
                          f"--device {device} is not supported with it")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and gpus < nproc:
        raise CourseError(f"--device cuda with {nproc} processes needs {nproc} GPUs, one per "
                          f"process; this machine has {gpus}. Use --device cpu (gloo)")
    if device != "cpu" and gpus >= nproc:
        return "nccl", "cuda"
    return "gloo", "cpu"


def run(nproc: int, *, epochs: int = 3, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
        limit: int | None = None, cosine: bool = True, save: Path | None = None,
        device: str = "auto", verbose: bool = True, dataset: str = "mnist",
        rank_indices=None, scheme: str = "glorot") -> dict | None:
    """Train the course CNN with ``nproc`` processes and return rank 0's history.

    The backend is gloo on the CPU, or nccl with one GPU per process when there are enough
    (:func:`choose_backend`; nccl is written for but has not been run by the course: no GPU here).
    The history has the keys of ``torch_cnn.fit`` with ``test_acc`` rows (``loss`` is the mean
    per sample over ALL ranks' images), plus ``world_size``, ``backend`` and
    ``steps_per_second``. ``batch_size`` is the global batch and must be a multiple of
    ``nproc``. Rank 0 prints one line per epoch (unless ``verbose`` is False) and, with ``save``,
    writes the final ``state_dict`` there (CPU tensors; ``torch_cnn.save_state``, which records
    a ``dataset`` other than MNIST). ``dataset``: "mnist" or "fashion-mnist". Under torchrun this
    process is one rank: ranks other than 0 return None.

    ``scheme``: the initialisation of ``numpy_cnn.init_cnn`` ("glorot", the command line's, or
    "he", lesson 03's choice). ``rank_indices``: a function ``(n, rank, world, seed, epoch) -> list of indices`` that picks
    each rank's images (:class:`mnist_course.sampler.RankSampler`) instead of torch's
    ``DistributedSampler``; it must be importable by the spawned processes (defined in a file,
    such as the learner's ``mine``, not in a notebook).
    """
    if nproc < 1:
        raise CourseError(f"--nproc must be at least 1, got {nproc}")
    if batch_size % nproc:
        raise CourseError(f"--batch-size {batch_size} is the global batch: it must split evenly "
                          f"over --nproc {nproc} processes (try {nproc * max(1, batch_size // nproc)})")
    if rank_indices is not None and getattr(rank_indices, "__module__", "__main__") == "__main__":
        raise CourseError(f"{getattr(rank_indices, '__name__', rank_indices)} is defined in the "
                          "notebook, and a spawned process can import a file, not a notebook "
                          "function: save it to mine (keep.save) and pass keep.use's copy")
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
              "limit": limit, "cosine": cosine, "save": None if save is None else str(save),
              "verbose": verbose, "dataset": dataset, "rank_indices": rank_indices,
              "scheme": scheme}
    if under_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if world != nproc:
            raise CourseError(f"torchrun started {world} processes but --nproc is {nproc}: "
                              "give the same number to both (or leave --nproc out)")
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))   # processes on this machine
        config["backend"], config["device"] = choose_backend(device, local)
        return _worker(int(os.environ["RANK"]), world, None, config)
    config["backend"], config["device"] = choose_backend(device, nproc)
    import torch.multiprocessing as mp

    from mnist_course import data

    data.fetch_mnist(dataset=dataset)  # once, here: the ranks then only read the verified cache
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" in os.environ:
        port = int(os.environ["MASTER_PORT"])
        _check_port(host, port)
    else:
        port = find_free_port(host)
    with tempfile.TemporaryDirectory(prefix="mnist-course-ddp-") as tmp:
        out = Path(tmp) / "history.json"
        config["history_file"] = str(out)
        try:
            mp.spawn(_worker, args=(nproc, (host, port), config), nprocs=nproc, join=True)
        except mp.ProcessRaisedException as exc:  # the child's traceback, as text
            last = [ln for ln in str(exc).strip().splitlines() if ln.strip()][-1]
            raise CourseError(f"a training process failed: {last.strip()}") from None
        return json.loads(out.read_text(encoding="utf-8"))


def _worker(rank: int, world: int, address, config: dict) -> dict | None:
    """One rank: join the group, train, let rank 0 score, print and save. Runs in a child
    process when spawned (``address`` = (host, port)), or in this one under torchrun."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from mnist_course import data, numpy_cnn, torch_cnn
    from mnist_course.history import EpochTotals, finish_history, format_epoch, new_history
    from mnist_course.schedule import cosine_factor

    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if config["device"] == "cuda":                  # one GPU per process (nccl)
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:                                           # processes share the cores (gloo)
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    init = "env://" if address is None else f"tcp://{address[0]}:{address[1]}"
    dist.init_process_group(config["backend"], init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(config["seed"])
        model = torch_cnn.CourseCNN()
        torch_cnn.load_numpy_params(model, numpy_cnn.init_cnn(config["seed"], config.get("scheme", "glorot")))
        model.to(device)
        ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                      else None)
        dataset = config.get("dataset", "mnist")
        (x_train, y_train), (x_test, y_test) = data.load_mnist(dataset=dataset)
        if config["limit"] is not None:
            x_train, y_train = x_train[:config["limit"]], y_train[:config["limit"]]
        train = TensorDataset(torch.from_numpy(data.normalize(x_train, dataset=dataset)),
                              torch.from_numpy(y_train))
        if config.get("rank_indices") is None:
            sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True,
                                         seed=config["seed"])
        else:                               # the learner's rank_indices, as a sampler
            from mnist_course.sampler import RankSampler

            sampler = RankSampler(len(train), rank, world, config["seed"],
                                  config["rank_indices"])
        loader = DataLoader(train, batch_size=config["batch_size"] // world, sampler=sampler)
        test = TensorDataset(torch.from_numpy(data.normalize(x_test, dataset=dataset)),
                             torch.from_numpy(y_test))
        test_loader = DataLoader(test, batch_size=1000)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=config["lr"])
        scheduler = None
        if config["cosine"]:
            total = config["epochs"] * len(loader)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: cosine_factor(step, total))
        history = new_history()
        for epoch in range(1, config["epochs"] + 1):
            sampler.set_epoch(epoch)        # a new shuffle each epoch, the same on every rank
            start = time.perf_counter()
            totals, step_loss = torch_cnn._run_epoch(ddp, loader, F.cross_entropy, device,
                                                     optimizer, scheduler)
            sums = torch.tensor([totals.loss_sum, totals.correct, totals.seen],
                                dtype=torch.float64, device=device)  # nccl: on the GPU
            dist.all_reduce(sums)           # every rank's images count in the epoch's figures
            seconds = time.perf_counter() - start
            if rank == 0:
                everyone = EpochTotals()
                everyone.add(float(sums[0]) / float(sums[2]), int(sums[1]), int(sums[2]))
                _, test_acc = torch_cnn.evaluate(model, test_loader, device=device)
                row = {"epoch": epoch, "loss": everyone.mean_loss,
                       "train_acc": everyone.accuracy, "test_acc": test_acc,
                       "lr": float(optimizer.param_groups[0]["lr"]), "seconds": seconds}
                history["epochs"].append(row)
                history["step_loss"] += step_loss
                if config["verbose"]:
                    print(format_epoch(row, config["epochs"]), flush=True)
            dist.barrier()                  # the others wait while rank 0 scores
        if rank != 0:
            return None
        history = finish_history(history, "test")
        history["world_size"] = world
        history["backend"] = config["backend"]
        history["steps_per_second"] = (config["epochs"] * len(loader)) / history["train_seconds"]
        history["sampler"] = ("DistributedSampler" if config.get("rank_indices") is None else
                              f"RankSampler({config['rank_indices'].__module__})")
        if config["save"]:
            torch_cnn.save_state(config["save"], model, dataset=dataset)
        if config.get("history_file"):
            Path(config["history_file"]).write_text(json.dumps(history), encoding="utf-8")
        return history
    finally:
        dist.destroy_process_group()

