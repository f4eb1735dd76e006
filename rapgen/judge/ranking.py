"""Ranking judged songs: which comes first under `--rank` rhyme, original, both or likely.

`rapgen analyze`'s `best` and `sample --best_of` (rapgen.write.keep_best) both rank songs by
these rules, so they live here, with the judges, once.

* `rhyme`: highest rhyme density first.
* `original`: shortest span copied from the training set first, then the fewest 8-grams found there.
* `both` (default): the sum of a song's places under `rhyme` and `original` (equal figures share
  a place; a tie goes to the better rhymer).
* `likely`: lowest mean loss per token under the model first (what the model finds most natural).
"""

from __future__ import annotations

from typing import List

from rapgen.checks import one_of

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
