"""Model directories: save/load, the TF1 checkpoint format both ways, `init`, and bad input.

"TF1 side" tests build the network's variables in a `tf.compat.v1` graph, with variable
scopes as OpenAI's model.py does, and use `tf.compat.v1.train.Saver`: that is how
nshepperd/gpt-2 and gpt-2-simple read and write checkpoints.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from rapgen.errors import RapgenError
from rapgen.model.checkpoint import list_checkpoints, read_checkpoint
from rapgen.model.folders import init, latest_checkpoint, resolve_model_dir, save_model
from rapgen.model.gpt2 import GPT2
from rapgen.model.hparams import HParams
from rapgen.model.loading import load_model

from support.helpers import snapshot
from support.tf1 import tf1_gpt2_variables, tf1_restore

DATA = ".data-00000-of-00001"
HP = HParams(n_vocab=50257, n_ctx=32, n_embd=32, n_head=2, n_layer=2)


def randomize(model, seed):
    """Give every variable random values (so nothing equals its init value)."""
    rng = np.random.default_rng(seed)
    for var in model.variables_by_name.values():
        var.assign(rng.normal(0.0, 0.2, var.shape.as_list()).astype(np.float32))


def tokens(seed=0, shape=(2, 9), n_vocab=50257):
    return tf.constant(np.random.default_rng(seed).integers(0, n_vocab, size=shape).astype(np.int32))


def values(model):
    return {name: var.numpy() for name, var in model.variables_by_name.items()}


def index_paths(model_dir):
    with open(os.path.join(model_dir, "checkpoint"), encoding="utf-8") as f:
        text = f.read()
    paths = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model_checkpoint_path", "all_model_checkpoint_paths"):
            paths.append((key.strip(), json.loads(value.strip())))
    return paths


# -- save and load ----------------------------------------------------------------------


def test_save_then_load_gives_identical_logits(vocab_dir, tmp_path):
    model = GPT2(HP, seed=1)
    randomize(model, 2)
    prefix = save_model(model, str(tmp_path / "m"), vocab_dir)
    assert prefix == str(tmp_path / "m" / "model.ckpt")
    assert sorted(os.listdir(tmp_path / "m")) == sorted(
        ["checkpoint", "hparams.json", "encoder.json", "vocab.bpe", "model.ckpt.index", "model.ckpt" + DATA]
    )
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.hparams == HP
    x = tokens()
    assert np.array_equal(loaded(x).numpy(), model(x).numpy())
    on_disk = read_checkpoint(prefix)
    assert set(on_disk) == set(model.variables_by_name)
    for name, value in values(model).items():
        assert on_disk[name].dtype == np.float32 and np.array_equal(on_disk[name], value), name
    # The weights file is exactly the float32 parameters.
    assert os.path.getsize(prefix + DATA) == 4 * HP.n_params()


def test_checkpoint_index_holds_relative_paths(vocab_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    model = GPT2(HP, seed=1)
    first = save_model(model, model_dir, vocab_dir, step=5)
    second = save_model(model, model_dir, vocab_dir, step=12, keep=[first])
    paths = index_paths(model_dir)
    assert paths[0] == ("model_checkpoint_path", "model-12")
    assert [p for k, p in paths if k == "all_model_checkpoint_paths"] == ["model-5", "model-12"]
    assert not any(os.path.isabs(p) or os.sep in p or "/" in p for _, p in paths)
    # Moving the folder keeps it loadable: nothing points outside it.
    moved = str(tmp_path / "elsewhere")
    shutil.move(model_dir, moved)
    assert latest_checkpoint(moved) == os.path.join(moved, "model-12")
    assert tf.train.latest_checkpoint(moved) == os.path.join(moved, "model-12")
    assert second.endswith("model-12")


def test_rapgen_output_restores_in_a_tf1_saver_session(vocab_dir, tmp_path):
    model = GPT2(HP, seed=3)
    randomize(model, 4)
    model_dir = str(tmp_path / "out")
    save_model(model, model_dir, vocab_dir, step=7)
    restored = tf1_restore(model_dir, HParams.load(model_dir))
    want = values(model)
    assert set(restored) == set(want)
    for name in want:
        assert np.array_equal(restored[name], want[name]), name


@pytest.mark.parametrize("index_style", ["as_saver_writes", "relative_to_cwd", "absolute"])
def test_gpt2_simple_run_folder_loads_in_rapgen(vocab_dir, tmp_path, monkeypatch, index_style):
    """A run folder as gpt-2-simple writes it: TF1 graph, Adam slots, `counter`, cwd-relative index."""
    workdir = tmp_path / "colab"
    run_dir = workdir / "checkpoint" / "run1"
    run_dir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    save_path = "checkpoint/run1/model" if index_style != "absolute" else str(run_dir / "model")
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(5)
        variables = tf1_gpt2_variables(HP)
        init_ops = [v.assign(tf.random.normal(v.shape, stddev=0.2, seed=i)) for i, v in enumerate(variables)]
        loss = tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])
        step = tf.compat.v1.train.AdamOptimizer(1e-3).minimize(loss, var_list=variables)
        saver = tf.compat.v1.train.Saver(var_list=tf.compat.v1.global_variables(), max_to_keep=2)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(init_ops)
            sess.run(step)
            saver.save(sess, save_path, global_step=3)
            sess.run(step)
            saver.save(sess, save_path, global_step=5)
            want = {v.op.name: value for v, value in zip(variables, sess.run(variables))}
    if index_style == "relative_to_cwd":
        # Paths relative to the working directory the tool ran in, as some writers leave them.
        (run_dir / "checkpoint").write_text(
            'model_checkpoint_path: "checkpoint/run1/model-5"\n'
            'all_model_checkpoint_paths: "checkpoint/run1/model-3"\n'
            'all_model_checkpoint_paths: "checkpoint/run1/model-5"\n'
        )
    (run_dir / "counter").write_text("5\n")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(os.path.join(vocab_dir, name), run_dir / name)
    (run_dir / "hparams.json").write_text(HP.to_json())

    on_disk = read_checkpoint(str(run_dir / "model-5"))
    assert "model/wte/Adam" in on_disk and "model/wte/Adam_1" in on_disk and "beta1_power" in on_disk
    paths = dict(index_paths(str(run_dir)))
    if index_style == "absolute":
        assert os.path.isabs(paths["model_checkpoint_path"])
    else:
        assert paths["model_checkpoint_path"] in ("model-5", "checkpoint/run1/model-5")

    monkeypatch.chdir(tmp_path)  # load from another working directory
    assert latest_checkpoint(str(run_dir)) == os.path.join(str(run_dir), "model-5")
    model = load_model(str(run_dir))
    assert model.checkpoint == os.path.join(str(run_dir), "model-5")
    got = values(model)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    # An older checkpoint of the run can be asked for by prefix.
    older = load_model(str(run_dir), checkpoint=str(run_dir / "model-3"))
    assert not np.array_equal(older.variables_by_name["model/wte"].numpy(), want["model/wte"])


def test_openai_release_layout_loads(vocab_dir, tmp_path):
    """`model.ckpt` with a `checkpoint` index as OpenAI released it (no step number)."""
    model = GPT2(HP, seed=6)
    randomize(model, 7)
    model_dir = tmp_path / "124M"
    save_model(model, str(model_dir), vocab_dir)
    (model_dir / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    loaded = load_model("124M", models_dir=str(tmp_path))
    assert np.array_equal(loaded(tokens(1)).numpy(), model(tokens(1)).numpy())


# -- init, latest_checkpoint, list_checkpoints -----------------------------------------


def test_init_writes_a_loadable_model_and_refuses_to_overwrite(vocab_dir, tmp_path):
    model_dir = str(tmp_path / "tiny")
    assert init(model_dir, n_layer=2, n_embd=32, n_head=2, n_ctx=64, seed=3, vocab_dir=vocab_dir) == model_dir
    assert HParams.load(model_dir) == HParams(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2)
    for name in ("encoder.json", "vocab.bpe"):
        with open(os.path.join(model_dir, name), "rb") as a, open(os.path.join(vocab_dir, name), "rb") as b:
            assert a.read() == b.read()
    assert latest_checkpoint(model_dir) == os.path.join(model_dir, "model.ckpt")
    assert list_checkpoints(model_dir) == [os.path.join(model_dir, "model.ckpt")]
    before = snapshot(model_dir)
    with pytest.raises(RapgenError, match="already"):
        init(model_dir, n_layer=3, n_embd=32, n_head=2, n_ctx=64, seed=4, vocab_dir=vocab_dir)
    assert snapshot(model_dir) == before
    # Same seed, same weights.
    again = str(tmp_path / "again")
    init(again, n_layer=2, n_embd=32, n_head=2, n_ctx=64, seed=3, vocab_dir=vocab_dir)
    a, b = read_checkpoint(os.path.join(model_dir, "model.ckpt")), read_checkpoint(os.path.join(again, "model.ckpt"))
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_list_and_latest_checkpoint_order_by_step(vocab_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    model = GPT2(HP, seed=1)
    for step in (2, 10, 100, 9):
        save_model(model, model_dir, vocab_dir, step=step)
    names = [os.path.basename(p) for p in list_checkpoints(model_dir)]
    assert names == ["model-2", "model-9", "model-10", "model-100"]
    # The index names model-9 (the last save), and it wins over a higher step.
    assert latest_checkpoint(model_dir) == os.path.join(model_dir, "model-9")
    # An index naming a checkpoint that is gone: fall back to the newest complete one.
    os.unlink(os.path.join(model_dir, "model-9.index"))
    assert latest_checkpoint(model_dir) == os.path.join(model_dir, "model-100")
    # A checkpoint whose data file is missing, or a hidden temp one, is never chosen.
    os.unlink(os.path.join(model_dir, "model-100" + DATA))
    shutil.copy(os.path.join(model_dir, "model-10.index"), os.path.join(model_dir, ".tmp-model-500-1.index"))
    shutil.copy(os.path.join(model_dir, "model-10" + DATA), os.path.join(model_dir, ".tmp-model-500-1" + DATA))
    assert latest_checkpoint(model_dir) == os.path.join(model_dir, "model-10")
    assert [os.path.basename(p) for p in list_checkpoints(model_dir)] == ["model-2", "model-10"]
    # No index at all.
    os.unlink(os.path.join(model_dir, "checkpoint"))
    assert latest_checkpoint(model_dir) == os.path.join(model_dir, "model-10")
    assert latest_checkpoint(str(tmp_path)) is None


# -- bad input --------------------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, dst)
    return str(dst)


@pytest.mark.parametrize(
    "change, variable",
    [
        (dict(n_embd=32), "model/wte"),
        (dict(n_ctx=64), "model/wpe"),
        (dict(n_vocab=50000), "model/wte"),
        (dict(n_layer=3), "model/h2/"),
    ],
)
def test_hparams_that_mismatch_the_checkpoint_name_the_variable(model_copy, change, variable):
    hp = dataclasses.replace(HParams.load(model_copy), **change)
    with open(os.path.join(model_copy, "hparams.json"), "w", encoding="utf-8") as f:
        f.write(hp.to_json())
    with pytest.raises(RapgenError) as info:
        load_model(model_copy)
    message = str(info.value)
    assert variable in message and "\n" not in message


@pytest.mark.parametrize(
    "missing", ["hparams.json", "encoder.json", "vocab.bpe", "model.ckpt.index", "model.ckpt" + DATA]
)
def test_missing_file_names_the_file(model_copy, missing):
    os.unlink(os.path.join(model_copy, missing))
    with pytest.raises(RapgenError) as info:
        load_model(model_copy)
    message = str(info.value)
    assert missing in message and "\n" not in message
    assert "rapgen download" in message


def test_unknown_model_name_lists_valid_names(tmp_path):
    with pytest.raises(RapgenError) as info:
        resolve_model_dir("999M", models_dir=str(tmp_path))
    for name in ("124M", "355M", "774M", "1558M"):
        assert name in str(info.value)
    with pytest.raises(RapgenError, match="rapgen download 345M"):
        resolve_model_dir("345M", models_dir=str(tmp_path))
    with pytest.raises(RapgenError, match="does not exist"):
        load_model(str(tmp_path / "no" / "such" / "dir"))


def test_corrupt_hparams_json_is_a_rapgen_error(model_copy):
    with open(os.path.join(model_copy, "hparams.json"), "w") as f:
        f.write('{"n_vocab": 50257, ')
    with pytest.raises(RapgenError, match="hparams.json"):
        load_model(model_copy)


def test_checkpoint_of_another_network_is_a_rapgen_error(model_copy):
    prefix = os.path.join(model_copy, "model.ckpt")
    for suffix in (".index", DATA):
        os.unlink(prefix + suffix)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["some/other/var"], shape_and_slices=[""], tensors=[tf.zeros([3])])
    with pytest.raises(RapgenError, match="model/"):
        load_model(model_copy)


def test_resolve_model_dir_downloads_a_missing_named_model_only_when_asked(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    import rapgen.model.download as downloads

    from support.http_mirror import ModelMirror

    models = tmp_path / "models"
    with ModelMirror({"124M": tiny_model_dir}) as mirror:
        monkeypatch.setenv(downloads.ENV_BASE_URL, mirror.url)
        with pytest.raises(RapgenError, match="rapgen download 117M"):
            resolve_model_dir("117M", models_dir=str(models))  # download=False: refused, nothing fetched
        assert mirror.requests == [] and not models.exists()
        got = resolve_model_dir("117M", models_dir=str(models), download=True)
        assert got == str(models / "124M")
        assert "117M is not (completely) in" in capsys.readouterr().out
        assert np.array_equal(
            load_model(got)(tf.constant([[1, 2]])).numpy(), load_model(tiny_model_dir)(tf.constant([[1, 2]])).numpy()
        )
        mirror.reset_log()
        # Complete now: found without a request, and quiet says nothing.
        assert resolve_model_dir("124M", models_dir=str(models), download=True, quiet=True) == got
        assert mirror.requests == [] and capsys.readouterr().out == ""
