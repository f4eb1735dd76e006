"""How well a model predicts a text: mean loss per token (nats) and perplexity.

The text is encoded as training data is (songs between 50256 separators) and cut into
windows of n_ctx tokens that overlap by one, so every token after the first is predicted
exactly once. Compare models on the same held-out lyrics: lower is better.

>>> score("data/heldout.txt", model="checkpoints/run1")    # doctest: +SKIP
{'tokens': 5120, 'loss': 2.91, 'perplexity': 18.4}
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import numpy as np

from rapgen.checks import check_checkpoint, positive_int
from rapgen.data.dataset import encode_lyrics, read_text
from rapgen.errors import RapgenError
from rapgen.model.encoder import load_encoder
from rapgen.model.folders import choice_note
from rapgen.model.loading import load_model


def window_starts(n_tokens: int, n_ctx: int):
    """Start offsets of windows [s, s + n_ctx) that predict tokens 1 .. n_tokens-1 once each."""
    return list(range(0, max(n_tokens - 1, 1), n_ctx - 1))


def token_losses(model, tokens: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """float64 [len(tokens) - 1]: the loss of predicting each token from those before it."""
    import tensorflow as tf  # here: `rapgen sample` imports this module (--best_of), and its mistakes never load TF

    n_ctx = model.hparams.n_ctx

    # autograph=False: plain graph code; autograph's source conversion warns on Python 3.13+.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)], autograph=False)
    def losses(batch):
        logits = model(batch[:, :-1])  # [B, T-1, V]
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch[:, 1:], logits=logits)  # [B, T-1]

    out = []
    windows = [tokens[s : s + n_ctx].astype(np.int32) for s in window_starts(len(tokens), n_ctx)]
    # Full windows go in batches; the last, shorter one on its own (one more trace at most).
    full = [w for w in windows if len(w) == n_ctx]
    for i in range(0, len(full), batch_size):
        out.extend(losses(tf.constant(np.stack(full[i : i + batch_size]))).numpy())
    for w in windows:
        if len(w) != n_ctx and len(w) > 1:
            out.extend(losses(tf.constant(w[None])).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def score(
    file: str,
    model: Optional[str] = None,
    models_dir: str = "models",
    encoding: str = "utf-8",
    batch_size: int = 4,
    checkpoint: Optional[str] = None,
) -> dict:
    """`{"tokens", "loss", "perplexity"}` of a text file under a model (tokens = predicted tokens)."""
    positive_int("--batch_size", batch_size)
    check_checkpoint(checkpoint)
    text = read_text(str(file), encoding)
    gpt = load_model(model, models_dir, checkpoint=checkpoint)
    note = choice_note(gpt.model_dir, checkpoint, gpt.checkpoint)
    if note:
        print(note, file=sys.stderr)  # stdout is the JSON
    tokens = encode_lyrics(text, load_encoder(gpt.model_dir))
    if len(tokens) < 3:
        raise RapgenError(f"{file} holds no text to score")
    losses = token_losses(gpt, tokens, batch_size)
    loss = float(np.mean(losses))
    return {"tokens": int(len(losses)), "loss": loss, "perplexity": float(math.exp(min(loss, 700.0)))}
