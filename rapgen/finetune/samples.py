"""Samples during training: a few songs from `<<Artist` prompts, saved, printed and judged.

Every `sample_every` steps the run writes `samples/step-<step>.txt` in its folder, prints
the songs (every artist's in one batch), and returns their rhyme density and longest
span copied from the training tokens for the log row (a copied span that grows as the
loss falls is memorising). The prompts and sampling seeds are a pure function of (seed, step).

>>> text, figures = sample_during_training(trainer, encoder, ["Yung Lean"], cfg, "checkpoints/run1", tokens)  # doctest: +SKIP
>>> sorted(figures)  # doctest: +SKIP
['sample_copied_tokens', 'sample_rhyme_density']
"""

from __future__ import annotations

import os
import random

from rapgen.data.dataset import song_layout
from rapgen.fileio import atomic_write_text
from rapgen.finetune.config import say
from rapgen.judge.analysis import Judge, read_songs
from rapgen.judge.originality import index_for_tokens
from rapgen.model.hparams import EOT_ID
from rapgen.write.generation import generate
from rapgen.write.songs import SamplingOptions


def sample_figures(texts, tokens, encoder):
    """Mean rhyme density and the longest span copied from the training tokens, over the samples."""
    songs = [s for text in texts for s in read_songs(text)[:1]]
    if not songs:
        return {}
    scores = Judge("auto", index_for_tokens(tokens, encoder), encoder).judge(songs)
    return {
        "sample_rhyme_density": f"{sum(s['rhyme_density'] for s in scores) / len(scores):.3f}",
        "sample_copied_tokens": str(max(s["copied_tokens"] for s in scores)),
    }


def sample_during_training(trainer, encoder, artists, cfg, run_dir, tokens=None):
    """Write, print and save samples; returns (the text saved, their figures for log.csv, given the training tokens)."""
    # `rapgen sample`'s defaults (top-k 40, temperature 1, a song ends at <|endoftext|>) at
    # the run's length and number.
    options = SamplingOptions(length=cfg.sample_length, nsamples=cfg.sample_num)
    model, n_ctx = trainer.model, trainer.model.hparams.n_ctx
    rng = random.Random(cfg.seed * 1_000_003 + trainer.step)
    prompts = ["<<" + rng.choice(artists) if artists else "<<" for _ in range(options.nsamples)]
    contexts = [song_layout([encoder.encode(p)], open_end=True).tolist() for p in prompts]  # [EOT] <<Artist
    length = min(options.length, n_ctx - max(len(c) for c in contexts))
    texts = []
    if length > 0:
        # Every artist in one batch: each row is the song its prompt gets alone (rapgen.write.generation).
        rows = generate(
            model,
            contexts,
            length,
            temperature=options.temperature,
            top_k=options.top_k,
            top_p=options.top_p,
            seed=rng.randrange(2**31),
            stop_at_end=options.stop_at_end,
        )
        texts = [p + encoder.decode([t for t in row if t != EOT_ID]) for p, row in zip(prompts, rows)]
    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
    divider = "\n" + "=" * 40 + "\n"
    saved = divider.join(texts) + "\n"
    atomic_write_text(os.path.join(run_dir, "samples", f"step-{trainer.step}.txt"), saved)
    figures = sample_figures(texts, tokens, encoder) if tokens is not None else {}
    said = (
        f" (rhyme density {figures['sample_rhyme_density']}, longest copied span "
        f"{figures['sample_copied_tokens']} tokens)"
        if figures
        else ""
    )
    say(cfg, f"======== samples at step {trainer.step}{said} ========\n" + divider.join(texts))
    return saved, figures
