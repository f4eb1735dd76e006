"""LoRA adapter math: which projections get adapters, their shapes, the adapters on a model, the merge.

Each targeted projection W [1, in, out] gets two float32 matrices, A [in, r] (small random)
and B [r, out] (zeros), and computes x W + (alpha / r) x A B; B = 0 makes a fresh run start
exactly at its base model. Only A and B are trained; `merged_weights` folds them in once,
W + (alpha / r) A B, so sampling costs nothing extra. The run folder that stores them is
`rapgen.model.lora_run`'s. No TensorFlow at import: `rapgen plan` counts with these shapes.

>>> lora_target_names("c_attn, c_fc")
('c_attn', 'c_fc')
>>> adapter_shapes(HParams(n_layer=1, n_embd=8, n_head=2, n_ctx=16), rank=2, targets=("c_attn",))
{'h0/attn/c_attn': (8, 24)}
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from rapgen.checks import known_name
from rapgen.errors import RapgenError
from rapgen.model.hparams import HParams

PREFIX = "lora/"
LORA_TARGETS = ("c_attn", "c_proj", "c_fc")  # the projections that may get adapters, and the default: all of them
DEFAULT_AUTO_RANK = 16  # what lora_rank="auto" uses when full fine-tuning does not fit


def lora_target_names(targets: Union[str, Sequence[str]]) -> tuple:
    """`--lora_targets` as a tuple of projection names: "c_attn,c_fc" (the command line may give a tuple).

    >>> lora_target_names(["c_fc", "c_attn", "c_fc"])
    ('c_fc', 'c_attn')
    """
    names = (
        targets.split(",")
        if isinstance(targets, str)
        else list(targets)
        if isinstance(targets, (list, tuple))
        else None
    )
    names = [str(n).strip() for n in names or [] if str(n).strip()]
    if not names:
        raise RapgenError(f"--lora_targets must name projections among {', '.join(LORA_TARGETS)}, got {targets!r}")
    return tuple(dict.fromkeys(known_name("--lora_targets", n, LORA_TARGETS) for n in names))


# -- shapes (no TensorFlow: rapgen.finetune.memory counts with these) ---------------


def adapter_shapes(hparams: HParams, rank: int, targets=LORA_TARGETS) -> Dict[str, Tuple[int, int]]:
    """Projection name (`h0/mlp/c_fc`) -> (in, out) for every projection that gets an adapter.

    `c_proj` names both the attention's and the MLP's output projection, as in OpenAI's names.
    """
    E = hparams.n_embd
    wanted = lora_target_names(targets)
    layer = {"attn/c_attn": (E, 3 * E), "attn/c_proj": (E, E), "mlp/c_fc": (E, 4 * E), "mlp/c_proj": (4 * E, E)}
    return {
        f"h{i}/{name}": shape
        for i in range(hparams.n_layer)
        for name, shape in layer.items()
        if name.split("/")[1] in wanted
    }


def adapter_parameter_count(hparams: HParams, rank: int, targets=LORA_TARGETS) -> int:
    """Numbers in all A and B matrices: r (in + out) per adapter."""
    return sum(rank * (n_in + n_out) for n_in, n_out in adapter_shapes(hparams, rank, targets).values())


# -- adapters on a model ---------------------------------------------------------------


def initial_adapters(hparams: HParams, rank: int, targets, seed: int = 0) -> Dict[str, np.ndarray]:
    """Checkpoint name -> float32 value: A ~ N(0, 1/in) (so x A keeps x's scale), B = 0."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, (n_in, n_out) in adapter_shapes(hparams, rank, targets).items():
        values[f"{PREFIX}{name}/A"] = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_in, rank)).astype(np.float32)
        values[f"{PREFIX}{name}/B"] = np.zeros((rank, n_out), np.float32)
    return values


class Adapter:
    """x [..., in] -> scale * x A B [..., out], in x's type; A and B stay float32 variables."""

    def __init__(self, a, b, scale: float):
        self.A, self.B, self.scale = a, b, float(scale)

    def __call__(self, x):
        import tensorflow as tf  # TensorFlow: off the CLI's fast path (rapgen plan imports this module)

        n_in, n_out = self.A.shape[0], self.B.shape[1]
        lead_shape = tf.shape(x)[:-1]
        h = tf.matmul(tf.reshape(x, [-1, n_in]), tf.cast(self.A, x.dtype))  # [N, r]
        y = tf.matmul(h, tf.cast(self.B, x.dtype)) * tf.cast(self.scale, x.dtype)  # [N, out]
        return tf.reshape(y, tf.concat([lead_shape, [n_out]], axis=0))  # [..., out]


def attach(
    model,
    rank: int,
    alpha: Optional[float] = None,
    targets=LORA_TARGETS,
    seed: int = 0,
    values: Optional[Dict[str, np.ndarray]] = None,
) -> Dict[str, "object"]:
    """Give `model` (a GPT2) adapters through its `adapters` hook; returns name -> tf.Variable.

    values: A and B by checkpoint name (a resumed run's); default `initial_adapters(seed)`.
    Call inside the strategy's scope when training distributed (the variables are mirrored).

    >>> variables = attach(model, rank=8)   # doctest: +SKIP
    """
    import tensorflow as tf  # TensorFlow: off the CLI's fast path

    values = initial_adapters(model.hparams, rank, targets, seed) if values is None else values
    scale = (rank if alpha is None else alpha) / rank
    made = {}
    for name in adapter_shapes(model.hparams, rank, targets):
        a_name, b_name = f"{PREFIX}{name}/A", f"{PREFIX}{name}/B"
        for key in (a_name, b_name):
            if key not in values:
                raise RapgenError(
                    f"the LoRA checkpoint has no {key}: its lora.json does not match it (rank or targets)"
                )
        a = tf.Variable(values[a_name].astype(np.float32), name=a_name.replace("/", "_"))  # [in, r]
        b = tf.Variable(values[b_name].astype(np.float32), name=b_name.replace("/", "_"))  # [r, out]
        made[a_name], made[b_name] = a, b
        model.adapters[name] = Adapter(a, b, scale)
    return made


def adapter_variables(model) -> Dict[str, "object"]:
    """The adapters' variables of a model by checkpoint name (empty without adapters)."""
    out = {}
    for name, adapter in model.adapters.items():
        if isinstance(adapter, Adapter):
            out[f"{PREFIX}{name}/A"], out[f"{PREFIX}{name}/B"] = adapter.A, adapter.B
    return out


def merged_weights(base: Dict[str, np.ndarray], adapters: Dict[str, np.ndarray], scale: float) -> Dict[str, np.ndarray]:
    """W + scale * A B for every adapter (float32, in OpenAI's [1, in, out]); other weights as they are."""
    out = dict(base)
    for key in adapters:
        if key.startswith(PREFIX) and key.endswith("/A"):
            name = key[len(PREFIX) : -2]
            a, b = adapters[key], adapters[f"{PREFIX}{name}/B"]  # [in, r], [r, out]
            w = "model/" + name + "/w"
            # float64 product: the merged weights should differ from the unmerged path only by float32 rounding.
            delta = (a.astype(np.float64) @ b.astype(np.float64)) * scale  # [in, out]
            out[w] = (base[w].astype(np.float64) + delta[None]).astype(np.float32)  # [1, in, out]
    return out
