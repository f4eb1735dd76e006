"""Sampling: the logit filters with fake logits, and the compiled generation loop.

A "unigram" model makes the loop testable with known probabilities: with ln_f's gain 0 and
bias e_0 the final hidden state is e_0 whatever the input, so the logits of every step are
exactly column 0 of `wte`, which the test sets.
"""

import shutil

import numpy as np
import pytest
import tensorflow as tf

from rapgen.errors import RapgenError
from rapgen.model.gpt2 import GPT2
from rapgen.model.hparams import HParams
from rapgen.model.loading import load_model
from rapgen.write.generation import _generation_function, generate
from rapgen.write.logits import choose_tokens, top_p_logits
from rapgen.write.songs import build_prompt, sample

EOT_ID = 50256
V_FAKE = 2000


def fake_logits(rows, seed, scale=2.0, v=V_FAKE):
    return np.random.default_rng(seed).normal(0.0, scale, size=(rows, v)).astype(np.float32)


def draw(logits, temperature, top_k, top_p, seeds):
    """Tokens [len(seeds), B] from choose_tokens, one call per seed."""
    x = tf.constant(logits)
    return np.stack([choose_tokens(x, temperature, top_k, top_p, tf.constant([s, 7], tf.int32)).numpy() for s in seeds])


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_nucleus(logits_row, p):
    """Indices of the smallest set of most likely tokens whose probability reaches p."""
    probs = softmax(logits_row.astype(np.float64))
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    n = int(np.searchsorted(cum, p) + 1)  # first index where cum >= p, plus one
    return set(order[:n].tolist()), cum


# -- logit filters ----------------------------------------------------------------------


def test_top_k_40_never_emits_outside_the_40_largest():
    logits = fake_logits(16, seed=0)
    tokens = draw(logits, 1.0, 40, 0.0, range(60))  # 960 draws
    for b in range(16):
        allowed = set(np.argsort(-logits[b])[:40].tolist())
        assert set(tokens[:, b].tolist()) <= allowed
        assert len(set(tokens[:, b].tolist())) >= 5  # it samples, it doesn't pick one


def test_top_k_draws_among_exactly_k_per_row():
    # Near-uniform (temperature 100) and 1000 draws a row: every kept token comes up, no other does.
    logits = fake_logits(8, seed=1, v=50)
    many = np.repeat(logits, 1000, axis=0)  # rows 1000 b .. 1000 b + 999 draw from row b
    tokens = draw(many, 100.0, 40, 0.0, [3])[0].reshape(8, 1000)
    for b in range(8):
        assert set(tokens[b].tolist()) == set(np.argsort(-logits[b])[:40].tolist())
    everything = draw(many, 100.0, 0, 0.0, [3])[0].reshape(8, 1000)  # k = 0 keeps every token
    for b in range(8):
        assert set(everything[b].tolist()) == set(range(50))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_top_k_draws_follow_the_renormalised_distribution(temperature):
    row = fake_logits(1, seed=2, scale=1.0)[0]
    logits = np.tile(row, (4000, 1))  # one call: 4000 independent draws of the same row
    tokens = draw(logits, temperature, 10, 0.0, [3])[0]
    top = np.argsort(-row)[:10]
    want = softmax(row[top] / temperature)
    got = np.array([(tokens == t).mean() for t in top])
    assert np.isin(tokens, top).all()  # every draw is one of the 10 (a float sum of shares need not be exactly 1)
    assert 0.5 * np.abs(got - want).sum() < 0.05  # total variation distance


def test_top_k_1_is_greedy_and_deterministic():
    logits = fake_logits(32, seed=4)
    tokens = draw(logits, 1.0, 1, 0.0, range(10))
    assert np.all(tokens == np.argmax(logits, -1)[None])
    tokens = draw(logits, 3.0, 1, 0.9, range(3))
    assert np.all(tokens == np.argmax(logits, -1)[None])


def test_temperature_0_is_argmax_whatever_the_filters():
    logits = fake_logits(32, seed=5)
    for top_k, top_p in ((40, 0.0), (0, 0.0), (0, 0.5), (5, 0.9)):
        tokens = draw(logits, 0.0, top_k, top_p, range(3))
        assert np.all(tokens == np.argmax(logits, -1)[None])


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_top_p_keeps_the_smallest_set_reaching_p(p):
    logits = fake_logits(24, seed=6, scale=1.5, v=300)
    out = top_p_logits(tf.constant(logits), p).numpy()
    checked = 0
    for b in range(24):
        want, cum = numpy_nucleus(logits[b], p)
        n = len(want)
        if abs(cum[n - 1] - p) < 1e-5 or (n > 1 and abs(cum[n - 2] - p) < 1e-5):
            continue  # too close to call in float32
        checked += 1
        assert set(np.flatnonzero(out[b] > -1e9).tolist()) == want, b
    assert checked >= 20
    tokens = draw(logits, 1.0, 0, p, range(30))
    for b in range(24):
        assert set(tokens[:, b].tolist()) <= numpy_nucleus(logits[b], p)[0]


def test_top_p_off_values_keep_everything():
    logits = fake_logits(4, seed=7)
    for p in (0.0, 1.0):
        assert np.array_equal(top_p_logits(tf.constant(logits), p).numpy(), logits)


def test_top_k_then_top_p_uses_the_top_k_distribution():
    logits = fake_logits(12, seed=8, scale=1.0)
    k, p = 20, 0.6
    # As choose_tokens cuts it: top-p over the k most likely, sorted.
    values, ids = tf.math.top_k(tf.constant(logits), k)
    out, ids = top_p_logits(values, p).numpy(), ids.numpy()
    for b in range(12):
        top = np.argsort(-logits[b])[:k]
        nucleus, _ = numpy_nucleus(logits[b][top], p)
        want = set(top[sorted(nucleus)].tolist())
        assert set(ids[b][out[b] > -1e9].tolist()) == want
    # The draw cuts the k most likely, sorted, by p too: every token drawn is in that nucleus.
    tokens = draw(logits, 1.0, k, p, range(30))
    for b in range(12):
        top = np.argsort(-logits[b])[:k]
        assert set(tokens[:, b].tolist()) <= set(top[sorted(numpy_nucleus(logits[b][top], p)[0])].tolist())


def test_huge_top_k_keeps_everything_instead_of_failing():
    logits = fake_logits(3, seed=9, v=50)
    assert np.array_equal(draw(logits, 1.0, 1000, 0.0, range(20)), draw(logits, 1.0, 0, 0.0, range(20)))


def test_huge_top_k_in_the_loop_is_plain_sampling():
    column = np.random.default_rng(12).normal(0.0, 1.0, 50257).astype(np.float32)
    model = unigram_model(column)
    a = generate(model, [1], length=6, top_k=100000, seed=4, stop_at_end=False)
    b = generate(model, [1], length=6, top_k=0, seed=4, stop_at_end=False)
    assert a == b


# -- the generation loop ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def rich():
    """A small-vocabulary model with every weight random and large enough that positions matter.

    (A freshly initialised model barely looks at positions or context: a cache bug could
    leave its greedy choices unchanged.)
    """
    hp = HParams(n_vocab=1000, n_ctx=32, n_embd=48, n_head=4, n_layer=2)
    model = GPT2(hp, seed=0)
    rng = np.random.default_rng(21)
    for name, var in model.variables_by_name.items():
        shape = var.shape.as_list()
        if name.endswith("/g"):
            value = rng.normal(1.0, 0.3, shape)
        elif name == "model/wpe":
            value = rng.normal(0.0, 1.0, shape)  # strong positions: greedy paths don't settle into a loop
        elif name.endswith("/b") or name == "model/wte":
            value = rng.normal(0.0, 0.3, shape)
        else:
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
        var.assign(value.astype(np.float32))
    return model


def unigram_model(column, n_ctx=64):
    """A model whose logits are `column` at every step, whatever the tokens."""
    hp = HParams(n_vocab=50257, n_ctx=n_ctx, n_embd=16, n_head=2, n_layer=1)
    model = GPT2(hp, seed=0)
    wte = model.variables_by_name["model/wte"].numpy()
    wte[:, 0] = column
    model.variables_by_name["model/wte"].assign(wte)
    model.variables_by_name["model/ln_f/g"].assign(np.zeros(16, np.float32))
    model.variables_by_name["model/ln_f/b"].assign(np.eye(16, dtype=np.float32)[0])
    return model


def greedy_reference(model, context, length):
    """Greedy continuation re-running the whole sequence through `model(...)` at each step."""
    seq = list(context)
    for _ in range(length):
        logits = model(tf.constant([seq], tf.int32)).numpy()[0, -1]
        seq.append(int(np.argmax(logits)))
    return seq[len(context) :]


@pytest.mark.parametrize("which", ["rich", "tiny"])
def test_greedy_generate_equals_full_rerun_loop(request, which):
    model = request.getfixturevalue(which)
    context = [999, 16, 12, 811, 228]
    rows = generate(model, context, length=24, batch_size=2, temperature=0.0, stop_at_end=False)
    want = greedy_reference(model, context, 24)
    assert rows == [want, want]
    if which == "rich":
        assert len(set(want)) > 8  # not one token repeated: each step's choice matters
    # top_k 1 at any temperature is the same path.
    assert generate(model, context, length=24, top_k=1, temperature=1.3, seed=9, stop_at_end=False) == [want]


def test_greedy_generate_up_to_the_last_context_position(rich):
    n_ctx = rich.hparams.n_ctx
    for n_prompt in (1, n_ctx - 6):
        context = np.random.default_rng(n_prompt).integers(0, 1000, size=n_prompt).tolist()
        rows = generate(rich, context, length=n_ctx - n_prompt, temperature=0.0, stop_at_end=False)
        assert rows == [greedy_reference(rich, context, n_ctx - n_prompt)]
        # length=None fills the context.
        assert generate(rich, context, temperature=0.0, stop_at_end=False) == rows


def test_seed_gives_same_tokens_other_seeds_differ(tiny):
    context = [EOT_ID, 16791]
    a = generate(tiny, context, length=20, batch_size=3, seed=5, stop_at_end=False)
    b = generate(tiny, context, length=20, batch_size=3, seed=5, stop_at_end=False)
    c = generate(tiny, context, length=20, batch_size=3, seed=6, stop_at_end=False)
    assert a == b
    assert a != c
    assert len({tuple(r) for r in a}) == 3  # the rows of a batch are different draws
    assert all(len(r) == 20 for r in a)


def test_generation_loop_is_traced_once(tiny_model_dir):
    model = load_model(tiny_model_dir)  # a fresh model: a fresh compiled loop
    calls = [
        dict(context=[1, 2, 3], length=5, batch_size=1),
        dict(context=[4] * 11, length=9, batch_size=4),
        dict(context=[EOT_ID], length=2, batch_size=2, temperature=0.0),
        dict(context=[5, 6], length=7, batch_size=8, top_k=0, top_p=0.8, stop_at_end=False),
        dict(context=list(range(40)), length=3, batch_size=3, temperature=0.7, top_k=3),
    ]
    for kwargs in calls:
        rows = generate(model, seed=1, **kwargs)
        assert len(rows) == kwargs["batch_size"]
    assert model.generation.function.experimental_get_tracing_count() == 1


def test_top_k_holds_inside_the_loop():
    column = np.random.default_rng(3).normal(0.0, 3.0, 50257).astype(np.float32)
    model = unigram_model(column)
    rows = generate(model, [1, 2, 3], length=50, batch_size=8, top_k=40, seed=2, stop_at_end=False)
    allowed = set(np.argsort(-column)[:40].tolist())
    seen = set(t for row in rows for t in row)
    assert seen <= allowed and len(seen) > 10


def test_rows_stop_at_end_of_text_and_are_prefixes_of_unstopped_rows():
    rng = np.random.default_rng(4)
    column = rng.normal(0.0, 1.0, 50257).astype(np.float32)
    column[EOT_ID] = 8.6  # about 6% per step
    model = unigram_model(column)
    args = dict(length=40, batch_size=8, top_k=0, seed=11)
    full = generate(model, [1, 2], stop_at_end=False, **args)
    stopped = generate(model, [1, 2], stop_at_end=True, **args)
    cut_short = 0
    for f, s in zip(full, stopped):
        assert len(f) == 40
        if EOT_ID in f:
            end = f.index(EOT_ID) + 1
            assert s == f[:end]
            cut_short += end < 40
        else:
            assert s == f
        assert EOT_ID not in s[:-1]
    assert cut_short >= 1
    # With stop_at_end=False a row goes on writing after its end of text.
    assert any(set(f[f.index(EOT_ID) + 1 :]) - {EOT_ID} for f in full if EOT_ID in f[:-1])


def test_loop_ends_early_when_every_row_has_ended():
    column = np.zeros(50257, np.float32)
    column[EOT_ID] = 30.0
    model = unigram_model(column)
    assert generate(model, [1, 2, 3], length=30, batch_size=3, seed=1) == [[EOT_ID]] * 3
    assert generate(model, [1, 2, 3], length=30, seed=1, stop_at_end=False) == [[EOT_ID] * 30]
    raw = _generation_function(model)(
        tf.constant([[1, 2, 3]] * 3, tf.int32),
        tf.zeros([3], tf.int32),
        tf.range(3),
        tf.zeros([3], tf.bool),
        tf.constant(30),
        tf.constant(1.0),
        tf.constant(40),
        tf.constant(0.0),
        tf.constant([1, 0], tf.int32),
        tf.constant(True),
    )
    assert raw.shape == (3, 1)


def test_loop_runs_until_the_last_row_ends_and_pads_ended_rows():
    column = np.zeros(50257, np.float32)
    column[EOT_ID] = np.log(50256.0)  # end of text: one chance in two at each step
    model = unigram_model(column)
    raw = _generation_function(model)(
        tf.constant([[1, 2]] * 4, tf.int32),
        tf.zeros([4], tf.int32),
        tf.range(4),
        tf.zeros([4], tf.bool),
        tf.constant(60),
        tf.constant(1.0),
        tf.constant(0),
        tf.constant(0.0),
        tf.constant([5, 0], tf.int32),
        tf.constant(True),
    ).numpy()
    ends = [list(row).index(EOT_ID) + 1 for row in raw]  # every row ends well before 60 steps
    assert raw.shape[1] == max(ends) < 60
    for row, end in zip(raw, ends):
        assert np.all(row[end:] == EOT_ID)
    assert len(set(ends)) > 1  # rows ended at different steps


# -- sample() ---------------------------------------------------------------------------


def test_sample_with_artist_and_seed(tiny_model_dir, capsys):
    a = sample(model=tiny_model_dir, artist="Lil Tofu", length=12, seed=3, nsamples=3, batch_size=2, quiet=True)
    b = sample(model=tiny_model_dir, artist="Lil Tofu", length=12, seed=3, nsamples=3, batch_size=2, quiet=True)
    assert a == b and len(a) == 3
    assert all(t.startswith("<<Lil Tofu") for t in a)
    c = sample(model=tiny_model_dir, artist="Lil Tofu", length=12, seed=3, include_prefix=False, quiet=True)
    assert not c[0].startswith("<<Lil Tofu") and a[0] == "<<Lil Tofu" + c[0]
    assert capsys.readouterr().out == ""
    sample(model=tiny_model_dir, prefix="yeah", length=4, seed=1)
    assert "SAMPLE 1" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_keeps_half_size_weights_and_close_logits(tiny_model_dir, precision):
    full = load_model(tiny_model_dir)
    half = load_model(tiny_model_dir, compute_dtype=precision, variable_dtype=precision)
    assert {v.dtype for v in half.variables_by_name.values()} == {tf.as_dtype(precision)}
    tokens = tf.constant(np.random.default_rng(5).integers(0, 50257, size=(2, 20)), tf.int32)
    a, b = full(tokens).numpy(), half(tokens).numpy()
    assert b.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa (float16 11): logits agree to a few percent of their
    # spread (measured: 4.6% and 0.5%), and a zeroed or garbled weight would be far off.
    assert np.max(np.abs(a - b)) < 0.1 * np.std(a)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    texts = [
        sample(model=tiny_model_dir, artist="Lil Tofu", length=8, seed=3, precision=precision, quiet=True)
        for _ in range(2)
    ]
    assert texts[0] == texts[1] and texts[0][0].startswith("<<Lil Tofu")
    with pytest.raises(RapgenError, match="--precision must be one of float32, bfloat16, float16; got 'half'"):
        sample(model=tiny_model_dir, artist="X", precision="half", quiet=True)


def test_build_prompt():
    assert build_prompt(None, "Yung Lean") == "<<Yung Lean"
    assert build_prompt(None, "  Yung Lean ") == "<<Yung Lean"
    assert build_prompt("yo", None) == "yo"
    assert build_prompt(None, None) is None


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(context=[1] * 100, length=29), "length"),
        (dict(context=[1] * 128, length=1), "prompt"),
        (dict(context=[1] * 300), "prompt"),
        (dict(context=[1], length=0), "length"),
        (dict(context=[1], length=-3), "length"),
        (dict(context=[1], length=5, top_k=-1), "top_k"),
        (dict(context=[1], length=5, temperature=-0.5), "temperature"),
        (dict(context=[1], length=5, top_p=1.5), "top_p"),
        (dict(context=[1], length=5, batch_size=0), "batch_size"),
        (dict(context=[], length=5), "empty"),
    ],
)
def test_bad_generate_arguments(tiny, kwargs, match):
    with pytest.raises(RapgenError, match=match) as info:
        generate(tiny, **kwargs)
    assert "\n" not in str(info.value)


def test_prompt_plus_length_over_context_says_what_fits(tiny):
    with pytest.raises(RapgenError, match="--length 28"):
        generate(tiny, [1] * 100, length=29)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(prefix=""),
        dict(prefix="   "),
        dict(artist=""),
        dict(artist="  "),
        dict(nsamples=0, artist="X"),
        dict(artist="X", length=0),
        dict(artist="X", temperature=-1.0),
        dict(artist="X", top_k=-5),
        dict(prefix="yo " * 200),
    ],
)
def test_bad_sample_arguments(tiny_model_dir, kwargs):
    with pytest.raises(RapgenError):
        sample(model=tiny_model_dir, seed=1, quiet=True, **kwargs)


# -- progress while a song is written -------------------------------------------------------


def test_on_step_reports_each_step_and_changes_nothing(tiny):
    context = [EOT_ID, 16791]
    steps = []
    with_progress = generate(tiny, context, length=12, batch_size=2, seed=5, stop_at_end=False, on_step=steps.append)
    assert steps == list(range(1, 13))
    assert with_progress == generate(tiny, context, length=12, batch_size=2, seed=5, stop_at_end=False)
    later = []
    generate(tiny, context, length=3, seed=1, stop_at_end=False)  # no callback: the last one is not kept
    generate(tiny, context, length=3, seed=1, stop_at_end=False, on_step=later.append)
    assert later == [1, 2, 3] and steps == list(range(1, 13))


def _run_in_terminal(args, cwd, timeout=300):
    """`python -m rapgen ARGS` with stdout and stderr on a pseudo-terminal; returns (status, text seen)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    import time

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen(
        [sys.executable, "-m", "rapgen", *args],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        cwd=cwd,
        close_fds=True,
    )
    os.close(child)
    seen, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=max(deadline - time.time(), 1))
    os.close(main)
    return proc.returncode, seen.decode("utf-8", "replace")


@pytest.mark.slow
def test_sample_shows_a_progress_bar_on_a_terminal_only(tiny_model_dir, tmp_path, capsys):
    args = [
        "sample",
        "--model",
        tiny_model_dir,
        "--artist",
        "Lil Tofu",
        "--length",
        "40",
        "--seed",
        "1",
        "--stop_at_end",
        "False",
    ]
    status, seen = _run_in_terminal(args, tmp_path)
    assert status == 0, seen[-3000:]
    assert "song 1 of 1" in seen and "/40 [" in seen and "tok" in seen, seen[-3000:]  # e.g. "0/40 [00:00<?, ?tok/s]"
    # Not a terminal (a notebook, a pipe, a log): no bar.
    sample(model=tiny_model_dir, artist="Lil Tofu", length=40, seed=1, stop_at_end=False)
    err = capsys.readouterr().err
    assert "song 1 of 1" not in err and "tok" not in err


# -- options and the model cache --------------------------------------------------------------


def test_sample_and_interactive_take_every_sampling_option_with_its_default():
    import dataclasses
    import inspect

    from rapgen.write.songs import SamplingOptions, interactive

    fields = {f.name: f.default for f in dataclasses.fields(SamplingOptions)}
    assert {
        "length",
        "nsamples",
        "batch_size",
        "top_k",
        "top_p",
        "temperature",
        "seed",
        "stop_at_end",
        "checkpoint",
        "precision",
        "model",
        "models_dir",
    } <= set(fields)
    shared = inspect.signature(interactive).parameters
    assert list(shared) == list(fields)  # interactive takes the options and nothing else
    for function in (sample, interactive):
        params = inspect.signature(function).parameters
        for name, default in fields.items():
            assert params[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, (function.__name__, name)
            assert params[name].default == default, (function.__name__, name)
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_a_model_rewritten_on_disk_is_what_the_next_sample_uses(tiny_model_dir, tmp_path, vocab_dir):
    from rapgen.model.folders import latest_checkpoint, save_model

    model_dir = str(tmp_path / "model")
    shutil.copytree(tiny_model_dir, model_dir)
    settings = dict(model=model_dir, artist="Lil Tofu", length=16, seed=3, stop_at_end=False, quiet=True)
    before = sample(**settings)
    assert sample(**settings) == before  # same files, same model: same text
    loaded_before = load_model(model_dir)
    probe = tf.constant([[EOT_ID, 16791, 15496]])
    # Rewritten in place, as a notebook that trains on does: same folder, same checkpoint name.
    fresh = GPT2(loaded_before.hparams, seed=99)
    prefix = save_model(fresh, model_dir, vocab_dir)
    assert prefix == latest_checkpoint(model_dir) == loaded_before.checkpoint
    after = sample(**settings)
    assert after != before
    from rapgen.write.model_cache import cached_model
    from rapgen.write.songs import SamplingOptions

    cached, _ = cached_model(SamplingOptions(model=model_dir))
    assert np.array_equal(cached(probe).numpy(), fresh(probe).numpy())
    assert not np.array_equal(cached(probe).numpy(), loaded_before(probe).numpy())
