"""``mnist-course bench``: milliseconds per training step of the course CNN, three ways.

One training step is forward, backward and an Adam update of the course CNN on one batch, with

- composed: ``numpy_cnn.cnn_loss_and_grads``, the public layers one after the other (what a
  learner writes in lesson 03);
- fused: ``numpy_cnn.fused_loss_and_grads``, the same numbers computed channels-last with
  pooling fused into the convolution (what ``fit`` and ``mnist-course train numpy`` use);
- torch: ``torch_cnn.CourseCNN`` with ``torch.optim.Adam``.

All three get the same batch (random normalised-looking images: speed does not depend on the
pixel values), the same weights and the same number of threads (torch is set to use as many
threads as NumPy's BLAS). Each is timed in its own block after a warm-up; the report gives the
median of each and their ratios.

``mnist-course bench --nproc N`` measures data parallelism instead (:func:`run_processes`): one
epoch over the first 6,400 training images (100 global batches of 64) with 1 and with N
processes through ``torch.distributed``, reported as steps per second.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
import resource
import statistics
import sys
import time

import numpy as np

__all__ = ["blas_threads", "format_processes", "format_result", "run", "run_processes",
           "step_flops"]


def blas_threads() -> int:
    """Number of threads NumPy's BLAS (OpenBLAS) uses; falls back to the environment / CPU count."""
    libs = os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*")
    for path in glob.glob(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                     "openblas_get_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                n = int(fn())
                if n > 0:
                    return n
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def step_flops(batch_size: int = 64) -> int:
    """Floating-point operations in the matrix products of one (fused) NumPy training step.

    A product of (M, K) by (K, F) costs 2*M*K*F. Each conv/linear layer does one product forward
    and two backward (weights and input), except conv1, whose input gradient is never needed.
    """
    n = batch_size
    layers = [  # (M, K, F, needs input gradient)
        (n * 26 * 26, 9 * 1, 32, False),
        (n * 11 * 11, 9 * 32, 64, True),
        (n * 3 * 3, 9 * 64, 64, True),
        (n, 576, 64, True),
        (n, 64, 10, True),
    ]
    return sum(2 * m * k * f * (3 if dx else 2) for m, k, f, dx in layers)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _torch_model():
    """The course CNN in torch: ``mnist_course.torch_cnn.CourseCNN``."""
    from mnist_course.torch_cnn import CourseCNN

    return CourseCNN()


def run(batch_size: int = 64, steps: int = 20) -> dict:
    """Time one training step of the course CNN: composed NumPy, fused NumPy and torch.

    Returns a dict: numpy_ms (the fused NumPy step, what training uses), composed_ms and
    torch_ms (medians over ``steps``), ratio (numpy / torch), composed_vs_fused (composed_ms /
    numpy_ms), numpy_gflops (matmul GFLOP/s of the fused step), threads, batch_size, steps,
    numpy_epoch_s, composed_epoch_s and torch_epoch_s (estimated seconds for 60,000 images),
    peak_rss_mb (the peak memory of this process so far, torch included).
    """
    for name, value in (("batch_size", batch_size), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    import torch
    import torch.nn.functional as F

    from mnist_course import _nhwc, numpy_cnn
    from mnist_course.torch_cnn import load_numpy_params

    _nhwc.keep_freed_memory()  # as numpy_cnn.fit does; it applies to both NumPy paths alike
    threads = blas_threads()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch_size, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, batch_size)
        composed_params, fused_params = numpy_cnn.init_cnn(0), numpy_cnn.init_cnn(0)
        composed_adam, fused_adam = numpy_cnn.Adam(1e-3), numpy_cnn.Adam(1e-3)
        model = _torch_model()
        load_numpy_params(model, numpy_cnn.init_cnn(0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def composed_step():
            _, grads = numpy_cnn.cnn_loss_and_grads(composed_params, x, y)
            composed_adam.step(composed_params, grads)

        def fused_step():
            _, grads = numpy_cnn.fused_loss_and_grads(fused_params, x, y)
            fused_adam.step(fused_params, grads)

        def torch_step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xt), yt).backward()
            opt.step()

        def timed(step):
            start = time.perf_counter()
            step()
            return (time.perf_counter() - start) * 1000

        def block(step) -> list[float]:
            # Each implementation runs alone, warm-up first: NumPy's BLAS threads and torch's
            # OpenMP threads spin for a while after their work, so interleaving single steps
            # would charge each one for the other's idle threads.
            for _ in range(3):
                step()
            return [timed(step) for _ in range(steps)]

        composed_times = block(composed_step)
        fused_times = block(fused_step)
        torch_times = block(torch_step)
    finally:
        torch.set_num_threads(old_threads)
    composed_ms = statistics.median(composed_times)
    numpy_ms = statistics.median(fused_times)
    torch_ms = statistics.median(torch_times)
    epoch_steps = math.ceil(60000 / batch_size)
    return {
        "numpy_ms": numpy_ms,
        "composed_ms": composed_ms,
        "torch_ms": torch_ms,
        "ratio": numpy_ms / torch_ms,
        "composed_vs_fused": composed_ms / numpy_ms,
        "numpy_gflops": step_flops(batch_size) / (numpy_ms / 1000) / 1e9,
        "threads": threads,
        "batch_size": batch_size,
        "steps": steps,
        "numpy_epoch_s": numpy_ms * epoch_steps / 1000,
        "composed_epoch_s": composed_ms * epoch_steps / 1000,
        "torch_epoch_s": torch_ms * epoch_steps / 1000,
        "peak_rss_mb": _peak_rss_mb(),
    }


def format_result(d: dict) -> str:
    """A short human-readable report of :func:`run`'s result."""
    return "\n".join([
        (f"one training step (forward, backward, Adam) of the course CNN, "
         f"batch {d['batch_size']}, {d['threads']} thread(s), median of {d['steps']} steps"),
        (f"  numpy composed  {d['composed_ms']:8.2f} ms/step  "
         f"(~{d['composed_epoch_s']:.1f} s per 60k epoch; the public layers one by one)"),
        (f"  numpy fused     {d['numpy_ms']:8.2f} ms/step  (~{d['numpy_epoch_s']:.1f} s per 60k "
         f"epoch, {d['numpy_gflops']:.0f} GFLOP/s in matmuls; what training uses)"),
        f"  torch           {d['torch_ms']:8.2f} ms/step  (~{d['torch_epoch_s']:.1f} s per 60k epoch)",
        (f"  ratios: composed/fused {d['composed_vs_fused']:.2f}, "
         f"fused/torch {d['ratio']:.2f}"),
        f"  peak memory of this process: {d['peak_rss_mb']:.0f} MB",
    ])


def run_processes(nproc: int, images: int = 6400, batch_size: int = 64) -> dict:
    """Steps per second of data-parallel training (gloo, CPU) with 1 and with ``nproc``
    processes: one epoch over the first ``images`` training images, global batch
    ``batch_size``, constant learning rate. Start-up and test-set scoring are not counted."""
    from mnist_course import distributed

    out = {"images": images, "batch_size": batch_size, "steps_per_second": {}}
    for n in sorted({1, nproc}):
        history = distributed.run(n, epochs=1, batch_size=batch_size, limit=images,
                                  cosine=False, device="cpu", verbose=False)
        out["steps_per_second"][n] = history["steps_per_second"]
    return out


def format_processes(d: dict) -> str:
    """The report of :func:`run_processes`, one line per number of processes."""
    sps = d["steps_per_second"]
    lines = [(f"data-parallel training (gloo, CPU), {d['images']:,} images, global batch "
              f"{d['batch_size']}, constant learning rate")]
    for n, value in sps.items():
        lines.append(f"  {n} process{'es' if n > 1 else '  '}  {value:6.1f} steps/s"
                     + (f"  ({value / sps[1]:.2f}x the single process)" if n > 1 else ""))
    return "\n".join(lines)
