"""The GPU check runs on the CPU too: at a tiny shape, through the script and the function."""

import os
import subprocess
import sys

import pytest

from rapgen.errors import RapgenError
from rapgen.finetune.gpu_check import GPU_PEAKS, dense_peak, gpu_check, train_flops
from rapgen.model.hparams import HParams

from support.helpers import ROOT

TINY = dict(n_layer=2, n_embd=32, n_head=2, n_ctx=32, train_steps=2, sample_tokens=4)


@pytest.mark.slow
def test_tiny_check_trains_with_and_without_xla_and_samples(capsys):
    out = gpu_check(mixed_precision="off", **TINY)  # pinned: "auto" is bfloat16 on an AVX-512 BF16 CPU
    said = capsys.readouterr().out
    assert out["dtype"] == "float32" and out["compute_capability"] is None
    assert [r["xla"] for r in out["train"]] == [False, True]
    for row in out["train"]:
        assert row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1.5
        assert row["peak_memory_gib"] > 0 and row["estimate_gib"] > 0
        # Random weights on random tokens: the loss is about ln(50257) = 10.8 either way.
        assert 9.5 < row["loss"] < 12.0
    # The same weights and batches with and without XLA: the first loss (before any update) is
    # the same forward pass, fused differently, so equal to float32 rounding.
    plain, xla = out["train"]
    assert xla["first_loss"] == pytest.approx(plain["first_loss"], rel=1e-5)
    # After the updates they may part by rounding the optimizer amplifies (see test_distribute):
    # at most 1% of what the updates changed.
    assert abs(xla["loss"] - plain["loss"]) <= 0.01 * abs(plain["loss"] - plain["first_loss"]) + 1e-5 * plain["loss"]
    assert [r["batch_size"] for r in out["sample"]] == [1, 8]
    assert all(r["tokens_per_s"] > 0 for r in out["sample"])
    assert "device: " in said and "(measured matmul)" in said
    assert "train with XLA: " in said and "rapgen plan estimates" in said and "sample at batch 8" in said


@pytest.mark.slow
def test_the_script_runs_as_users_run_it(tmp_path):
    script = ROOT / "bench" / "gpu_check.py"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--n_layer",
            "1",
            "--n_embd",
            "32",
            "--n_head",
            "2",
            "--n_ctx",
            "16",
            "--train_steps",
            "1",
            "--sample_tokens",
            "2",
            "--xla",
            "off",
            "--sample_batch_sizes",
            "1",
            "--mixed_precision",
            "off",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "float32 compute" in proc.stdout and "train: " in proc.stdout and "sample at batch 1" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(script), "--n_layer", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "gpu_check: error: n_layer must be a positive integer, got 0"


def test_gpu_peaks_come_from_the_table_and_the_cpu_is_measured():
    assert dense_peak("Tesla T4", (7, 5), "float16") == (65e12, "data sheet")
    assert dense_peak("NVIDIA A100-SXM4-40GB", (8, 0), "bfloat16") == (312e12, "data sheet")
    assert dense_peak("NVIDIA L4", (8, 9), "bfloat16")[0] == 121e12
    assert len({key for key, _ in GPU_PEAKS}) == len(GPU_PEAKS)
    flops, source = dense_peak("Some CPU", None, "float32")
    assert source == "measured matmul" and flops > 1e8


def test_flops_of_the_124m_step():
    hp = HParams()
    # 6 N per token for 1024 tokens plus attention: 12 * 12 layers * 768 * 1024^2.
    assert train_flops(hp.n_params(), 12, 768, 1, 1024) == 6.0 * hp.n_params() * 1024 + 12 * 12 * 768 * 1024**2
    assert 7.6e11 < train_flops(hp.n_params(), 12, 768, 1, 1024) < 9e11


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(train_steps=0), "train_steps must be a positive integer, got 0"),
        (dict(n_head=3), r"n_embd \(32\) must be a multiple of n_head \(3\)"),
        (dict(sequence_length=64), "sequence_length must be between 2 and n_ctx"),
        (dict(sample_tokens=32), "sample_tokens must be below n_ctx"),
        (dict(sample_batch_sizes=(1, 0)), r"sample_batch_sizes must hold positive integers, got \[1, 0\]"),
    ],
)
def test_bad_shapes_are_refused_before_any_work(options, message):
    with pytest.raises(RapgenError, match=message):
        gpu_check(**{**TINY, **options})
