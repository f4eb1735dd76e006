"""Logit filters for sampling: top-k, top-p (nucleus) and temperature, as pure TensorFlow functions.

Each takes float32 logits [B, V] and returns the same shape (or int32 ids [B] for
`choose_tokens` and `choose_tokens_per_row`, the generation loop's: one random stream per
row); they run inside the compiled generation loop and are tested with fake logits.

>>> choose_tokens(logits, temperature=1.0, top_k=40, top_p=0.0, seed=tf.constant([1, 0]))   # doctest: +SKIP
<tf.Tensor: shape=(2,), dtype=int32, numpy=array([318, 11], dtype=int32)>
"""

from __future__ import annotations

NEG_INF = -1e10  # a large finite negative: masked logits never turn into NaN


def top_k_logits(logits, k):
    """Keep the k largest logits of each row; k = 0 keeps all. logits: float32 [B, V]."""
    import tensorflow as tf

    k = tf.convert_to_tensor(k, tf.int32)

    def keep_top_k():
        # A k beyond the vocabulary keeps every token (top_k would fail on it).
        kth = tf.math.top_k(logits, k=tf.minimum(k, tf.shape(logits)[-1])).values[:, -1:]  # [B, 1]
        return tf.where(logits < kth, NEG_INF, logits)  # [B, V]

    return tf.cond(k > 0, keep_top_k, lambda: logits)


def top_p_logits(logits, p):
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    p <= 0 or p >= 1 keeps all. logits: float32 [B, V].
    """
    import tensorflow as tf

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


def choose_tokens(logits, temperature, top_k, top_p, seed):
    """One token per row from float32 logits [B, V]; temperature 0 is greedy. Returns int32 [B]."""
    import tensorflow as tf

    temperature = tf.convert_to_tensor(temperature, tf.float32)

    def draw():
        filtered = top_p_logits(top_k_logits(logits / temperature, top_k), top_p)
        return tf.random.stateless_categorical(filtered, 1, seed=seed, dtype=tf.int32)[:, 0]

    return tf.cond(temperature > 0.0, draw, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))


def choose_tokens_per_row(logits, temperature, top_k, top_p, seed, row_ids):
    """As `choose_tokens`, but row b's draw depends only on (seed, row_ids[b]) and its own logits.

    `tf.random.stateless_categorical` draws row b from noise at offset b of one stream, so
    a row's token depends on where it sits in the batch. Here each row gets its own stream,
    `seed` folded with its id, and draws by the Gumbel-max rule (argmax of logits plus
    -log(-log u), which picks token v with probability softmax(logits)[v]): a prompt gives
    the same song alone or in any batch. seed: int32 [2]; row_ids: int32 [B]. Returns int32 [B].
    """
    import tensorflow as tf

    temperature = tf.convert_to_tensor(temperature, tf.float32)
    seed = tf.convert_to_tensor(seed, tf.int32)
    V = tf.shape(logits)[-1]

    def uniforms(row_id):
        row_seed = tf.random.experimental.stateless_fold_in(seed, row_id)  # [2]
        return tf.random.stateless_uniform([V], row_seed, minval=1e-20, maxval=1.0)  # [V]

    def draw():
        filtered = top_p_logits(top_k_logits(logits / temperature, top_k), top_p)  # [B, V]
        u = tf.map_fn(uniforms, tf.convert_to_tensor(row_ids, tf.int32),
                      fn_output_signature=tf.TensorSpec([None], tf.float32))  # [B, V]
        gumbel = -tf.math.log(-tf.math.log(u))  # [B, V]
        return tf.argmax(filtered + gumbel, axis=-1, output_type=tf.int32)  # [B]

    return tf.cond(temperature > 0.0, draw, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))
