"""`rapgen analyze` as users run it (real subprocesses), and `sample --best_of` on a tiny model."""

import json
import os
import shutil

import pytest

from support.helpers import ROOT, assert_one_line_error, run_cli

SAMPLE_LYRICS = ROOT / "data" / "sample_lyrics.txt"
COPIED = "Chickpeas stacked and the sky stay sunny"  # from Lil Tofu's "Oat Milk Money"
SONGS = (
    "<<Lil Tofu - New Song>>\n[Verse 1: Lil Tofu]\nmy dog went crazy\nyour cat got lazy\n" + COPIED + "\n"
    "<|endoftext|>\n"
    "<<MC Fjord - Other Song>>\nPurple radiators whisper algebra to sleepy lighthouses\n<|endoftext|>\n"
)


def snapshot(folder):
    """Every file under folder, path -> bytes."""
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, vocab_dir):
    folder = tmp_path_factory.mktemp("analyze")
    shutil.copy(SAMPLE_LYRICS, folder / "rap.txt")
    (folder / "songs.txt").write_text(SONGS, encoding="utf-8")
    env = dict(os.environ, RAPGEN_VOCAB_DIR=vocab_dir)
    return folder, env


def test_analyze_prints_json_with_copied_span_and_its_song(lab):
    folder, env = lab
    result = run_cli(["analyze", "songs.txt", "--dataset", "rap.txt", "--json"], env, cwd=str(folder))
    assert result.returncode == 0, result.stderr
    songs = json.loads(result.stdout)
    assert [s["title"] for s in songs] == ["New Song", "Other Song"]
    first, second = songs
    assert first["phonetics"] == "espeak"
    assert first["scheme"] == "AAB" and first["lines"] == 3
    assert first["rhyme_density"] > 0
    assert first["copied_text"] == COPIED and first["copied_from"] == "Lil Tofu - Oat Milk Money"
    assert first["copied_words"] == 7 and first["ngram8_share"] > 0
    assert 0 < first["tfidf_max"] < 1
    assert second["copied_tokens"] == 0 and second["tfidf_max"] < 0.1  # MC Fjord has songs, none alike
    assert first["syllables_per_line"] == pytest.approx(
        sum(d["syllables"] for d in first["line_details"]) / 3, abs=0.01
    )
    assert os.path.isdir(folder / "rap.txt.index")  # cached beside the token cache


def test_analyze_prints_a_table_per_song(lab):
    folder, env = lab
    result = run_cli(["analyze", "songs.txt", "--phonetics", "cmudict"], env, cwd=str(folder))
    assert result.returncode == 0, result.stderr
    assert "<<Lil Tofu - New Song>>" in result.stdout and "<<MC Fjord - Other Song>>" in result.stdout
    assert "rhyme density" in result.stdout and "(cmudict)" in result.stdout
    assert "longest copied span" not in result.stdout  # no --dataset, no originality


def test_analyze_mistakes_are_one_line_errors(lab, tmp_path):
    folder, env = lab
    before = snapshot(folder)
    assert_one_line_error(run_cli(["analyze", "missing.txt"], env, cwd=str(folder)), "missing.txt does not exist")
    assert_one_line_error(
        run_cli(["analyze", "songs.txt", "--phonetics", "festival"], env, cwd=str(folder)), "--phonetics must be one of"
    )
    # espeak-ng missing (a PATH without it): the line says how to install it.
    no_espeak = dict(env, PATH=str(tmp_path))
    assert_one_line_error(
        run_cli(["analyze", "songs.txt", "--phonetics", "espeak"], no_espeak, cwd=str(folder)),
        "apt-get install -y espeak-ng",
        "brew install espeak-ng",
    )
    assert snapshot(folder) == before


@pytest.mark.slow
def test_best_of_returns_the_best_of_its_candidates_under_each_ranking(tiny_model_dir, tmp_path):
    from rapgen.judge.analysis import Judge, read_songs
    from rapgen.judge.originality import load_index
    from rapgen.judge.ranking import rank_order
    from rapgen.model.encoder import load_encoder
    from rapgen.write.songs import sample

    dataset = tmp_path / "rap.txt"
    shutil.copy(SAMPLE_LYRICS, dataset)
    common = dict(model=tiny_model_dir, artist="Lil Tofu", length=40, seed=11, quiet=True)
    candidates = sample(nsamples=4, **common)  # what best_of=4 draws, from the same seed
    assert len(set(candidates)) == 4
    enc = load_encoder(tiny_model_dir)
    judge = Judge("auto", load_index(str(dataset), enc), enc)
    scores = judge.judge([read_songs(t)[0] for t in candidates])
    for rank in ("rhyme", "original", "both"):
        chosen = sample(nsamples=1, best_of=4, rank=rank, dataset=str(dataset), **common)
        assert chosen == [candidates[rank_order(scores, rank)[0]]], rank
    # Ranked by the model's own likelihood: the chosen song has the lowest mean loss of the four.
    import numpy as np

    from rapgen.judge.perplexity import token_losses
    from rapgen.model.loading import load_model

    gpt = load_model(tiny_model_dir)
    losses = [token_losses(gpt, np.asarray([50256] + enc.encode(t), np.uint16)).mean() for t in candidates]
    likely = sample(nsamples=1, best_of=4, rank="likely", **common)
    assert likely == [candidates[int(np.argmin(losses))]]


def test_rank_order_follows_each_rule():
    from rapgen.judge.ranking import rank_order

    scores = [
        {"rhyme_density": 0.5, "copied_tokens": 0, "ngram8_share": 0.0, "mean_loss": 3.0},
        {"rhyme_density": 1.2, "copied_tokens": 30, "ngram8_share": 0.6, "mean_loss": 2.0},
        {"rhyme_density": 1.3, "copied_tokens": 0, "ngram8_share": 0.1, "mean_loss": 2.5},
    ]
    assert rank_order(scores, "rhyme") == [2, 1, 0]
    assert rank_order(scores, "original") == [0, 2, 1]
    assert rank_order(scores, "both") == [2, 0, 1]  # places: 0+1, then 2+0, then 1+2
    scores[2]["rhyme_density"] = 0.9  # now every song's places add up to 2: the better rhymer wins
    assert rank_order(scores, "both") == [1, 2, 0]
    for score in scores:  # nothing copied anywhere: originality ranks all alike, rhyme decides
        score.update(copied_tokens=0, ngram8_share=0.0)
    assert rank_order(scores, "both") == rank_order(scores, "rhyme") == [1, 2, 0]
    assert rank_order(scores, "likely") == [1, 2, 0]


def test_best_of_mistakes_are_caught_before_any_work(tiny_model_dir):
    from rapgen.errors import RapgenError
    from rapgen.write.songs import sample

    with pytest.raises(RapgenError, match="--best_of must be a positive"):
        sample(model=tiny_model_dir, artist="A", best_of=0, quiet=True)
    with pytest.raises(RapgenError, match="--rank must be one of"):
        sample(model=tiny_model_dir, artist="A", best_of=2, rank="funniest", quiet=True)
    with pytest.raises(RapgenError, match="give --dataset"):
        sample(model=tiny_model_dir, artist="A", best_of=2, rank="original", quiet=True)


def test_training_samples_are_judged_in_the_log(tiny_model_dir, tmp_path, capsys):
    """log.csv records the rhyme density and longest copied span of the samples of that step."""
    import csv

    from rapgen.data.dataset import load_tokens
    from rapgen.finetune.loop import train
    from rapgen.judge.analysis import Judge, read_songs
    from rapgen.judge.originality import build_index
    from rapgen.model.encoder import load_encoder

    dataset = tmp_path / "rap.txt"
    shutil.copy(SAMPLE_LYRICS, dataset)
    train(
        dataset=str(dataset),
        model=tiny_model_dir,
        run_name="r",
        checkpoint_dir=str(tmp_path / "ck"),
        steps=2,
        sample_every=2,
        sample_length=24,
        save_every=0,
        print_every=0,
        sequence_length=32,
        val_fraction=0.0,
        mixed_precision="off",
        distribute="off",
        quiet=False,
    )
    with open(tmp_path / "ck" / "r" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["sample_rhyme_density"] == "" and rows[0]["sample_copied_tokens"] == ""
    logged = rows[1]
    # The same figures, computed again from the saved sample against the training tokens.
    enc = load_encoder(tiny_model_dir)
    text = (tmp_path / "ck" / "r" / "samples" / "step-2.txt").read_text(encoding="utf-8").strip("\n")
    score = Judge("auto", build_index(load_tokens(str(dataset), enc), enc), enc).judge(read_songs(text)[:1])[0]
    assert logged["sample_rhyme_density"] == f"{score['rhyme_density']:.3f}"
    assert logged["sample_copied_tokens"] == str(score["copied_tokens"])
    out = capsys.readouterr().out
    assert f"samples at step 2 (rhyme density {logged['sample_rhyme_density']}, longest copied span " in out
