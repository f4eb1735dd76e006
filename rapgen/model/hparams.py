"""Model shapes: the `hparams.json` of a model directory and the released GPT-2 sizes.

>>> HParams.for_model("355M").n_layer
24
>>> HParams().n_params()  # the 124M model
124439808
"""

from __future__ import annotations

import dataclasses
import json
import os

from rapgen.checks import positive_int
from rapgen.errors import RapgenError

EOT_ID = 50256  # `<|endoftext|>`, the song separator

# Released sizes, keyed by OpenAI's current names; the old names still work.
MODEL_SIZES = {
    "124M": dict(n_embd=768, n_head=12, n_layer=12),
    "355M": dict(n_embd=1024, n_head=16, n_layer=24),
    "774M": dict(n_embd=1280, n_head=20, n_layer=36),
    "1558M": dict(n_embd=1600, n_head=25, n_layer=48),
}
MODEL_ALIASES = {"117M": "124M", "345M": "355M"}
DEFAULT_MODEL = "355M"  # what a new run trains, and what a command without --model uses (when there is no run)


def canonical_model_name(name: str) -> str:
    """`'345M'` -> `'355M'`; raises `RapgenError` listing the valid names for anything else."""
    name = str(name)
    name = MODEL_ALIASES.get(name, name)
    if name not in MODEL_SIZES:
        valid = ", ".join(list(MODEL_SIZES) + [f"{a} (= {b})" for a, b in MODEL_ALIASES.items()])
        raise RapgenError(f"unknown model name {name!r}: choose one of {valid}, or give a model directory")
    return name


@dataclasses.dataclass(frozen=True)
class HParams:
    """The five numbers of `hparams.json`; the defaults are the 124M model."""

    n_vocab: int = 50257
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12

    def __post_init__(self):
        for field in dataclasses.fields(self):
            positive_int(f"hparams: {field.name}", getattr(self, field.name))
        if self.n_embd % self.n_head:
            raise RapgenError(f"hparams: n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")

    @classmethod
    def for_model(cls, name: str) -> "HParams":
        return cls(**MODEL_SIZES[canonical_model_name(name)])

    @classmethod
    def load(cls, path: str) -> "HParams":
        """Read `hparams.json` (a file, or the model directory holding it)."""
        if os.path.isdir(path):
            path = os.path.join(path, "hparams.json")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise RapgenError(f"{path} is missing: the model directory is incomplete") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise RapgenError(f"{path} is not valid JSON ({e})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - set(raw)
        if missing:
            raise RapgenError(f"{path} lacks {', '.join(sorted(missing))}")
        # Other keys (nshepperd's forks add some) are ignored.
        return cls(**{k: raw[k] for k in names})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def n_params(self) -> int:
        """Number of float32 weights; the checkpoint's data file is 4 bytes times this."""
        e = self.n_embd
        per_block = (
            2 * e  # ln_1
            + e * 3 * e
            + 3 * e  # attn/c_attn
            + e * e
            + e  # attn/c_proj
            + 2 * e  # ln_2
            + e * 4 * e
            + 4 * e  # mlp/c_fc
            + 4 * e * e
            + e  # mlp/c_proj
        )
        return self.n_vocab * e + self.n_ctx * e + self.n_layer * per_block + 2 * e


def variable_shapes(hp: HParams) -> "dict[str, tuple]":
    """Checkpoint name -> shape of every GPT-2 variable, in OpenAI's order."""
    E = hp.n_embd
    shapes = {"model/wte": (hp.n_vocab, E), "model/wpe": (hp.n_ctx, E)}
    for i in range(hp.n_layer):
        p = f"model/h{i}/"
        shapes.update(
            {
                p + "ln_1/g": (E,),
                p + "ln_1/b": (E,),
                p + "attn/c_attn/w": (1, E, 3 * E),
                p + "attn/c_attn/b": (3 * E,),
                p + "attn/c_proj/w": (1, E, E),
                p + "attn/c_proj/b": (E,),
                p + "ln_2/g": (E,),
                p + "ln_2/b": (E,),
                p + "mlp/c_fc/w": (1, E, 4 * E),
                p + "mlp/c_fc/b": (4 * E,),
                p + "mlp/c_proj/w": (1, 4 * E, E),
                p + "mlp/c_proj/b": (E,),
            }
        )
    shapes.update({"model/ln_f/g": (E,), "model/ln_f/b": (E,)})
    return shapes
