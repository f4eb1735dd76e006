"""The memory plan: parameter counts, the estimate's terms, the choice of settings, `rapgen plan`.

The estimate itself is checked against measured peaks of big models by
bench/bench_memory.py; here one small real check runs a tiny model's training step in a
subprocess and compares its peak memory with the estimate.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from rapgen.errors import RapgenError
from rapgen.finetune.fitting import choose_settings
from rapgen.finetune.memory import GIB, RUNTIME_BYTES, estimate_memory, parameter_counts
from rapgen.model.hparams import HParams, variable_shapes

from support.helpers import run_cli

SIZES = {"124M": 124_439_808, "355M": 354_823_168, "774M": 774_030_080, "1558M": 1_557_611_200}


@pytest.mark.parametrize("name", list(SIZES))
def test_parameter_counts_match_the_released_models(name):
    hp = HParams.for_model(name)
    counts = parameter_counts(hp)
    assert counts["total"] == SIZES[name] == hp.n_params()
    assert counts["total"] == sum(math.prod(s) for s in variable_shapes(hp).values())
    assert counts["trained"] == counts["total"]
    assert counts["largest_trained"] == hp.n_vocab * hp.n_embd  # wte
    frozen = parameter_counts(hp, only_train_transformer_layers=True)
    # Frozen embeddings: wte, wpe and ln_f are not trained.
    assert frozen["trained"] == counts["total"] - (hp.n_vocab + hp.n_ctx + 2) * hp.n_embd
    assert frozen["largest_trained"] == 4 * hp.n_embd * hp.n_embd  # mlp/c_fc


def test_weights_are_float32_whatever_the_compute_type():
    hp = HParams.for_model("355M")
    for dtype in ("float32", "float16", "bfloat16"):
        est = estimate_memory(hp, compute_dtype=dtype)
        assert est["weights"] == 4 * SIZES["355M"]
        assert est["gradients"] == 4 * SIZES["355M"]


def test_optimizer_slots():
    hp = HParams.for_model("774M")
    adam = estimate_memory(hp, optimizer="adam")
    adafactor = estimate_memory(hp, optimizer="adafactor")
    sgd = estimate_memory(hp, optimizer="sgd")
    assert adam["optimizer"] == 8 * SIZES["774M"]  # m and v
    assert sgd["optimizer"] == 0
    # Adafactor: a row and a column mean per matrix, well under 1% of Adam's two copies.
    assert 0 < adafactor["optimizer"] < adam["optimizer"] / 100
    assert adam["total"] > adafactor["total"] > sgd["total"] - 1
    # Frozen embeddings drop wte's gradient and slots.
    frozen = estimate_memory(hp, optimizer="adam", only_train_transformer_layers=True)
    assert adam["total"] - frozen["total"] >= 8 * hp.n_vocab * hp.n_embd


def test_recompute_lowers_the_activations():
    for name in SIZES:
        hp = HParams.for_model(name)
        plain = estimate_memory(hp, optimizer="adafactor")
        recomputed = estimate_memory(hp, optimizer="adafactor", recompute=True)
        assert recomputed["activations"] < plain["activations"] / 5
        assert recomputed["total"] < plain["total"]
        assert plain["peak_at"] == "forward"


def test_mixed_precision_activations():
    hp = HParams.for_model("355M")
    f32 = estimate_memory(hp, sequence_length=1024, optimizer="adafactor")
    bf16 = estimate_memory(hp, sequence_length=1024, optimizer="adafactor", compute_dtype="bfloat16")
    assert bf16["activations"] < f32["activations"]
    # What grows with the window shrinks, though little: the softmax's output is kept in float32
    # and in the compute type (6 bytes an entry against 4), layer norms run in float32.
    half = dict(sequence_length=512, optimizer="adafactor")
    per_token_f32 = f32["activations"] - estimate_memory(hp, **half)["activations"]
    per_token_bf16 = bf16["activations"] - estimate_memory(hp, compute_dtype="bfloat16", **half)["activations"]
    assert 0.5 * per_token_f32 < per_token_bf16 < per_token_f32
    # At a short window the half-precision copies of the weights each matmul keeps dominate.
    short = dict(sequence_length=64, optimizer="adafactor")
    assert (
        estimate_memory(hp, compute_dtype="bfloat16", **short)["activations"]
        > estimate_memory(hp, **short)["activations"]
    )


def test_activations_grow_linearly_in_batch():
    hp = HParams.for_model("124M")
    a = [estimate_memory(hp, batch_size=b, sequence_length=256)["activations"] for b in (1, 2, 4)]
    # Everything kept for backward is per row: exactly proportional to the batch.
    assert a[1] == 2 * a[0] and a[2] == 4 * a[0]
    logits = [estimate_memory(hp, batch_size=b, sequence_length=256)["logits"] for b in (1, 2)]
    assert logits[1] == 2 * logits[0] == 2 * 4 * 256 * hp.n_vocab


def test_activations_grow_with_length_as_the_formula_says():
    hp = HParams.for_model("124M")
    # Doubling the length doubles the [B, T, E] terms and quadruples the attention matrices,
    # so activations grow by between 2x and 4x, and more than 2x at long lengths.
    a = {T: estimate_memory(hp, sequence_length=T)["activations"] for T in (128, 256, 512, 1024)}
    for T in (128, 256, 512):
        assert 2 * a[T] < a[2 * T] < 4 * a[T]
    ratio_short, ratio_long = a[256] / a[128], a[1024] / a[512]
    assert ratio_long > ratio_short
    # The fixed parts do not depend on the length.
    short, long = estimate_memory(hp, sequence_length=128), estimate_memory(hp, sequence_length=1024)
    for part in ("weights", "gradients", "optimizer", "workspace", "runtime"):
        assert short[part] == long[part]
    assert short["total"] < long["total"]


def test_total_is_the_larger_moment():
    hp = HParams.for_model("355M")
    for kwargs in (dict(), dict(optimizer="adafactor", recompute=True), dict(sequence_length=64)):
        est = estimate_memory(hp, **kwargs)
        fixed = est["weights"] + est["gradients"] + est["optimizer"] + est["workspace"] + est["runtime"]
        forward = fixed + est["activations"] + est["logits"]
        update = fixed + est["update"]
        assert est["total"] == max(forward, update)
        assert est["peak_at"] == ("forward" if forward >= update else "update")


def test_bad_estimate_input():
    hp = HParams.for_model("124M")
    with pytest.raises(RapgenError, match="optimizer"):
        estimate_memory(hp, optimizer="lion")
    with pytest.raises(RapgenError, match="n_ctx"):
        estimate_memory(hp, sequence_length=2048)
    with pytest.raises(RapgenError, match="batch_size"):
        estimate_memory(hp, batch_size=0)


def test_choose_settings_picks_adam_for_124M_on_16_gib():
    choice = choose_settings(HParams.for_model("124M"), 16 * GIB, model_name="124M")
    assert choice["fits"] and choice["optimizer"] == "adam" and not choice["recompute"]
    assert not choice["only_train_transformer_layers"]
    assert choice["reason"].startswith("124M on 16.0 GiB: adam, est. peak ")


def test_choose_settings_steps_down_for_big_models():
    choice = choose_settings(HParams.for_model("774M"), 15 * GIB, model_name="774M")
    assert choice["fits"] and choice["optimizer"] == "adafactor" and choice["recompute"]
    assert choice["estimate"]["total"] <= 0.9 * 15 * GIB
    # Each candidate the chooser skipped did not fit.
    adam = estimate_memory(HParams.for_model("774M"), optimizer="adam", recompute=True)
    assert adam["total"] > 0.9 * 15 * GIB
    # 1558M on 15 GiB: something smaller than Adam, whether or not it fits.
    big = choose_settings(HParams.for_model("1558M"), 15 * GIB, model_name="1558M")
    assert big["optimizer"] == "adafactor" and big["recompute"]
    assert "1558M on 15.0 GiB" in big["reason"]


def test_choose_settings_keeps_what_the_user_set():
    hp = HParams.for_model("774M")
    # Adam asked for: the chooser adds recompute, then frozen embeddings, but keeps Adam.
    choice = choose_settings(hp, 24 * GIB, optimizer="adam")
    assert choice["optimizer"] == "adam" and choice["recompute"]
    choice = choose_settings(hp, 15 * GIB, optimizer="adam")
    assert choice["optimizer"] == "adam" and choice["fits"] and choice["only_train_transformer_layers"]
    choice = choose_settings(hp, 12 * GIB, optimizer="adam")
    assert choice["optimizer"] == "adam" and not choice["fits"] and choice["only_train_transformer_layers"]
    # recompute=False asked for on 124M with a small budget: Adafactor without recompute.
    choice = choose_settings(HParams.for_model("124M"), 6 * GIB, recompute=False)
    assert not choice["recompute"] and choice["optimizer"] == "adafactor"


def test_choose_settings_says_nothing_fits():
    choice = choose_settings(HParams.for_model("1558M"), 4 * GIB, model_name="1558M")
    assert not choice["fits"] and choice["max_sequence_length"] is None
    assert "nothing fits" in choice["reason"] and "no sequence_length fits" in choice["reason"]
    # A budget where the weights fit but not 1024 tokens: the longest length that does.
    hp = HParams.for_model("124M")
    at_128 = estimate_memory(
        hp, sequence_length=128, optimizer="adafactor", recompute=True, only_train_transformer_layers=True
    )
    budget = at_128["total"] / 0.9 + 1
    choice = choose_settings(hp, budget, model_name="124M")
    assert not choice["fits"]
    longest = choice["max_sequence_length"]
    assert 128 <= longest < 1024 and f"--sequence_length {longest} would fit" in choice["reason"]
    smallest = dict(optimizer="adafactor", recompute=True, only_train_transformer_layers=True)
    assert estimate_memory(hp, sequence_length=longest, **smallest)["total"] <= 0.9 * budget
    assert estimate_memory(hp, sequence_length=longest + 1, **smallest)["total"] > 0.9 * budget


# -- a real step ----------------------------------------------------------------------

STEP = r"""
import json, sys
import numpy as np, tensorflow as tf
from rapgen.model.hparams import HParams
from rapgen.model.gpt2 import GPT2
from rapgen.finetune.config import TrainConfig
from rapgen.finetune.step import Trainer

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

hp = HParams(n_layer=2, n_embd=64, n_head=2, n_ctx=512)
tf.constant(0.0) + 1.0
base = rss()
model = GPT2(hp, seed=0)
trainer = Trainer(TrainConfig(dataset="x", optimizer="adam"), model, list(model.variables_by_name))
batch = tf.constant(np.random.default_rng(0).integers(0, hp.n_vocab, size=(1, 1, 513)), tf.int32)
for step in range(2):
    open("/proc/self/clear_refs", "w").write("5")  # the peak of the second step alone
    trainer.train_step(batch, tf.constant(1e-4), tf.constant(step, tf.int64))
print(json.dumps({"measured": hwm() - base}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_estimate_is_close_to_a_measured_tiny_step():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])["measured"]
    est = estimate_memory(HParams(n_layer=2, n_embd=64, n_head=2, n_ctx=512), sequence_length=512)
    estimated = est["total"] - RUNTIME_BYTES  # no CUDA context on a CPU
    print(f"tiny step: estimated {estimated / 1e6:.0f} MB, measured {measured / 1e6:.0f} MB")
    assert 0.7 < estimated / measured < 1.4, (estimated, measured)


# -- the command line -----------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_runs(tmp_path_factory):
    env = dict(os.environ)
    cwd = tmp_path_factory.mktemp("plan")  # no models/ here: nothing downloaded
    model_dir = cwd / "mine"
    model_dir.mkdir()
    (model_dir / "hparams.json").write_text(HParams(n_layer=2, n_embd=64, n_head=2, n_ctx=128).to_json())
    # One process runs every case, so TensorFlow is imported once.
    script = (
        "import sys, io, contextlib, json\n"
        "from rapgen.cli.commands import main\n"
        "out = {}\n"
        "for name, args in json.loads(sys.argv[1]).items():\n"
        "    o, e = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):\n"
        "        code = main(args)\n"
        "    out[name] = [code, o.getvalue(), e.getvalue()]\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    cases = {
        "774M": ["plan", "--model", "774M", "--memory_gb", "15"],
        "1558M_small": ["plan", "--model", "1558M", "--memory_gb", "4"],
        "dir": ["plan", "--model", str(model_dir), "--optimizer", "adafactor", "--recompute", "True"],
        "bad_memory": ["plan", "--model", "124M", "--memory_gb", "-3"],
        "bad_length": ["plan", "--model", "124M", "--sequence_length", "5000"],
    }
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.split("RESULT ", 1)[1])
    results["bad_name"] = run_cli(["plan", "--model", "999M"], env, cwd=cwd)
    return results


@pytest.mark.slow
def test_plan_prints_a_table_and_a_choice(plan_runs):
    code, out, err = plan_runs["774M"]
    assert code == 0, err
    assert "774M: 774.0M parameters" in out
    for row in (
        "weights (float32)",
        "gradients",
        "optimizer slots",
        "activations kept for backward",
        "logits",
        "estimated peak",
    ):
        assert row in out
    assert "774M on 15.0 GiB: adafactor + recompute, est. peak" in out
    assert "rapgen train ... --optimizer adafactor --recompute True" in out


@pytest.mark.slow
def test_plan_says_when_nothing_fits(plan_runs):
    code, out, _ = plan_runs["1558M_small"]
    assert code == 0 and "1558M on 4.0 GiB: nothing fits" in out


@pytest.mark.slow
def test_plan_reads_a_model_directory(plan_runs):
    code, out, err = plan_runs["dir"]
    assert code == 0, err
    assert "adafactor + recompute" in out and "x 128 tokens" in out


@pytest.mark.slow
@pytest.mark.parametrize("case, needle", [("bad_memory", "--memory_gb"), ("bad_length", "--sequence_length")])
def test_plan_bad_flags_are_one_line(plan_runs, case, needle):
    code, out, err = plan_runs[case]
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapgen: error:") and needle in lines[0]


@pytest.mark.slow
def test_plan_bad_model_name_is_one_line(plan_runs):
    r = plan_runs["bad_name"]
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapgen: error: unknown model name '999M'")


# -- LoRA (rapgen.model.lora): the frozen base, adapters trained --------------------------------

LORA_355M = 24 * 16 * ((1024 + 3072) + (1024 + 1024) + (1024 + 4096) + (4096 + 1024))  # r (in + out) per projection


def test_lora_counts_adapters_only_and_holds_the_base_in_the_compute_type():
    hp = HParams.for_model("355M")
    full = estimate_memory(hp, sequence_length=1024)
    lora = estimate_memory(hp, sequence_length=1024, lora_rank=16)
    assert lora["trained_parameters"] == LORA_355M == 6_291_456
    assert lora["parameters"] == SIZES["355M"]
    assert lora["weights"] == 4 * SIZES["355M"] + 4 * LORA_355M
    assert lora["gradients"] == 4 * LORA_355M and lora["optimizer"] == 8 * LORA_355M  # Adam's m and v
    assert lora["update"] < full["update"] / 100  # no dense wte gradient, temporaries of one small matrix
    assert lora["total"] < full["total"] - full["optimizer"]  # no 2.6 GiB of Adam slots
    bf16 = estimate_memory(hp, sequence_length=1024, lora_rank=16, compute_dtype="bfloat16")
    assert bf16["weights"] == 2 * SIZES["355M"] + 4 * LORA_355M
    only_attn = estimate_memory(hp, sequence_length=1024, lora_rank=16, lora_targets="c_attn")
    assert only_attn["trained_parameters"] == 24 * 16 * (1024 + 3072)


def test_1558M_at_1024_tokens_fits_a_T4_only_with_lora():
    hp = HParams.for_model("1558M")
    full = choose_settings(hp, 15 * GIB, sequence_length=1024, model_name="1558M")
    assert not full["fits"] and full["lora_rank"] == 0
    lora = choose_settings(hp, 15 * GIB, sequence_length=1024, model_name="1558M", lora_rank=16)
    assert lora["fits"] and lora["lora_rank"] == 16 and lora["estimate"]["total"] <= 0.9 * 15 * GIB
    assert lora["reason"].startswith("1558M on 15.0 GiB: LoRA rank 16 + adam")
    auto = choose_settings(hp, 15 * GIB, sequence_length=1024, model_name="1558M", lora_rank="auto", auto_rank=16)
    assert auto["fits"] and auto["lora_rank"] == 16
    # Where full fine-tuning fits, auto keeps it.
    small = choose_settings(HParams.for_model("124M"), 15 * GIB, model_name="124M", lora_rank="auto")
    assert small["fits"] and small["lora_rank"] == 0 and small["optimizer"] == "adam"


def test_plan_prints_the_lora_settings(capsys):
    from rapgen.finetune.fitting import plan

    plan(model="1558M", lora_rank=16, memory_gb=15)
    out = capsys.readouterr().out
    assert "1557.6M parameters (19.7M trained)" in out and "LoRA rank 16 + adam" in out
    assert "weights (frozen base + adapters)" in out
    assert "1558M on 15.0 GiB: LoRA rank 16 + adam" in out and "--lora_rank 16" in out.splitlines()[-1]


def test_plan_without_lora_names_the_lora_that_train_would_pick(capsys):
    from rapgen.finetune.fitting import plan

    plan(model="1558M", memory_gb=15)  # full fine-tuning only in the table, as by default
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith("1558M on 15.0 GiB: nothing fits")
    assert lines[-2].startswith("with LoRA (what `rapgen train` picks by default here): LoRA rank 16 + adam")
    assert lines[-1].endswith("--lora_rank 16")
