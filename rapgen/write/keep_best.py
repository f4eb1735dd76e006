"""Best-of-N sampling: write N songs per requested song, judge them, keep the best.

`sample --best_of N --rank R` writes N candidates for each song asked for, scores them with
rapgen.judge (rhyme, originality and, for `likely`, the model's mean loss per token) and keeps
the first under rapgen.judge.ranking's rule R. `original` and `both` need the training set:
`--dataset`, or the run folder's own `train.json`.

>>> sample(model="checkpoints/run1", artist="Lil Tofu", best_of=8, rank="rhyme")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import List, Optional

from rapgen.checks import one_of, positive_int
from rapgen.data.dataset import song_layout
from rapgen.data.lyrics import Song
from rapgen.errors import RapgenError
from rapgen.judge.analysis import Judge, read_songs
from rapgen.judge.originality import load_index
from rapgen.judge.perplexity import token_losses
from rapgen.judge.ranking import RANKS, rank_order
from rapgen.model.folders import recorded_settings


def training_dataset(model_dir: str) -> Optional[str]:
    """The dataset a run was trained on, from its train.json (None for a plain model folder)."""
    dataset = recorded_settings(model_dir).get("dataset")
    return dataset if dataset and os.path.exists(str(dataset)) else None


def mean_losses(gpt, enc, texts: List[str]) -> List[float]:
    """Mean loss per token of each song under the model (the prompt included, as every song has it)."""
    out = []
    for text in texts:
        ids = song_layout([enc.encode(text)], open_end=True)[: gpt.hparams.n_ctx]  # [EOT] song, uint16
        out.append(float(token_losses(gpt, ids).mean()))
    return out


def judge_candidates(texts: List[str], rank: str, judge, gpt=None, enc=None) -> List[dict]:
    """Scores of candidate songs: the analysis figures (and mean_loss when ranking by likelihood)."""
    songs = []
    for text in texts:
        parsed = read_songs(text)
        songs.append(parsed[0] if parsed else Song("", "", text))
    scores = judge.judge(songs)
    if rank == "likely":
        for score, loss in zip(scores, mean_losses(gpt, enc, texts)):
            score["mean_loss"] = round(loss, 4)
    return scores


def describe(score: dict) -> str:
    """A candidate's figures in one line, as `--best_of` prints them."""
    parts = [f"rhyme density {score['rhyme_density']:.2f}"]
    if "copied_tokens" in score:
        parts.append(
            f"longest copied span {score['copied_tokens']} tokens, 8-grams seen {100 * score['ngram8_share']:.0f}%"
        )
    if "mean_loss" in score:
        parts.append(f"mean loss {score['mean_loss']:.3f}")
    return ", ".join(parts)


def choose(texts: List[str], best_of: int, rank: str, judge, gpt=None, enc=None, quiet: bool = False) -> List[str]:
    """From consecutive groups of `best_of` candidates, the best of each group under `rank`."""
    chosen = []
    for g in range(0, len(texts), best_of):
        group = texts[g : g + best_of]
        scores = judge_candidates(group, rank, judge, gpt, enc)
        order = rank_order(scores, rank)
        chosen.append(group[order[0]])
        if not quiet:
            print("=" * 20 + f" SAMPLE {len(chosen)} (best of {len(group)} by {rank}) " + "=" * 20)
            print(group[order[0]])
            print("-- " + "; ".join(f"#{i + 1}: {describe(scores[i])}" for i in order))
    return chosen


def check(best_of, rank) -> None:
    """`--best_of` and `--rank`, checked before a model loads."""
    positive_int("--best_of", best_of)
    one_of("--rank", rank, RANKS)


def make_judge(model_dir: str, rank: str, dataset: Optional[str], phonetics: str, enc):
    """The Judge for a ranking, with the training set's index when the ranking needs it."""
    index = None
    if rank in ("original", "both"):
        dataset = dataset or training_dataset(model_dir)
        if dataset is None:
            raise RapgenError(
                f"--rank {rank} compares with the training set: give --dataset PATH (or use --rank rhyme or likely)"
            )
        index = load_index(str(dataset), enc)
    return Judge(phonetics, index, enc)
