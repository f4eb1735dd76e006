"""LoRA fine-tuning (rapgen.model.lora): adapters on a frozen tiny GPT-2, their run folder, merge and exact resume.

One module-scoped set of runs serves every test: run "a" trains 30 steps in one go with
lora_rank "auto" and a memory budget that full fine-tuning does not fit (so auto picks
LoRA); run "b" trains the same settings with an explicit rank, stopped at 15 and resumed
to 30. Pinned: bfloat16 compute (the frozen base held in bfloat16, the adapters float32,
on any CPU: TensorFlow emulates it where the CPU lacks it), one device.
"""

import json
import os
import shutil

import numpy as np
import pytest

from rapgen.errors import RapgenError
from rapgen.finetune.memory import GIB, estimate_memory
from rapgen.model.hparams import HParams

from support.helpers import ROOT, assert_one_line_error, run_cli, snapshot

DATASET = str(ROOT / "data" / "sample_lyrics.txt")
SHAPE = dict(n_layer=2, n_embd=32, n_head=2, n_ctx=64)
LENGTH, BATCH = 32, 2
SETTINGS = dict(
    dataset=DATASET,
    steps=30,
    batch_size=BATCH,
    sequence_length=LENGTH,
    learning_rate=3e-2,
    warmup_steps=0,
    val_every=0,
    sample_every=0,
    print_every=0,
    save_every=15,
    mixed_precision="bfloat16",
    distribute="off",
    optimizer="adam",
    recompute=False,
    only_train_transformer_layers=False,
    tensorboard=False,
    quiet=True,
)


def losses(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = [line.split(",") for line in f.read().splitlines()[1:]]
    return [float(r[1]) for r in rows]


def auto_budget_gib():
    """A budget (GiB) LoRA rank 16 fits and full fine-tuning does not, by rapgen.finetune.memory's estimate (10% kept free)."""
    hp = HParams(**SHAPE)
    common = dict(batch_size=BATCH, sequence_length=LENGTH, optimizer="adam", recompute=False, compute_dtype="bfloat16")
    full = estimate_memory(hp, **common)["total"]
    lora = estimate_memory(hp, lora_rank=16, **common)["total"]
    assert lora < full
    return (lora + full) / 2 / 0.9 / GIB


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    from rapgen import train

    root = tmp_path_factory.mktemp("lora")
    base = tiny_model(root / "models" / "tiny", seed=0, **SHAPE)
    checkpoints = str(root / "checkpoints")
    a = train(
        model=base, checkpoint_dir=checkpoints, run_name="a", lora_rank="auto", memory_gb=auto_budget_gib(), **SETTINGS
    )
    half = dict(SETTINGS, steps=15)
    train(model=base, checkpoint_dir=checkpoints, run_name="b", lora_rank=16, **half)
    # Resumed with lora_rank auto: the run keeps the LoRA it recorded.
    b = train(checkpoint_dir=checkpoints, run_name="b", lora_rank="auto", memory_gb=1000.0, **SETTINGS)
    return {"root": root, "base": base, "a": a["run_dir"], "b": b["run_dir"]}


@pytest.mark.slow
def test_auto_picks_lora_where_full_fine_tuning_does_not_fit_and_the_folder_holds_only_adapters(runs):
    from rapgen.model.checkpoint import read_checkpoint
    from rapgen.model.folders import check_model_dir

    with open(os.path.join(runs["a"], "train.json")) as f:
        assert json.load(f)["lora_rank"] == 16
    with open(os.path.join(runs["a"], "lora.json")) as f:
        info = json.load(f)
    assert (info["rank"], info["alpha"], info["targets"]) == (16, 16.0, ["c_attn", "c_proj", "c_fc"])
    assert info["base_model"] == runs["base"]
    tensors = read_checkpoint(check_model_dir(runs["a"]))
    assert not [n for n in tensors if n.startswith("model/")]  # no base weights
    # Two layers x four projections x (A, B), each with Adam's two slots; then step and loss scale.
    adapters = [n for n in tensors if n.endswith(("/A", "/B"))]
    assert len(adapters) == 16 and tensors["lora/h1/mlp/c_fc/A"].shape == (32, 16)
    assert tensors["lora/h0/attn/c_attn/B"].shape == (16, 96)
    assert len([n for n in tensors if n.endswith(("/Adam", "/Adam_1"))]) == 32
    assert int(tensors["rapgen/step"]) == 30
    # Trained in float32 whatever the compute type; the bfloat16 base is not saved at all.
    assert all(tensors[n].dtype == np.float32 for n in tensors if n.startswith("lora/"))


@pytest.mark.slow
def test_the_loss_falls_on_the_sample_lyrics(runs, vocab_dir):
    """The same 16 windows of the lyrics, scored by the base and by the LoRA run (merged at load).

    A random base bounds the fall: its token embeddings (std 0.02), frozen, tie every logit
    to small values, so what adapters on the projections can gain is about 0.1 nats.
    """
    from rapgen.data.dataset import load_dataset, validation_windows
    from rapgen.model.encoder import load_encoder
    from rapgen.model.loading import load_model

    data = load_dataset(DATASET, load_encoder(vocab_dir), 0.0, None, "utf-8", True)
    windows = validation_windows(data.train, LENGTH, 16)  # [16, T+1]

    def mean_loss(model):
        return float(np.mean([model.loss(windows[i : i + 8]).numpy() for i in range(0, 16, 8)]))

    base, trained = mean_loss(load_model(runs["base"])), mean_loss(load_model(runs["a"]))
    assert trained < base - 0.05, (base, trained)
    assert len(losses(runs["a"])) == 30


@pytest.mark.slow
def test_a_resumed_lora_run_computes_the_same_losses(runs):
    one_go, resumed = losses(runs["a"]), losses(runs["b"])
    assert resumed == one_go


@pytest.mark.slow
def test_rank_at_least_the_width_reproduces_a_full_update(runs):
    """The adapters, solved by SVD, equal any update ΔW of every projection: the logits match W + ΔW."""
    import tensorflow as tf

    from rapgen.model.folders import check_model_dir, read_weights
    from rapgen.model.gpt2 import GPT2
    from rapgen.model.lora import PREFIX, adapter_shapes, attach

    hp = HParams(**SHAPE)
    base = read_weights(check_model_dir(runs["base"]), hp)
    rng = np.random.default_rng(3)
    rank, alpha = 32, 8.0  # 32 = n_embd, the smaller side of every projection
    updated, values = dict(base), {}
    for name, (n_in, n_out) in adapter_shapes(hp, rank).items():
        delta = rng.normal(0, 0.05, (n_in, n_out)).astype(np.float64)  # full rank 32
        u, s, vt = np.linalg.svd(delta, full_matrices=False)  # [in, 32], [32], [32, out]
        values[f"{PREFIX}{name}/A"] = (u * np.sqrt(s)).astype(np.float32)  # [in, r]
        values[f"{PREFIX}{name}/B"] = (np.sqrt(s)[:, None] * vt / (alpha / rank)).astype(np.float32)  # [r, out]
        updated[f"model/{name}/w"] = (base[f"model/{name}/w"] + delta[None]).astype(np.float32)
    tokens = tf.constant(rng.integers(0, hp.n_vocab, (2, 20)), tf.int32)
    with_adapters = GPT2(hp, weights=base)
    attach(with_adapters, rank, alpha, values=values)
    expected = GPT2(hp, weights=updated)(tokens).numpy()  # [2, 20, V]
    got = with_adapters(tokens).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(expected - GPT2(hp, weights=base)(tokens).numpy()).max() > 1e-2  # the update changes the logits


@pytest.mark.slow
def test_merge_load_gives_the_logits_of_the_unmerged_run(runs, cli_env):
    """load_model (merged once at load) and `rapgen merge` → load both equal the base + adapters forward pass."""
    import tensorflow as tf

    from rapgen.model.folders import check_model_dir, latest_checkpoint, read_weights
    from rapgen.model.gpt2 import GPT2
    from rapgen.model.loading import load_model
    from rapgen.model.lora import attach
    from rapgen.model.lora_run import merge, read_adapters

    hp = HParams(**SHAPE)
    prefix = check_model_dir(runs["a"])
    unmerged = GPT2(hp, weights=read_weights(check_model_dir(runs["base"]), hp))
    attach(unmerged, 16, 16.0, values=read_adapters(prefix))
    tokens = tf.constant(np.random.default_rng(0).integers(0, hp.n_vocab, (2, 24)), tf.int32)
    reference = unmerged(tokens).numpy()  # [2, 24, V]
    base_logits = GPT2(hp, weights=read_weights(check_model_dir(runs["base"]), hp))(tokens).numpy()
    assert np.abs(reference - base_logits).max() > 1e-3  # training moved the adapters away from B = 0

    loaded = load_model(runs["a"])
    assert not loaded.adapters  # merged into the weights: no extra work per token
    assert np.abs(loaded(tokens).numpy() - reference).max() <= 1e-4

    out = str(runs["root"] / "merged")
    result = run_cli(["merge", runs["a"], out], cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == out
    assert sorted(os.listdir(out)) == [
        "checkpoint",
        "encoder.json",
        "hparams.json",
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.index",
        "vocab.bpe",
    ]
    with open(os.path.join(out, "checkpoint")) as f:
        assert 'model_checkpoint_path: "model.ckpt"' in f.read()  # relative, as OpenAI's release
    assert latest_checkpoint(out) == os.path.join(out, "model.ckpt")
    assert np.abs(load_model(out)(tokens).numpy() - reference).max() <= 1e-4
    # gpt-2-simple and nshepperd/gpt-2 restore it in their TF1 graph, every variable by its name.
    from support.tf1 import tf1_restore

    restored = tf1_restore(out, hp)
    for name, value in read_weights(check_model_dir(out), hp).items():
        np.testing.assert_array_equal(restored[name], value)

    before = snapshot(out)  # a second merge into it is refused and changes nothing
    with pytest.raises(RapgenError, match="already holds a model"):
        merge(runs["a"], out)
    assert snapshot(out) == before


@pytest.mark.slow
def test_a_lora_run_with_the_wrong_base_is_refused_with_one_line(runs, cli_env, tiny_model):
    from rapgen.model.loading import load_model

    root = runs["root"]
    other = tiny_model(root / "models" / "other", seed=1, **SHAPE)  # same shape, other weights
    moved = str(root / "checkpoints" / "moved")
    shutil.copytree(runs["a"], moved)
    with open(os.path.join(moved, "lora.json")) as f:
        info = json.load(f)
    with open(os.path.join(moved, "lora.json"), "w") as f:
        json.dump({**info, "base_model": other, "base_dir": other}, f)
    result = run_cli(["sample", "--model", moved, "--length", "4", "--seed", "1"], cli_env)
    assert_one_line_error(result, moved, "other weights", other)

    with open(os.path.join(moved, "lora.json"), "w") as f:
        json.dump({**info, "base_model": "124M", "base_dir": str(root / "gone")}, f)
    with pytest.raises(RapgenError, match=r"needs its base model 124M.*rapgen download 124M"):
        load_model(moved, models_dir=str(root / "models"))


def test_recompute_gives_the_adapters_the_same_gradients():
    """Gradient checkpointing (tf.recompute_grad per block) reaches the adapters' variables too."""
    import tensorflow as tf

    from rapgen.model.gpt2 import GPT2
    from rapgen.model.lora import attach

    hp = HParams(**SHAPE)
    model = GPT2(hp, seed=0)
    values = {name: value.numpy() for name, value in attach(model, 4, seed=0).items()}
    values["lora/h0/attn/c_attn/B"] += 0.05  # B = 0 would leave A without a gradient
    variables = attach(model, 4, seed=0, values=values)
    tokens = tf.constant(np.random.default_rng(0).integers(0, hp.n_vocab, (2, 17)), tf.int32)  # [B, T+1]
    grads = {}
    for recompute in (False, True):
        with tf.GradientTape() as tape:
            loss = model.loss(tokens, recompute=recompute)
        grads[recompute] = dict(zip(variables, (g.numpy() for g in tape.gradient(loss, list(variables.values())))))
    assert np.abs(grads[False]["lora/h0/attn/c_attn/A"]).max() > 1e-6
    for name, value in grads[False].items():
        np.testing.assert_allclose(grads[True][name], value, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_a_new_machine_fetches_a_released_base_then_loads_the_run(runs, monkeypatch):
    """A LoRA run on Drive, its base (named 124M here, a tiny model on a loopback mirror) not on this machine."""
    import tensorflow as tf

    import rapgen.model.download as downloads
    from rapgen.model.loading import load_model
    from rapgen.model.lora_run import ensure_base

    from support.http_mirror import ModelMirror

    root = runs["root"]
    on_drive = str(root / "checkpoints" / "on_drive")
    shutil.copytree(runs["a"], on_drive)
    with open(os.path.join(on_drive, "lora.json")) as f:
        info = json.load(f)
    with open(os.path.join(on_drive, "lora.json"), "w") as f:
        json.dump({**info, "base_model": "124M", "base_dir": str(root / "a-vanished-vm")}, f)
    models = str(root / "fresh_models")
    with ModelMirror({"124M": runs["base"]}) as mirror:
        monkeypatch.setenv(downloads.ENV_BASE_URL, mirror.url)
        with pytest.raises(RapgenError, match="needs its base model 124M"):
            load_model(on_drive, models_dir=models)  # loading never downloads
        assert mirror.requests == []
        prefix = ensure_base(on_drive, models_dir=models, quiet=True)
    assert prefix == os.path.join(models, "124M", "model.ckpt")
    tokens = tf.constant([[50256, 16, 17, 18]])
    np.testing.assert_array_equal(
        load_model(on_drive, models_dir=models)(tokens).numpy(), load_model(runs["a"])(tokens).numpy()
    )
    # `sample` (notebook 03) looks for the base under the models_dir it is given, as load_model
    # does; notebook 03's fetch_base finds it there and fetches nothing.
    import rapgen.notebook as notebook
    from rapgen import sample

    notebook.fetch_base(on_drive, models_dir=models)
    songs = sample(model=on_drive, models_dir=models, artist="MC Fjord", length=3, seed=1, quiet=True)
    assert len(songs) == 1 and songs[0].startswith("<<MC Fjord")


@pytest.mark.slow
def test_a_damaged_lora_checkpoint_is_one_line_for_sample_and_resume(runs, cli_env):
    """Adapters whose bytes changed at the same size (a partial Drive copy): the checksum error is
    one line naming the file, for sampling and for resuming, and nothing is written."""
    from rapgen import train

    damaged = str(runs["root"] / "checkpoints" / "damaged")
    shutil.copytree(runs["b"], damaged)
    data = os.path.join(damaged, "model-30.data-00000-of-00001")
    with open(data, "rb") as f:
        raw = f.read()
    with open(data, "wb") as f:
        f.write(bytes(b ^ 0xFF for b in raw))
    before = snapshot(damaged)
    result = run_cli(["sample", "--model", damaged, "--length", "4", "--seed", "1"], cli_env)
    assert_one_line_error(result, "model-30 is damaged", "fails its checksum")
    with pytest.raises(RapgenError, match=r"model-30 is damaged.*fails its checksum"):
        train(checkpoint_dir=str(runs["root"] / "checkpoints"), run_name="damaged", **dict(SETTINGS, steps=31))
    assert snapshot(damaged) == before


@pytest.mark.slow
def test_a_resumed_lora_run_refuses_another_alpha_or_targets(runs):
    """alpha and the targets are part of a LoRA run's state, as its rank is: another value is one
    line, not a silent switch back to the recorded one."""
    from rapgen import train

    copy = str(runs["root"] / "checkpoints" / "other_alpha")
    shutil.copytree(runs["b"], copy)
    before = snapshot(copy)
    options = dict(SETTINGS, steps=31, checkpoint_dir=str(runs["root"] / "checkpoints"), run_name="other_alpha")
    with pytest.raises(RapgenError, match="trained with --lora_alpha 16: continue it without --lora_alpha"):
        train(lora_alpha=32.0, **options)
    with pytest.raises(RapgenError, match="trained with --lora_targets c_attn,c_proj,c_fc: continue it without"):
        train(lora_targets="c_attn", **options)
    assert snapshot(copy) == before
