"""A batch of different prompts (issue 12, part 3): each row writes what its prompt writes alone.

Prompts of different lengths are padded on the left; the model hides the filler slots from
attention and gives each row its own positions, and each row draws from its own random
stream. Checked on the model (logits of a padded row == the row alone), on the loop
(greedy and sampled rows == the prompt alone), on `sample --artist A,B,C` (Python and the
command line) and on training-time samples (several artists, one batch).
"""

import numpy as np
import pytest
import tensorflow as tf

from rapgen.model.gpt2 import GPT2, initial_weights
from rapgen.model.hparams import HParams
from rapgen.write.generation import generate
from rapgen.write.songs import artist_names, sample

EOT_ID = 50256


@pytest.fixture(scope="module")
def sharp():
    """A small-vocabulary model whose weights are scaled up so that context and position
    change its choices (a fresh model's greedy path barely depends on either)."""
    hp = HParams(n_vocab=700, n_ctx=40, n_embd=32, n_head=4, n_layer=2)
    values = initial_weights(hp, seed=3)
    for name, value in values.items():
        if name.endswith("/w") or name in ("model/wte", "model/wpe"):
            values[name] = value * 40.0  # std 0.8 instead of 0.02
    return GPT2(hp, weights=values)


PROMPTS = [[EOT_ID % 700, 5, 17], [9], [3, 14, 15, 92, 65, 35, 89], [600, 2]]


def test_a_padded_row_has_the_logits_of_the_row_alone(sharp):
    width = max(len(p) for p in PROMPTS)
    pad = [width - len(p) for p in PROMPTS]
    padded = tf.constant([[0] * n + p for n, p in zip(pad, PROMPTS)], tf.int32)  # [B, width]
    logits, _ = sharp.extend(padded, pad=tf.constant(pad, tf.int32))  # [B, width, V]
    for b, prompt in enumerate(PROMPTS):
        alone = sharp(tf.constant([prompt], tf.int32)).numpy()[0]  # [T, V]
        np.testing.assert_allclose(logits.numpy()[b, pad[b] :], alone, atol=1e-4, rtol=0)
    # The padding matters: without the mask and positions the short rows come out otherwise.
    plain, _ = sharp.extend(padded)
    assert np.abs(plain.numpy()[1, -1] - sharp(tf.constant([PROMPTS[1]])).numpy()[0, -1]).max() > 1e-2


def test_greedy_rows_of_a_mixed_batch_equal_each_prompt_alone(sharp):
    rows = generate(sharp, PROMPTS, length=20, temperature=0.0, stop_at_end=False)
    alone = [generate(sharp, p, length=20, temperature=0.0, stop_at_end=False)[0] for p in PROMPTS]
    assert rows == alone
    assert len({tuple(r) for r in rows}) == len(PROMPTS)  # the prompts lead to different songs
    assert all(len(set(r)) > 5 for r in rows)  # and each choice depends on the context so far


def test_sampled_rows_follow_their_own_random_stream(sharp):
    """Row k of a prompt draws from stream k of the seed, wherever it sits in the batch."""
    settings = dict(length=16, temperature=1.0, top_k=0, seed=11, stop_at_end=False)
    rows = generate(sharp, PROMPTS, batch_size=2, **settings)
    assert len(rows) == 2 * len(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        assert rows[2 * i : 2 * i + 2] == generate(sharp, prompt, batch_size=2, **settings)
    assert rows[0] != rows[1]  # two draws of one prompt differ
    assert generate(sharp, PROMPTS, batch_size=2, **dict(settings, seed=12)) != rows


def test_a_row_draws_the_same_token_wherever_it_sits():
    from rapgen.write.logits import choose_tokens

    logits = tf.constant(np.random.default_rng(1).normal(0.0, 1.0, (6, 500)).astype(np.float32))
    seed = tf.constant([4, 2], tf.int32)
    batch = choose_tokens(logits, 1.0, 0, 0.0, seed).numpy()  # rows 0..5 read numbers 0..5 of the stream
    for b in range(6):
        alone = choose_tokens(logits[b : b + 1], 1.0, 0, 0.0, seed, row_ids=[b]).numpy()
        assert alone[0] == batch[b]
    assert len(set(batch.tolist())) > 3  # different numbers of the stream: different draws


def test_mixed_batches_compile_once(tiny_model_dir):
    from rapgen.model.loading import load_model

    model = load_model(tiny_model_dir)  # a fresh model: a fresh compiled loop
    generate(model, [[EOT_ID, 1], [EOT_ID, 2, 3, 4]], length=3, seed=1)
    generate(model, [EOT_ID, 7, 8], length=4, batch_size=3, seed=1)
    generate(model, [[5], [6, 7], [8, 9, 10, 11, 12]], length=2, batch_size=2, seed=1, temperature=0.0)
    assert model.generation.function.experimental_get_tracing_count() == 1


def test_artist_names_take_a_comma_list_or_a_list():
    assert artist_names("Yung Lean,Eminem, MF DOOM") == ["Yung Lean", "Eminem", "MF DOOM"]
    assert artist_names(("Eminem", "Nas")) == ["Eminem", "Nas"]  # fire's reading of --artist Eminem,Nas
    assert artist_names(["Tyler, The Creator"]) == ["Tyler, The Creator"]
    assert artist_names(None) is None
    # A run's own artist with a comma in the name stays whole (notebook 03 passes the run's artists).
    assert artist_names("tyler, the creator", known=["Tyler, The Creator"]) == ["tyler, the creator"]
    assert artist_names("Tyler, Nas", known=["Tyler, The Creator"]) == ["Tyler", "Nas"]
    from rapgen.errors import RapgenError

    with pytest.raises(RapgenError, match="empty name"):
        artist_names("Eminem,,Nas")


def test_sample_writes_one_song_per_artist_each_as_alone(tiny_model_dir):
    names = ["Lil Tofu", "Yung Lean", "MF DOOM"]
    settings = dict(model=tiny_model_dir, length=10, seed=4, stop_at_end=False, quiet=True)
    together = sample(artist=",".join(names), **settings)
    assert together == [sample(artist=name, **settings)[0] for name in names]
    assert [t[: len(n) + 2] for t, n in zip(together, names)] == ["<<" + n for n in names]
    # nsamples per artist, grouped by artist, each group what the artist gets alone.
    grouped = sample(artist=names[:2], nsamples=2, batch_size=2, **settings)
    assert grouped[:2] == sample(artist=names[0], nsamples=2, batch_size=2, **settings)
    assert grouped[2:] == sample(artist=names[1], nsamples=2, batch_size=2, **settings)


@pytest.mark.slow
def test_command_line_takes_several_artists(tiny_model_dir, cli_env, tmp_path):
    from support.helpers import run_cli

    result = run_cli(
        [
            "sample",
            "--model",
            tiny_model_dir,
            "--artist",
            "Lil Tofu,Eminem",
            "--length",
            "6",
            "--seed",
            "2",
            "--temperature",
            "0",
        ],
        cli_env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SAMPLE 2" in result.stdout and "SAMPLE 3" not in result.stdout
    songs = result.stdout.split("=" * 20)
    assert any(s.strip().startswith("<<Lil Tofu") for s in songs)
    assert any(s.strip().startswith("<<Eminem") for s in songs)


def test_training_samples_write_every_artist_in_one_batch(tiny_model_dir, vocab_dir, tmp_path):
    from rapgen.finetune.config import TrainConfig
    from rapgen.finetune.samples import sample_during_training
    from rapgen.model.encoder import load_encoder
    from rapgen.model.loading import load_model

    class Trainer:  # what sample_during_training reads of a trainer
        model = load_model(tiny_model_dir)
        step = 7

    calls = []
    fn = Trainer.model.generation  # None: the loop is built on the first call

    import rapgen.write.generation as generation

    loop = generation._generation_function(Trainer.model)

    def counting(context, *args):
        calls.append(context.shape[0])
        return loop(context, *args)

    Trainer.model.generation.function = counting
    cfg = TrainConfig(sample_length=8, sample_num=3, seed=1, quiet=True)
    sample_during_training(Trainer, load_encoder(vocab_dir), ["Lil Tofu", "Yung Lean"], cfg, str(tmp_path))
    assert fn is None and calls == [3]  # three songs, one batch
    text = (tmp_path / "samples" / "step-7.txt").read_text()
    songs = text.split("=" * 40)
    assert len(songs) == 3 and all(s.strip().startswith(("<<Lil Tofu", "<<Yung Lean")) for s in songs)


def test_a_bad_stride_is_refused_before_best_of_builds_its_index(tiny_model_dir, tmp_path):
    from rapgen.errors import RapgenError

    from support.helpers import THREE_SONGS, snapshot

    lyrics = tmp_path / "data" / "lyrics.txt"
    lyrics.parent.mkdir()
    lyrics.write_text(THREE_SONGS, encoding="utf-8")
    before = snapshot(str(lyrics.parent))
    with pytest.raises(RapgenError, match="--stride 100 would drop more than half"):
        sample(
            model=tiny_model_dir,
            artist="Lil Tofu",
            length=300,
            window="slide",
            stride=100,
            best_of=2,
            rank="original",
            dataset=str(lyrics),
            quiet=True,
        )
    assert snapshot(str(lyrics.parent)) == before  # no index, no token cache written beside the lyrics
