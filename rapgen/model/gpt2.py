"""GPT-2 in TensorFlow 2: one `tf.Module`, variables named and shaped exactly as OpenAI's checkpoint.

Shapes: B batch, T new tokens, P cached (past) positions, E n_embd, H n_head, D = E / H,
L n_layer, V n_vocab. Variables are float32 unless `variable_dtype` says otherwise (sampling
in reduced precision stores them in bfloat16/float16: half the bytes to read per token); with
`compute_dtype` bfloat16 or float16 the matmuls run in that type while layer norms, softmax
and the logits' log-softmax stay float32.

>>> model = GPT2(HParams(n_layer=2, n_embd=32, n_head=2, n_ctx=64))   # doctest: +SKIP
>>> logits = model(tf.constant([[15496, 995]]))                        # doctest: +SKIP
>>> logits.shape                                                       # doctest: +SKIP
TensorShape([1, 2, 50257])

`forward` (alias `__call__`) gives the logits of a whole sequence (training, scoring);
`extend` runs new tokens after a key/value cache; `step` is generation's: the last
position's logits and the new keys/values. Each returns one shape, whatever its inputs.

Rows of different lengths (a batch of different prompts): `extend` and `step` take `pad`,
int32 [B], the number of filler slots on the left of each row. A row's first real token
then sits at position 0, and no query attends to the filler slots, so each row computes
what it would alone. Without `pad` the graph is the plain one (no per-row mask).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from rapgen.model.hparams import HParams, variable_shapes


def gelu(x):
    """GELU, the tanh approximation GPT-2 was trained with."""
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def layer_norm(x, g, b, eps=1e-5):
    """Normalise the last axis; always in float32, whatever the compute type."""
    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)  # [..., 1]
    x = (x - mean) * tf.math.rsqrt(var + eps) * tf.cast(g, tf.float32) + tf.cast(b, tf.float32)
    return tf.cast(x, dtype)


def linear(x, w, b):
    """OpenAI's `conv1d`: a dense layer whose weight is stored as [1, in, out]."""
    lead_shape = tf.shape(x)[:-1]
    w = tf.cast(tf.reshape(w, w.shape[1:]), x.dtype)  # [in, out]; a reshape, unlike w[0], copies nothing
    y = tf.matmul(tf.reshape(x, [-1, w.shape[0]]), w) + tf.cast(b, x.dtype)  # [N, out]
    return tf.reshape(y, tf.concat([lead_shape, [w.shape[1]]], axis=0))  # [..., out]


def initial_weights(hp: HParams, seed: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Random float32 weights as GPT-2 starts: N(0, 0.02) matrices (wpe 0.01), zero biases,
    unit layer-norm gains, and the residual projections (each block's two c_proj) scaled down
    by sqrt(2 L) so that deep stacks start stable."""
    rng = np.random.default_rng(seed)
    resid_std = 0.02 / math.sqrt(2 * hp.n_layer)
    values = {}
    for name, shape in variable_shapes(hp).items():
        if name.endswith("/g"):
            values[name] = np.ones(shape, np.float32)
        elif name.endswith("/b"):
            values[name] = np.zeros(shape, np.float32)
        else:
            std = 0.01 if name == "model/wpe" else resid_std if name.endswith("c_proj/w") else 0.02
            values[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
    return values


class GPT2(tf.Module):
    """The GPT-2 network. `variables_by_name` maps checkpoint names (`model/h0/ln_1/g`) to variables.

    `weights` (name -> array, e.g. read from a checkpoint) sets the values; without it they
    are random (`initial_weights`, seeded by `seed`). `variable_dtype` other than float32 is
    for inference only (training keeps float32 master weights).

    Fields besides the weights: `model_dir` and `checkpoint`, the folder and checkpoint prefix
    the weights came from (set by `rapgen.model.loading.load_model`, None for a fresh network);
    `generation` holds the compiled generation loop `rapgen.write.songs` builds on first use, so
    later calls reuse it instead of retracing (None until then); `adapters` holds the LoRA
    adapters a LoRA run trains (`rapgen.model.lora`), empty otherwise.
    """

    def __init__(
        self,
        hparams: HParams,
        seed: Optional[int] = None,
        compute_dtype=tf.float32,
        weights: Optional[Dict[str, np.ndarray]] = None,
        variable_dtype=tf.float32,
    ):
        super().__init__(name="gpt2")
        self.hparams = hparams
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.variable_dtype = tf.as_dtype(variable_dtype)
        self.model_dir: Optional[str] = None
        self.checkpoint: Optional[str] = None
        self.generation = None  # a rapgen.write.generation.GenerationLoop, built on the first generate()
        # name ("h0/attn/c_attn") -> a callable x [..., in] -> [..., out], the low-rank update
        # that `proj` adds (rapgen.model.lora attaches them for training; empty otherwise).
        self.adapters: Dict[str, Callable] = {}
        values = initial_weights(hparams, seed) if weights is None else weights
        with self.name_scope:
            self.variables_by_name: Dict[str, tf.Variable] = {
                name: tf.Variable(tf.cast(values[name], self.variable_dtype), name=name.replace("/", "_"))
                for name in variable_shapes(hparams)
            }

    def v(self, name: str) -> tf.Variable:
        return self.variables_by_name["model/" + name]

    def proj(self, x, name: str):
        """The projection `name` (`h0/attn/c_attn`) of x [..., in] -> [..., out]: OpenAI's conv1d,
        plus the low-rank update of a LoRA adapter where `adapters` holds one for `name`.

        Why x @ A @ B and not x @ (W + A @ B): the tape would keep a full-size W + A B of every
        projection for the backward pass, as many bytes again as the frozen weights.
        """
        y = linear(x, self.v(name + "/w"), self.v(name + "/b"))  # [..., out]
        adapter = self.adapters.get(name)
        return y if adapter is None else y + tf.cast(adapter(x), y.dtype)  # [..., out]

    # -- the network ------------------------------------------------------------------

    def attention(self, x, i, past, past_length, pad=None):
        """Masked multi-head self-attention of block i; returns output and this step's k, v.

        pad: None, or int32 [B] filler slots at the left of each row, hidden from every query.
        """
        hp = self.hparams
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        H, D = hp.n_head, hp.head_dim
        qkv = self.proj(x, f"h{i}/attn/c_attn")  # [B, T, 3E]
        qkv = tf.reshape(qkv, [B, T, 3, H, D])  # [B, T, 3, H, D]
        qkv = tf.transpose(qkv, [2, 0, 3, 1, 4])  # [3, B, H, T, D]
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, H, T, D]
        present = tf.stack([k, v])  # [2, B, H, T, D]

        # Key j is visible to query t when j is a valid past slot or j <= t among new tokens.
        q_pos = tf.range(T)[:, None]  # [T, 1]
        new_visible = tf.range(T)[None, :] <= q_pos  # [T, T]
        if past is not None:
            P = tf.shape(past)[-2]
            k = tf.concat([tf.cast(past[0], k.dtype), k], axis=-2)  # [B, H, P+T, D]
            v = tf.concat([tf.cast(past[1], v.dtype), v], axis=-2)  # [B, H, P+T, D]
            # Cache slots at or beyond past_length hold nothing yet (a fixed-size buffer).
            past_visible = tf.broadcast_to(tf.range(P)[None, :] < past_length, [T, P])  # [T, P]
            visible = tf.concat([past_visible, new_visible], axis=1)  # [T, P+T]
        else:
            visible = new_visible

        if pad is not None:
            # Slot s of row b is filler while s < pad[b]. The keys are [past slots 0..P-1,
            # new tokens at slots past_length..past_length+T-1]. A filler query sees nothing
            # real, but its output is never read by a real token.
            slots = tf.range(T) + past_length  # [T]
            if past is not None:
                slots = tf.concat([tf.range(tf.shape(past)[-2]), slots], axis=0)  # [P+T]
            real = slots[None, :] >= pad[:, None]  # [B, P+T]
            visible = tf.logical_and(visible[None, None], real[:, None, None, :])  # [B, 1, T, P+T]
        scores = tf.matmul(q, k, transpose_b=True)  # [B, H, T, P+T]
        scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(D))
        # A large finite negative rather than -inf: a fully masked row never yields NaN.
        scores = tf.where(visible, scores, -1e10)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), x.dtype)  # [B, H, T, P+T]
        out = tf.matmul(weights, v)  # [B, H, T, D]
        out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [B, T, hp.n_embd])  # [B, T, E]
        out = self.proj(out, f"h{i}/attn/c_proj")  # [B, T, E]
        return out, present

    def block(self, x, i, past=None, past_length=0, pad=None):
        """Transformer block i (pre-norm): x + attn(ln_1(x)), then + mlp(ln_2(x))."""
        a, present = self.attention(
            layer_norm(x, self.v(f"h{i}/ln_1/g"), self.v(f"h{i}/ln_1/b")), i, past, past_length, pad
        )
        x = x + a  # [B, T, E]
        m = layer_norm(x, self.v(f"h{i}/ln_2/g"), self.v(f"h{i}/ln_2/b"))  # [B, T, E]
        m = gelu(self.proj(m, f"h{i}/mlp/c_fc"))  # [B, T, 4E]
        m = self.proj(m, f"h{i}/mlp/c_proj")  # [B, T, E]
        return x + m, present

    def _check_inputs(self, tokens, past_length, pad=None):
        """Token ids [B, T] and their positions ([T], or [B, T] with `pad`), gated on ids in
        [0, n_vocab) and positions below n_ctx.

        With pad, row b's slot s holds position s - pad[b] (filler slots: 0, never attended to).

        On a CPU `tf.gather` fails on an id out of range, but on a GPU it returns zeros, and a
        position past n_ctx silently reads a zero row of wpe: these asserts make both fail on
        every device. They cost two reductions over the int32 ids, nothing per weight. Both
        outputs carry the asserts as control inputs, so no gather can run before them (a graph
        optimizer may read T straight from the unchecked ids). Under XLA (jit_compile)
        TensorFlow compiles asserts to nothing: there the Python callers' checks are what holds.
        """
        hp = self.hparams
        T = tf.shape(tokens)[1]
        positions = past_length + tf.range(T)  # [T]
        if pad is not None:
            positions = tf.maximum(positions[None, :] - pad[:, None], 0)  # [B, T]
        checks = [
            tf.debugging.assert_non_negative(tokens, message="token ids must be >= 0"),
            tf.debugging.assert_less(
                tokens,
                tf.constant(hp.n_vocab, tf.int32),
                message=f"token id out of range: the vocabulary has {hp.n_vocab} ids",
            ),
            tf.debugging.assert_less(
                positions, tf.constant(hp.n_ctx, tf.int32), message=f"positions beyond the context of {hp.n_ctx} tokens"
            ),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(tokens), tf.identity(positions)  # [B, T], [T] or [B, T]

    def _hidden(self, tokens, past, past_length, recompute, pad=None):
        """The final layer-normed states [B, T, E] and the stacked keys/values (None with recompute)."""
        hp = self.hparams
        if pad is not None:
            pad = tf.convert_to_tensor(pad, tf.int32)  # [B]
        tokens, positions = self._check_inputs(
            tf.convert_to_tensor(tokens, tf.int32), past_length, pad
        )  # [B, T], [T] or [B, T]
        # Gather from plain reads, not from the variables: a gather on a variable switches it to
        # copy-on-read, after which every dense read (the logits) copies all 154 MB of wte.
        wte = tf.convert_to_tensor(self.v("wte"))  # [V, E]
        wpe = tf.convert_to_tensor(self.v("wpe"))  # [n_ctx, E]
        position_rows = tf.cast(tf.gather(wpe, positions), tf.float32)  # [T, E] or [B, T, E]
        if pad is None:
            position_rows = position_rows[None]  # [1, T, E]
        x = tf.cast(tf.gather(wte, tokens), tf.float32) + position_rows  # [B, T, E]
        x = tf.cast(x, self.compute_dtype)
        presents = []
        for i in range(hp.n_layer):
            if recompute:
                # tf.recompute_grad needs a function of tensors only; the block index is bound.
                run = tf.recompute_grad(lambda h, i=i: self.block(h, i)[0])
                x = run(x)  # [B, T, E]
            else:
                layer_past = None if past is None else past[i]  # [2, B, H, P, D]
                x, present = self.block(x, i, layer_past, past_length, pad)  # [B, T, E], [2, B, H, T, D]
                presents.append(present)
        x = layer_norm(x, self.v("ln_f/g"), self.v("ln_f/b"))  # [B, T, E]
        return x, (None if recompute else tf.stack(presents))  # [L, 2, B, H, T, D]

    def _logits(self, x):
        """float32 logits [B, T, V] of final states [B, T, E], tied to the token embedding."""
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        wte = tf.cast(self.v("wte"), x.dtype)  # [V, E]
        h = tf.reshape(x, [-1, self.hparams.n_embd])  # [B*T, E]
        logits = tf.matmul(h, wte, transpose_b=True)  # [B*T, V]
        return tf.reshape(tf.cast(logits, tf.float32), [B, T, self.hparams.n_vocab])  # [B, T, V]

    def forward(self, tokens, recompute: bool = False) -> tf.Tensor:
        """float32 logits [B, T, V] of every position of int32 tokens [B, T] (training, scoring).

        recompute=True keeps only each block's input for the backward pass and recomputes
        the rest (gradient checkpointing): less memory, about a third more compute.
        """
        x, _ = self._hidden(tokens, None, 0, recompute)  # [B, T, E]
        return self._logits(x)  # [B, T, V]

    def extend(self, tokens, past=None, past_length=0, pad=None) -> Tuple[tf.Tensor, tf.Tensor]:
        """Logits float32 [B, T, V] of new tokens after a cache, and their keys/values [L, 2, B, H, T, D].

        past: None, or a cache [L, 2, B, H, P, D] whose first `past_length` positions hold the
        keys/values of earlier tokens (the rest is ignored, so a fixed-size buffer can be
        filled as generation goes). The new tokens sit at positions past_length ..
        past_length + T - 1, which must stay below n_ctx. pad: None, or int32 [B] filler
        slots at the left of each row (counted in past_length; see the module's docstring).
        """
        x, present = self._hidden(tokens, past, past_length, False, pad)  # [B, T, E], [L, 2, B, H, T, D]
        return self._logits(x), present

    def step(self, tokens, past, past_length, pad=None) -> Tuple[tf.Tensor, tf.Tensor]:
        """One generation step: float32 logits [B, V] of the last new token, and the new keys/values.

        Arguments as `extend`; only the last position's logits are computed.
        """
        x, present = self._hidden(tokens, past, past_length, False, pad)  # [B, T, E], [L, 2, B, H, T, D]
        h = x[:, -1]  # [B, E]
        wte = tf.cast(self.v("wte"), h.dtype)  # [V, E]
        # CPU-kernel tuning, kept here beside the one matmul it concerns: for a few rows,
        # oneDNN is several times faster on wte @ h^T than on h @ wte^T, so multiply that way.
        logits = tf.transpose(tf.matmul(wte, h, transpose_b=True))  # [B, V]
        return tf.cast(logits, tf.float32), present  # [B, V], [L, 2, B, H, T, D]

    def __call__(self, tokens):
        """Logits float32 [B, T, V] for int32 token ids [B, T]."""
        return self.forward(tokens)

    def loss(self, tokens, recompute=False):
        """Mean cross-entropy (nats) of predicting tokens[:, 1:] from tokens[:, :-1]."""
        logits = self.forward(tokens[:, :-1], recompute=recompute)  # [B, T-1, V]
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens[:, 1:], logits=logits))
