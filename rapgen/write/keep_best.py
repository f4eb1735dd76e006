"""Best-of-N sampling: write N songs per requested song, judge them, keep the best.

Rankings (`--rank`):

* `rhyme`: highest rhyme density first.
* `original`: shortest span copied from the training set first, then the fewest 8-grams found there.
* `both` (default): the sum of a song's places under `rhyme` and `original` (equal figures share
  a place; a tie goes to the better rhymer).
* `likely`: lowest mean loss per token under the model first (what the model finds most natural).

`original` and `both` need the training set: `--dataset`, or the run folder's own `train.json`.

>>> sample(model="checkpoints/run1", artist="Lil Tofu", best_of=8, rank="rhyme")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from typing import List, Optional

from rapgen.errors import RapgenError
from rapgen.checks import one_of, positive_int

RANKS = ("rhyme", "original", "both", "likely")


def _places(keys: List) -> List[int]:
    """Each item's place: how many items have a strictly better (smaller) key; ties share a place."""
    return [sum(other < key for other in keys) for key in keys]


def rank_order(scores: List[dict], rank: str = "both") -> List[int]:
    """Indices of `scores` (dicts from rapgen.judge.analysis, plus `mean_loss` for likely), best first.

    >>> rank_order([{"rhyme_density": 0.2}, {"rhyme_density": 0.9}], "rhyme")
    [1, 0]
    """
    one_of("--rank", rank, RANKS)
    idx = list(range(len(scores)))
    by_rhyme = sorted(idx, key=lambda i: -scores[i]["rhyme_density"])
    if rank == "rhyme":
        return by_rhyme
    if rank == "likely":
        return sorted(idx, key=lambda i: scores[i]["mean_loss"])
    by_original = sorted(idx, key=lambda i: (scores[i]["copied_tokens"], scores[i]["ngram8_share"]))
    if rank == "original":
        return by_original
    rhyme_place = _places([-s["rhyme_density"] for s in scores])
    original_place = _places([(s["copied_tokens"], s["ngram8_share"]) for s in scores])
    return sorted(idx, key=lambda i: (rhyme_place[i] + original_place[i], rhyme_place[i]))


def training_dataset(model_dir: str) -> Optional[str]:
    """The dataset a run was trained on, from its train.json (None for a plain model folder)."""
    try:
        with open(os.path.join(model_dir, "train.json"), encoding="utf-8") as f:
            dataset = json.load(f).get("dataset")
    except (OSError, ValueError):
        return None
    return dataset if dataset and os.path.exists(str(dataset)) else None


def mean_losses(gpt, enc, texts: List[str]) -> List[float]:
    """Mean loss per token of each song under the model (the prompt included, as every song has it)."""
    from rapgen.data.dataset import song_layout
    from rapgen.judge.perplexity import token_losses

    out = []
    for text in texts:
        ids = song_layout([enc.encode(text)], open_end=True)[: gpt.hparams.n_ctx]  # [EOT] song, uint16
        out.append(float(token_losses(gpt, ids).mean()))
    return out


def judge_candidates(texts: List[str], rank: str, judge, gpt=None, enc=None) -> List[dict]:
    """Scores of candidate songs: the analysis figures (and mean_loss when ranking by likelihood)."""
    from rapgen.judge.analysis import read_songs
    from rapgen.data.lyrics import Song

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
    parts = [f"rhyme density {score['rhyme_density']:.2f}"]
    if "copied_tokens" in score:
        parts.append(f"longest copied span {score['copied_tokens']} tokens, 8-grams seen {100 * score['ngram8_share']:.0f}%")
    if "mean_loss" in score:
        parts.append(f"mean loss {score['mean_loss']:.3f}")
    return ", ".join(parts)


def choose(texts: List[str], best_of: int, rank: str, judge, gpt=None, enc=None, quiet: bool = False) -> List[str]:
    """From consecutive groups of `best_of` candidates, the best of each group under `rank`."""
    chosen = []
    for g in range(0, len(texts), best_of):
        group = texts[g:g + best_of]
        scores = judge_candidates(group, rank, judge, gpt, enc)
        order = rank_order(scores, rank)
        chosen.append(group[order[0]])
        if not quiet:
            print("=" * 20 + f" SAMPLE {len(chosen)} (best of {len(group)} by {rank}) " + "=" * 20)
            print(group[order[0]])
            print("-- " + "; ".join(f"#{i + 1}: {describe(scores[i])}" for i in order))
    return chosen


def check(best_of, rank) -> None:
    positive_int("--best_of", best_of)
    one_of("--rank", rank, RANKS)


def make_judge(model_dir: str, rank: str, dataset: Optional[str], phonetics: str, enc):
    """The Judge for a ranking, with the training set's index when the ranking needs it."""
    from rapgen.judge.analysis import Judge
    from rapgen.judge.originality import load_index

    index = None
    if rank in ("original", "both"):
        dataset = dataset or training_dataset(model_dir)
        if dataset is None:
            raise RapgenError(f"--rank {rank} compares with the training set: give --dataset PATH "
                              f"(or use --rank rhyme or likely)")
        index = load_index(str(dataset), enc)
    return Judge(phonetics, index, enc)
