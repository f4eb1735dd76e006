"""Choosing the next token from logits: temperature, top-k and top-p (nucleus), as pure TensorFlow functions.

`choose_tokens` draws one int32 id per row of float32 logits [B, V], each row from its own
random stream; `top_p_logits` masks logits [B, V] to the nucleus. They run inside the compiled
generation loop (rapgen.write.generation) and are tested with fake logits.

>>> choose_tokens(logits, temperature=1.0, top_k=40, top_p=0.0, seed=tf.constant([1, 0]))   # doctest: +SKIP
<tf.Tensor: shape=(2,), dtype=int32, numpy=array([318, 11], dtype=int32)>
"""

from __future__ import annotations

import tensorflow as tf

NEG_INF = -1e10  # a large finite negative: masked logits never turn into NaN


def top_p_logits(logits, p):
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    p <= 0 or p >= 1 keeps all. logits: float32 [B, V].
    """
    p = tf.convert_to_tensor(p, tf.float32)

    def keep_nucleus():
        sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)  # [B, V]
        probs = tf.nn.softmax(sorted_logits, axis=-1)  # [B, V]
        before = tf.cumsum(probs, axis=-1, exclusive=True)  # [B, V] mass of the more likely tokens
        # Token i is needed while the mass before it is still short of p; the first always is.
        n_keep = tf.maximum(tf.reduce_sum(tf.cast(before < p, tf.int32), axis=-1), 1)  # [B]
        threshold = tf.gather(sorted_logits, n_keep - 1, batch_dims=1)[:, None]  # [B, 1]
        return tf.where(logits < threshold, NEG_INF, logits)  # [B, V]

    return tf.cond(tf.logical_and(p > 0.0, p < 1.0), keep_nucleus, lambda: logits)


def choose_tokens(logits, temperature, top_k, top_p, seed, row_ids=None):
    """One token per row from float32 logits [B, V]; temperature 0 is greedy. Returns int32 [B].

    Row b's draw depends only on (seed, row_ids[b]) and its own logits, not on where it sits
    in the batch (`tf.random.stateless_categorical` would draw row b from noise at offset b of
    one stream): row b reads uniform number row_ids[b] of the stream `seed` gives (a longer
    draw of a stateless stream starts with the shorter one) and inverts its own cumulative
    distribution. One number per row, so a prompt gives the same song alone or in any batch,
    at the cost of a cumulative sum over the vocabulary. seed: int32 [2]; row_ids: int32 [B],
    default 0 .. B-1 (independent rows).
    """
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    if row_ids is None:
        row_ids = tf.range(tf.shape(logits)[0])  # [B]
    row_ids = tf.convert_to_tensor(row_ids, tf.int32)

    def invert(filtered, u):
        # The first entry whose cumulative mass passes u times the total: a filtered-out entry
        # adds exactly 0, so it is never the first to pass.
        cdf = tf.cumsum(tf.nn.softmax(filtered, axis=-1), axis=-1)  # [B, N]
        passed = tf.cast(cdf > u[:, None] * cdf[:, -1:], tf.int32)  # [B, N]
        return tf.argmax(passed, axis=-1, output_type=tf.int32)  # [B]

    def among_top_k(scaled, u):
        # With top-k on (the default), draw among the k most likely tokens, sorted: the
        # cumulative sum runs over k entries instead of the vocabulary (it was a tenth of a
        # sampled step's time at 124M), and top-p cuts the same sorted list.
        values, ids = tf.math.top_k(scaled, k=top_k)  # [B, k] descending, [B, k]
        values = top_p_logits(values, top_p)  # [B, k]
        return tf.gather(ids, invert(values, u), batch_dims=1)  # [B]

    def over_vocabulary(scaled, u):
        return invert(top_p_logits(scaled, top_p), u)  # [B]

    def draw():
        stream = tf.random.stateless_uniform([tf.reduce_max(row_ids) + 1], seed)  # [R]
        u = tf.gather(stream, row_ids)  # [B] in [0, 1)
        scaled = logits / temperature  # [B, V]
        k = tf.convert_to_tensor(top_k, tf.int32)
        # A k of 0 or beyond the vocabulary keeps every token: plain sampling, the same draw either way.
        return tf.cond(
            tf.logical_and(k > 0, k < tf.shape(scaled)[-1]),
            lambda: among_top_k(scaled, u),
            lambda: over_vocabulary(scaled, u),
        )

    return tf.cond(temperature > 0.0, draw, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))
