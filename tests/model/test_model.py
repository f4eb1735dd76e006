"""The TF2 GPT-2 against an independent NumPy forward pass; causality; the key/value cache;
variable names and shapes; gradient checkpointing; and `score`, whose loss is checked
against the same NumPy reference.

The NumPy GPT-2 below is written from OpenAI's description of the network (pre-norm blocks,
tanh GELU, layer-norm epsilon 1e-5, logits tied to `wte`) and reads nothing but a dict of
checkpoint tensors; it shares no code with `rapgen.model.gpt2`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from rapgen.errors import RapgenError
from rapgen.model.checkpoint import read_checkpoint
from rapgen.model.folders import latest_checkpoint
from rapgen.model.gpt2 import GPT2
from rapgen.model.hparams import HParams
from rapgen.model.loading import load_model

TOL = 1e-4
EOT_ID = 50256


# -- the NumPy reference ---------------------------------------------------------------


def np_layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def np_gpt2_logits(weights, n_head, tokens):
    """float64 logits [B, T, V] of int tokens [B, T] from a dict of checkpoint tensors."""
    w = {name: np.asarray(value, np.float64) for name, value in weights.items()}
    tokens = np.asarray(tokens)
    B, T = tokens.shape
    n_layer = len({name.split("/")[1] for name in w if name.startswith("model/h")})
    x = w["model/wte"][tokens] + w["model/wpe"][np.arange(T)][None]  # [B, T, E]
    E = x.shape[-1]
    D = E // n_head
    causal = np.tril(np.ones((T, T), bool))
    for i in range(n_layer):
        p = f"model/h{i}/"
        h = np_layer_norm(x, w[p + "ln_1/g"], w[p + "ln_1/b"])
        qkv = h @ w[p + "attn/c_attn/w"][0] + w[p + "attn/c_attn/b"]  # [B, T, 3E]
        q, k, v = np.split(qkv, 3, axis=-1)  # each [B, T, E]

        def heads(a):
            return a.reshape(B, T, n_head, D).transpose(0, 2, 1, 3)  # [B, H, T, D]

        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)  # [B, H, T, T]
        scores = np.where(causal, scores, -np.inf)
        a = np_softmax(scores) @ v  # [B, H, T, D]
        a = a.transpose(0, 2, 1, 3).reshape(B, T, E)
        x = x + a @ w[p + "attn/c_proj/w"][0] + w[p + "attn/c_proj/b"]
        h = np_layer_norm(x, w[p + "ln_2/g"], w[p + "ln_2/b"])
        m = np_gelu(h @ w[p + "mlp/c_fc/w"][0] + w[p + "mlp/c_fc/b"])
        x = x + m @ w[p + "mlp/c_proj/w"][0] + w[p + "mlp/c_proj/b"]
    x = np_layer_norm(x, w["model/ln_f/g"], w["model/ln_f/b"])
    return x @ w["model/wte"].T


def expected_shapes(hp):
    E = hp.n_embd
    shapes = {"model/wte": [hp.n_vocab, E], "model/wpe": [hp.n_ctx, E], "model/ln_f/g": [E], "model/ln_f/b": [E]}
    for i in range(hp.n_layer):
        p = f"model/h{i}/"
        shapes.update(
            {
                p + "ln_1/g": [E],
                p + "ln_1/b": [E],
                p + "attn/c_attn/w": [1, E, 3 * E],
                p + "attn/c_attn/b": [3 * E],
                p + "attn/c_proj/w": [1, E, E],
                p + "attn/c_proj/b": [E],
                p + "ln_2/g": [E],
                p + "ln_2/b": [E],
                p + "mlp/c_fc/w": [1, E, 4 * E],
                p + "mlp/c_fc/b": [4 * E],
                p + "mlp/c_proj/w": [1, 4 * E, E],
                p + "mlp/c_proj/b": [E],
            }
        )
    return shapes


def random_weights(hp, seed):
    """Every tensor random, layer-norm gains and all biases included (nothing at its init value)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(hp).items():
        if name.endswith("/g"):
            value = rng.normal(1.0, 0.3, shape)
        elif name.endswith("/b"):
            value = rng.normal(0.0, 0.3, shape)
        elif name in ("model/wte", "model/wpe"):
            value = rng.normal(0.0, 0.3, shape)
        else:
            value = rng.normal(0.0, 1.0 / math.sqrt(shape[1]), shape)
        out[name] = value.astype(np.float32)
    return out


def assign(model, weights):
    for name, var in model.variables_by_name.items():
        var.assign(weights[name])


# -- fixtures ---------------------------------------------------------------------------

RANDOM_HP = HParams(n_vocab=1000, n_ctx=32, n_embd=48, n_head=4, n_layer=2)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """(model, its checkpoint's tensors) for the `rapgen init` model."""
    model = load_model(tiny_model_dir)
    return model, read_checkpoint(latest_checkpoint(tiny_model_dir))


@pytest.fixture(scope="module")
def rich():
    """(model, weights): a small-vocabulary model whose every weight is non-trivially random."""
    model = GPT2(RANDOM_HP, seed=0)
    weights = random_weights(RANDOM_HP, seed=1)
    assign(model, weights)
    return model, weights


def random_tokens(n_vocab, shape, seed):
    return np.random.default_rng(seed).integers(0, n_vocab, size=shape).astype(np.int32)


# -- the forward pass -------------------------------------------------------------------


def test_logits_match_numpy_on_init_checkpoint(tiny):
    model, weights = tiny
    tokens = random_tokens(50257, (2, 17), seed=2)
    tokens[0, 0] = EOT_ID
    got = model(tf.constant(tokens)).numpy()
    want = np_gpt2_logits(weights, model.hparams.n_head, tokens)
    assert got.shape == (2, 17, 50257) and got.dtype == np.float32
    assert np.max(np.abs(got - want)) <= TOL


def test_logits_match_numpy_with_random_gains_and_biases(rich):
    model, weights = rich
    tokens = random_tokens(RANDOM_HP.n_vocab, (3, RANDOM_HP.n_ctx), seed=3)
    got = model(tf.constant(tokens)).numpy()
    want = np_gpt2_logits(weights, RANDOM_HP.n_head, tokens)
    assert np.std(want) > 0.5  # the logits are far from uniform, so the comparison has teeth
    assert np.max(np.abs(got - want)) <= TOL


def test_logits_match_numpy_full_context_of_tiny_model(tiny):
    model, weights = tiny
    tokens = random_tokens(50257, (1, model.hparams.n_ctx), seed=4)
    got = model(tf.constant(tokens)).numpy()
    assert np.max(np.abs(got - np_gpt2_logits(weights, model.hparams.n_head, tokens))) <= TOL


def test_causality(rich):
    model, _ = rich
    tokens = random_tokens(RANDOM_HP.n_vocab, (2, 20), seed=5)
    base = model(tf.constant(tokens)).numpy()
    for t in (0, 1, 7, 19):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1 + t) % RANDOM_HP.n_vocab
        logits = model(tf.constant(changed)).numpy()
        assert np.max(np.abs(logits[:, :t] - base[:, :t]), initial=0.0) <= 1e-6, t
        assert np.max(np.abs(logits[:, t] - base[:, t])) > 1e-3, t  # the change is seen from t on


def test_batch_rows_are_independent(rich):
    model, _ = rich
    tokens = random_tokens(RANDOM_HP.n_vocab, (3, 12), seed=6)
    together = model(tf.constant(tokens)).numpy()
    for b in range(3):
        alone = model(tf.constant(tokens[b : b + 1])).numpy()
        assert np.max(np.abs(alone[0] - together[b])) <= 1e-5


# -- the key/value cache ----------------------------------------------------------------


def cache_shape(hp, batch, slots):
    return [hp.n_layer, 2, batch, hp.n_head, slots, hp.n_embd // hp.n_head]


def run_with_cache(model, tokens, chunks, fill):
    """Feed `tokens` in consecutive chunks of the given sizes through a preallocated cache."""
    hp = model.hparams
    B, T = tokens.shape
    S = hp.n_ctx
    cache = fill(cache_shape(hp, B, S)).astype(np.float32)
    out, pos = [], 0
    for size in chunks:
        logits, present = model.extend(
            tf.constant(tokens[:, pos : pos + size]), past=tf.constant(cache), past_length=pos
        )
        present = present.numpy()
        assert present.shape == tuple(cache_shape(hp, B, size))
        cache[:, :, :, :, pos : pos + size] = present
        out.append(logits.numpy())
        pos += size
    assert pos == T
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("fill_name", ["zeros", "garbage"])
def test_one_token_at_a_time_through_cache_equals_full_sequence(rich, fill_name):
    model, _ = rich
    rng = np.random.default_rng(7)
    fill = np.zeros if fill_name == "zeros" else (lambda shape: rng.normal(0.0, 5.0, shape))
    tokens = random_tokens(RANDOM_HP.n_vocab, (2, 16), seed=8)
    full = model(tf.constant(tokens)).numpy()
    stepped = run_with_cache(model, tokens, [1] * 16, fill)
    assert np.max(np.abs(stepped - full)) <= TOL


def test_prompt_then_single_tokens_and_chunks_through_cache(rich):
    model, _ = rich
    tokens = random_tokens(RANDOM_HP.n_vocab, (2, RANDOM_HP.n_ctx), seed=9)
    full = model(tf.constant(tokens)).numpy()
    chunks = [5, 1, 1, 1, 3, 1, 4] + [1] * (RANDOM_HP.n_ctx - 16)
    stepped = run_with_cache(model, tokens, chunks, np.zeros)
    assert np.max(np.abs(stepped - full)) <= TOL


def test_full_forward_present_equals_cache_contents(tiny):
    model, _ = tiny
    tokens = random_tokens(50257, (1, 6), seed=10)
    _, present = model.extend(tf.constant(tokens))
    hp = model.hparams
    assert present.shape == tuple(cache_shape(hp, 1, 6))
    # The keys/values of the first 3 tokens don't depend on the later ones.
    _, present3 = model.extend(tf.constant(tokens[:, :3]))
    assert np.max(np.abs(present.numpy()[..., :3, :] - present3.numpy())) <= 1e-6


# -- the input check ---------------------------------------------------------------------


@pytest.mark.parametrize("compiled", [False, True])
def test_ids_and_positions_out_of_range_fail_with_the_models_own_message(rich, compiled):
    # On a CPU tf.gather fails too, but with its own message; on a GPU it returns zeros. The
    # messages asserted here come from the model's check, so the check is what fails.
    model, _ = rich
    hp = model.hparams
    run = tf.function(model.forward, autograph=False) if compiled else model.forward
    ok = random_tokens(hp.n_vocab, (2, 4), seed=11)
    assert run(tf.constant(ok)).shape == (2, 4, hp.n_vocab)
    for bad_id in (hp.n_vocab, -1):
        bad = ok.copy()
        bad[1, 2] = bad_id
        with pytest.raises(tf.errors.InvalidArgumentError, match="token id|token ids must be >= 0"):
            run(tf.constant(bad))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"positions beyond the context of {hp.n_ctx} tokens"):
        run(tf.constant(random_tokens(hp.n_vocab, (1, hp.n_ctx + 1), seed=12)))
    cache = np.zeros(cache_shape(hp, 1, hp.n_ctx), np.float32)
    logits, _ = model.step(tf.constant([[3]]), tf.constant(cache), hp.n_ctx - 1)  # the last position: fine
    assert logits.shape == (1, hp.n_vocab)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"positions beyond the context of {hp.n_ctx} tokens"):
        model.step(tf.constant([[3, 4]]), tf.constant(cache), hp.n_ctx - 1)


def test_step_gives_the_last_positions_logits_of_extend(rich):
    model, _ = rich
    hp = model.hparams
    tokens = random_tokens(hp.n_vocab, (3, 5), seed=13)
    cache = np.zeros(cache_shape(hp, 3, hp.n_ctx), np.float32)
    all_logits, present = model.extend(tf.constant(tokens), past=tf.constant(cache), past_length=0)
    last, present_step = model.step(tf.constant(tokens), tf.constant(cache), 0)
    assert last.shape == (3, hp.n_vocab) and all_logits.shape == (3, 5, hp.n_vocab)
    assert np.max(np.abs(last.numpy() - all_logits.numpy()[:, -1])) <= TOL
    assert np.array_equal(present.numpy(), present_step.numpy())


# -- variables --------------------------------------------------------------------------


def test_variable_names_and_shapes_match_design():
    hp = HParams(n_vocab=300, n_ctx=16, n_embd=24, n_head=3, n_layer=3)
    model = GPT2(hp, seed=0)
    got = {name: var.shape.as_list() for name, var in model.variables_by_name.items()}
    assert got == expected_shapes(hp)
    assert all(var.dtype == tf.float32 for var in model.variables_by_name.values())
    # No variable outside the checkpoint's set.
    assert len(model.trainable_variables) == len(expected_shapes(hp)) == 4 + 12 * 3


def test_init_statistics_follow_gpt2():
    hp = HParams(n_vocab=2000, n_ctx=64, n_embd=64, n_head=4, n_layer=4)
    v = {name: var.numpy() for name, var in GPT2(hp, seed=3).variables_by_name.items()}
    assert abs(v["model/wte"].std() - 0.02) < 0.002
    assert np.all(v["model/h1/ln_1/g"] == 1.0) and np.all(v["model/h1/ln_1/b"] == 0.0)
    assert np.all(v["model/h2/attn/c_attn/b"] == 0.0)
    # Same seed, same weights; another seed, others.
    again = GPT2(hp, seed=3).variables_by_name["model/wte"].numpy()
    other = GPT2(hp, seed=4).variables_by_name["model/wte"].numpy()
    assert np.array_equal(again, v["model/wte"]) and not np.array_equal(other, v["model/wte"])


# -- gradient checkpointing -------------------------------------------------------------


def test_recompute_gives_same_loss_and_gradients(rich):
    model, weights = rich
    tokens = tf.constant(random_tokens(RANDOM_HP.n_vocab, (2, 12), seed=11))
    variables = list(model.variables_by_name.values())
    results = []
    for recompute in (False, True):
        with tf.GradientTape() as tape:
            loss = model.loss(tokens, recompute=recompute)
        grads = tape.gradient(loss, variables)
        assert all(g is not None for g in grads)
        results.append((float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert abs(loss_a - loss_b) <= 1e-6
    for name, ga, gb in zip(model.variables_by_name, grads_a, grads_b):
        assert np.max(np.abs(ga - gb)) <= 1e-5 * max(1.0, np.max(np.abs(ga))), name
    # And the loss is the cross-entropy of the NumPy logits.
    logits = np_gpt2_logits(weights, RANDOM_HP.n_head, tokens.numpy()[:, :-1])
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    labels = tokens.numpy()[:, 1:]
    want = -np.take_along_axis(logp, labels[..., None], axis=-1).mean()
    assert abs(loss_a - want) <= 1e-4


# -- score: loss per token and perplexity ------------------------------------------------

SCORE_SONGS = [
    "<<Lil Tofu - Soy Drip>>\n[Hook]\n"
    + "soy on my wrist and the tofu on ice, stir fry the beat and I do it twice\n" * 4,
    "<<MC Fjord - Kall Natt>>\n[Vers 1]\n"
    + "kall natt i hamnen, färjan går sent, jag skriver en rad och allt är bekant\n" * 4,
    "<<El Chamaco - Qué Rollo>>\n[Coro]\n" + "órale güey, la música suena, bailando en la calle toda la semana\n" * 3,
]


def test_score_matches_numpy_reference_over_windows(tiny, tiny_model_dir, tmp_path):
    from rapgen.judge.perplexity import score
    from rapgen.model.encoder import load_encoder

    model, weights = tiny
    n_ctx, n_head = model.hparams.n_ctx, model.hparams.n_head
    path = tmp_path / "heldout.txt"
    path.write_text("".join(s + "<|endoftext|>\n" for s in SCORE_SONGS), encoding="utf-8")
    enc = load_encoder(tiny_model_dir)
    tokens = [EOT_ID]
    for song in SCORE_SONGS:
        tokens += enc.encode(song.strip("\n")) + [EOT_ID]
    tokens = np.array(tokens)
    assert len(tokens) > 2 * n_ctx  # several windows

    # Each token after the first is predicted once, from the tokens since the start of its
    # window; windows of n_ctx tokens overlap by one.
    losses = []
    for start in range(0, len(tokens) - 1, n_ctx - 1):
        window = tokens[start : start + n_ctx]
        logits = np_gpt2_logits(weights, n_head, window[None, :-1])[0]
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        losses.extend(-logp[np.arange(len(window) - 1), window[1:]])
    assert len(losses) == len(tokens) - 1

    result = score(str(path), model=tiny_model_dir)
    assert set(result) == {"tokens", "loss", "perplexity"}
    assert result["tokens"] == len(tokens) - 1
    assert abs(result["loss"] - np.mean(losses)) <= 1e-4
    assert abs(result["perplexity"] - math.exp(result["loss"])) <= 1e-6 * result["perplexity"]
    # A random model knows nothing: about ln(50257) nats per token.
    assert abs(result["loss"] - math.log(50257)) < 0.5


def test_score_rejects_non_utf8_and_missing_files(tiny_model_dir, tmp_path):
    from rapgen.judge.perplexity import score

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("<<MC Åke - Höst>>\nså kallt\n".encode("latin-1"))
    with pytest.raises(RapgenError, match="latin1.txt") as info:
        score(str(bad), model=tiny_model_dir)
    assert "\n" not in str(info.value)
    with pytest.raises(RapgenError, match="nothing-here.txt"):
        score(str(tmp_path / "nothing-here.txt"), model=tiny_model_dir)
