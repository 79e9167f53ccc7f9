"""mnist-course bench: the keys and the formatting (no timing thresholds)."""

from __future__ import annotations

import json

import pytest

from mnist_course import bench, cli


def test_run_returns_positive_numbers():
    d = bench.run(batch_size=8, steps=2)
    for key in ("numpy_ms", "composed_ms", "torch_ms", "ratio", "composed_vs_fused",
                "numpy_gflops", "peak_rss_mb", "numpy_epoch_s", "composed_epoch_s",
                "torch_epoch_s"):
        assert d[key] > 0, key
    assert d["threads"] >= 1 and d["batch_size"] == 8 and d["steps"] == 2
    assert abs(d["ratio"] - d["numpy_ms"] / d["torch_ms"]) < 1e-9
    assert abs(d["composed_vs_fused"] - d["composed_ms"] / d["numpy_ms"]) < 1e-9
    text = bench.format_result(d)
    for word in ("composed", "fused", "torch", "composed/fused", "fused/torch"):
        assert word in text, word
    assert f"{d['composed_vs_fused']:.2f}" in text and f"{d['ratio']:.2f}" in text


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"batch_size": 0}, {"steps": 2.5}])
def test_run_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="at least 1"):
        bench.run(**kwargs)


def test_step_flops_counts_the_matmuls():
    # conv2 forward alone: 64*11*11 windows x 288 inputs x 64 filters x 2
    assert bench.step_flops(64) > 3 * 2 * 64 * 11 * 11 * 288 * 64
    assert bench.step_flops(128) == 2 * bench.step_flops(64)


def test_cli_bench_json(capsys):
    assert cli.main(["bench", "--json", "--steps", "1", "--batch-size", "4"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"numpy_ms", "composed_ms", "torch_ms", "ratio", "composed_vs_fused",
            "numpy_gflops"} <= set(d)


@pytest.mark.parametrize("argv, option", [(["--steps", "0"], "--steps"),
                                          (["--batch-size", "-3"], "--batch-size")])
def test_cli_bench_bad_sizes_are_a_one_line_usage_error(capsys, argv, option):
    assert cli.main(["bench", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "at least 1" in lines[0]
    assert lines[0].startswith("mnist-course bench: error:")


def test_processes_report_names_each_count_and_the_ratio():
    text = bench.format_processes({"images": 6400, "batch_size": 64,
                                   "steps_per_second": {1: 32.0, 2: 16.0}})
    assert "6,400 images, global batch 64" in text
    assert "1 process  " in text and "32.0 steps/s" in text
    assert "2 processes" in text and "(0.50x the single process)" in text


def test_bench_nproc_0_is_a_one_line_error(capsys):
    assert cli.main(["bench", "--nproc", "0"]) == 2
    err = capsys.readouterr().err
    assert "--nproc must be at least 1" in err and "Traceback" not in err
