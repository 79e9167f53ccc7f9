"""mnist-course bench: the keys and the formatting (no timing thresholds)."""

from __future__ import annotations

import json

from mnist_course import bench, cli


def test_run_returns_positive_numbers():
    d = bench.run(batch_size=8, steps=2)
    for key in ("numpy_ms", "torch_ms", "ratio", "numpy_gflops", "peak_rss_mb"):
        assert d[key] > 0, key
    assert d["threads"] >= 1 and d["batch_size"] == 8 and d["steps"] == 2
    assert abs(d["ratio"] - d["numpy_ms"] / d["torch_ms"]) < 1e-9
    text = bench.format_result(d)
    assert "ratio" in text and "numpy" in text and "torch" in text


def test_step_flops_counts_the_matmuls():
    # conv2 forward alone: 64*11*11 windows x 288 inputs x 64 filters x 2
    assert bench.step_flops(64) > 3 * 2 * 64 * 11 * 11 * 288 * 64
    assert bench.step_flops(128) == 2 * bench.step_flops(64)


def test_cli_bench_json(capsys):
    assert cli.main(["bench", "--json", "--steps", "1", "--batch-size", "4"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"numpy_ms", "torch_ms", "ratio", "numpy_gflops"} <= set(d)
