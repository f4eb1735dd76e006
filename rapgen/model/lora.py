"""LoRA: low-rank adapters on a frozen GPT-2, their run folders, and merging them into full weights.

Each targeted projection W [1, in, out] gets two float32 matrices, A [in, r] (small random)
and B [r, out] (zeros), and computes x W + (alpha / r) x A B; B = 0 makes a fresh run start
exactly at its base model. Only A and B are trained. A LoRA run folder stores them
(`lora/h0/attn/c_attn/A`, `.../B`, their optimizer slots, the step) and `lora.json`, which
names the base model (as given, the folder it was found in, its checkpoint and a SHA-256 of
that checkpoint's data file) and rank / alpha / targets. Loading such a folder finds the base,
checks the checksum and merges once, W + (alpha / r) A B, so sampling costs nothing extra.

>>> adapter_shapes(HParams(n_layer=1, n_embd=8, n_head=2, n_ctx=16), rank=2, targets="c_attn")  # doctest: +SKIP
{'h0/attn/c_attn': (8, 24)}
>>> merge("checkpoints/lora1", "models/lora1-merged")   # `rapgen merge RUN OUT`  # doctest: +SKIP
'models/lora1-merged'
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional, Tuple

import numpy as np

from rapgen.errors import RapgenError
from rapgen.model.hparams import MODEL_ALIASES, MODEL_SIZES, HParams, canonical_model_name

LORA_FILE = "lora.json"
PREFIX = "lora/"
DEFAULT_AUTO_RANK = 16  # what lora_rank="auto" uses when full fine-tuning does not fit


# -- shapes (no TensorFlow: rapgen.finetune.memory counts with these) -------------------------------


def adapter_shapes(hparams: HParams, rank: int, targets="c_attn,c_proj,c_fc") -> Dict[str, Tuple[int, int]]:
    """Projection name (`h0/mlp/c_fc`) -> (in, out) for every projection that gets an adapter.

    `c_proj` names both the attention's and the MLP's output projection, as in OpenAI's names.
    """
    from rapgen.finetune.config import lora_target_names

    E = hparams.n_embd
    wanted = lora_target_names(targets)
    layer = {"attn/c_attn": (E, 3 * E), "attn/c_proj": (E, E), "mlp/c_fc": (E, 4 * E), "mlp/c_proj": (4 * E, E)}
    return {f"h{i}/{name}": shape for i in range(hparams.n_layer) for name, shape in layer.items()
            if name.split("/")[1] in wanted}


def adapter_parameter_count(hparams: HParams, rank: int, targets="c_attn,c_proj,c_fc") -> int:
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
        import tensorflow as tf

        n_in, n_out = self.A.shape[0], self.B.shape[1]
        lead_shape = tf.shape(x)[:-1]
        h = tf.matmul(tf.reshape(x, [-1, n_in]), tf.cast(self.A, x.dtype))  # [N, r]
        y = tf.matmul(h, tf.cast(self.B, x.dtype)) * tf.cast(self.scale, x.dtype)  # [N, out]
        return tf.reshape(y, tf.concat([lead_shape, [n_out]], axis=0))  # [..., out]


def attach(model, rank: int, alpha: Optional[float] = None, targets="c_attn,c_proj,c_fc", seed: int = 0,
           values: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, "object"]:
    """Give `model` (a GPT2) adapters through its `adapters` hook; returns name -> tf.Variable.

    values: A and B by checkpoint name (a resumed run's); default `initial_adapters(seed)`.
    Call inside the strategy's scope when training distributed (the variables are mirrored).

    >>> variables = attach(model, rank=8)   # doctest: +SKIP
    """
    import tensorflow as tf

    values = initial_adapters(model.hparams, rank, targets, seed) if values is None else values
    scale = (rank if alpha is None else alpha) / rank
    made = {}
    for name in adapter_shapes(model.hparams, rank, targets):
        a_name, b_name = f"{PREFIX}{name}/A", f"{PREFIX}{name}/B"
        for key in (a_name, b_name):
            if key not in values:
                raise RapgenError(f"the LoRA checkpoint has no {key}: its lora.json does not match it (rank or targets)")
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
            name = key[len(PREFIX):-2]
            a, b = adapters[key], adapters[f"{PREFIX}{name}/B"]  # [in, r], [r, out]
            w = "model/" + name + "/w"
            # float64 product: the merged weights should differ from the unmerged path only by float32 rounding.
            delta = (a.astype(np.float64) @ b.astype(np.float64)) * scale  # [in, out]
            out[w] = (base[w].astype(np.float64) + delta[None]).astype(np.float32)  # [1, in, out]
    return out


# -- LoRA run folders ------------------------------------------------------------------


def is_lora_run(folder: str) -> bool:
    return os.path.isfile(os.path.join(str(folder), LORA_FILE))


def read_info(folder: str) -> dict:
    """lora.json of a LoRA run folder, checked."""
    path = os.path.join(folder, LORA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        int(info["rank"]), float(info["alpha"]), list(info["targets"]), str(info["base_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RapgenError(f"{path} is damaged ({e.__class__.__name__}): copy it again from the run's Drive mirror") from None
    return info


def checksum(path: str) -> str:
    """SHA-256 of a file, hex (read 8 MiB at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_info(base_model: str, base_prefix: str, rank: int, alpha: Optional[float], targets) -> dict:
    """What lora.json records for a new LoRA run on the checkpoint `base_prefix` of `base_model`."""
    from rapgen.model.checkpoint import DATA_SUFFIX
    from rapgen.finetune.config import lora_target_names

    return {
        "base_model": str(base_model),
        "base_dir": os.path.abspath(os.path.dirname(base_prefix)),
        "base_checkpoint": os.path.basename(base_prefix),
        "base_sha256": checksum(base_prefix + DATA_SUFFIX),
        "rank": int(rank),
        "alpha": float(rank if alpha is None else alpha),
        "targets": list(lora_target_names(targets)),
    }


def find_base(run_dir: str, info: dict, models_dir: str = "models") -> str:
    """The base checkpoint prefix of a LoRA run, its checksum verified; one-line errors otherwise.

    Looked for under models_dir (a released name), at the folder recorded, and at the name as a path.
    """
    from rapgen.model.checkpoint import DATA_SUFFIX

    given = str(info["base_model"])
    candidates = []
    if given in MODEL_SIZES or given in MODEL_ALIASES:
        candidates.append(os.path.join(models_dir, canonical_model_name(given)))
    candidates += [info.get("base_dir") or "", given]
    wrong = None
    for folder in dict.fromkeys(c for c in candidates if c and os.path.isdir(c)):
        prefix = os.path.join(folder, info.get("base_checkpoint") or "model.ckpt")
        if not os.path.isfile(prefix + DATA_SUFFIX):
            continue
        if checksum(prefix + DATA_SUFFIX) == info["base_sha256"]:
            return prefix
        wrong = prefix
    if wrong is not None:
        raise RapgenError(
            f"LoRA run {run_dir} was trained on other weights than {wrong} (its SHA-256 differs from the one "
            f"lora.json records): put the original base model {given} back there, or train the run again")
    fix = f"`rapgen download {given} --models_dir {models_dir}`" if given in MODEL_SIZES or given in MODEL_ALIASES \
        else f"copy the base model folder back to {info.get('base_dir') or given}"
    raise RapgenError(f"LoRA run {run_dir} needs its base model {given}, which is not in {models_dir}/ "
                      f"nor at {info.get('base_dir') or given}: {fix} (or give --models_dir)")


def ensure_base(run: str, models_dir: str = "models", quiet: bool = False) -> str:
    """The verified base checkpoint of LoRA run `run`, downloading a released base (a name such as
    355M) into models_dir first when neither models_dir nor the recorded folder holds it.

    For a new machine (a fresh Colab session) that has the run on Drive but not its base:
    `rapgen sample` itself never downloads, it names the `rapgen download` that fixes it.

    >>> ensure_base("/content/drive/MyDrive/rapgen/model/folders/run1")   # doctest: +SKIP
    'models/355M/model.ckpt'
    """
    from rapgen.model.folders import resolve_model_dir
    from rapgen.model.checkpoint import DATA_SUFFIX

    run = str(run)
    if not is_lora_run(run):
        raise RapgenError(f"{run} is not a LoRA run (it has no {LORA_FILE}): it needs no base model")
    info = read_info(run)
    given = str(info["base_model"])
    recorded = os.path.join(info.get("base_dir") or "", info.get("base_checkpoint") or "model.ckpt")
    if (given in MODEL_SIZES or given in MODEL_ALIASES) and not os.path.isfile(recorded + DATA_SUFFIX):
        resolve_model_dir(given, models_dir, download=True, quiet=quiet)
    return find_base(run, info, models_dir)


def read_adapters(prefix: str, flag: str = "--checkpoint") -> Dict[str, np.ndarray]:
    """The `lora/...` tensors of a LoRA checkpoint, float32; a damaged one is the one-line error
    that names an older complete checkpoint to use with `flag`, as for a full checkpoint."""
    import tensorflow as tf

    from rapgen.model.checkpoint import DATA_SUFFIX, damaged_checkpoint_error, verify_checkpoint

    verify_checkpoint(prefix, flag)
    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(PREFIX) and n.endswith(("/A", "/B"))]
    if not names:
        raise RapgenError(f"checkpoint {prefix} holds no LoRA adapters, yet its folder has a lora.json: "
                          f"it is damaged; copy the run again from its Drive mirror")
    adapters = {}
    for name in names:
        try:
            adapters[name] = reader.get_tensor(name).astype(np.float32)
        except (tf.errors.OpError, IndexError):
            # Right size, wrong bytes: each tensor's checksum is checked as it is read.
            problem = f"{prefix + DATA_SUFFIX} does not hold what its index records ({name} fails its checksum)"
            raise damaged_checkpoint_error(prefix, problem, flag) from None
    return adapters


def lora_run_weights(run_dir: str, prefix: str, hparams: HParams, models_dir: str = "models") -> Dict[str, np.ndarray]:
    """The merged float32 GPT-2 weights of a LoRA run's checkpoint `prefix` (base found and verified)."""
    from rapgen.model.folders import read_weights

    info = read_info(run_dir)
    base_prefix = find_base(run_dir, info, models_dir)
    base_hparams = HParams.load(os.path.dirname(base_prefix))
    if base_hparams != hparams:
        raise RapgenError(f"the base model {base_prefix} has another shape than LoRA run {run_dir}'s hparams.json: "
                          f"copy hparams.json from the base model into the run folder")
    adapters = read_adapters(prefix)
    return merged_weights(read_weights(base_prefix, hparams), adapters, info["alpha"] / info["rank"])


def merge(run: str, out: str, models_dir: str = "models", checkpoint: Optional[str] = None) -> str:
    """`rapgen merge RUN OUT`: the LoRA run folded into a full model folder in OpenAI's format.

    OUT gets model.ckpt (float32, OpenAI's variable names), a `checkpoint` index with a
    relative path, hparams.json and the vocabulary: gpt-2-simple and nshepperd/gpt-2 load it.
    Never overwrites a model. checkpoint: as for sampling (`rapgen.model.folders.choose_checkpoint`):
    the run's model-best when it has one, else the newest; "latest", "best" or a prefix.

    >>> merge("checkpoints/lora1", "models/lora1-merged")   # doctest: +SKIP
    'models/lora1-merged'
    """
    import sys

    from rapgen.model.folders import choice_note, choose_checkpoint, copy_model_files
    from rapgen.model.checkpoint import list_checkpoints, verify_checkpoint, write_checkpoint, write_checkpoint_index
    from rapgen.checks import check_checkpoint, check_output_folder

    run, out = str(run), check_output_folder(out, "OUT")
    if not os.path.isdir(run):
        raise RapgenError(f"RUN {run} is not a folder: give a LoRA run folder such as checkpoints/run1")
    if not is_lora_run(run):
        raise RapgenError(f"RUN {run} is not a LoRA run (it has no {LORA_FILE}): it is a full model folder already, "
                          f"every rapgen command and other GPT-2 tools take it as it is")
    if os.path.isdir(out) and (os.path.exists(os.path.join(out, "checkpoint")) or list_checkpoints(out)):
        raise RapgenError(f"OUT {out} already holds a model: choose another folder (nothing was overwritten)")
    if os.path.abspath(out) == os.path.abspath(run):
        raise RapgenError("OUT must be another folder than RUN")
    check_checkpoint(checkpoint)
    prefix = choose_checkpoint(run, checkpoint)
    verify_checkpoint(prefix)
    note = choice_note(run, checkpoint, prefix)
    if note:
        print(note, file=sys.stderr)  # stdout is OUT's path
    hparams = HParams.load(run)
    weights = lora_run_weights(run, prefix, hparams, models_dir)
    os.makedirs(out, exist_ok=True)
    copy_model_files(run, out, hparams)
    target = os.path.join(out, "model.ckpt")
    write_checkpoint(target, weights)
    write_checkpoint_index(out, [target])
    return out


# -- training ----------------------------------------------------------------------------


def training_base(cfg, source_dir: str, resume: Optional[str]):
    """(base checkpoint prefix, lora.json's record, adapter values or None) for a LoRA run of `cfg`.

    A resumed LoRA run keeps its recorded base (verified) and adapters; a new one records its base.

    >>> prefix, info, values = training_base(cfg, "models/355M", None)   # doctest: +SKIP
    """
    from rapgen.model.folders import check_model_dir
    from rapgen.finetune.config import DEFAULT_MODEL

    if resume is not None:
        run_dir = os.path.dirname(resume)
        if not is_lora_run(run_dir):
            raise RapgenError(f"--lora_rank {cfg.lora_rank} cannot continue {resume}, a full checkpoint: start a LoRA run "
                              f"from it with --model {run_dir} --restore_from fresh and a new --run_name")
        info = read_info(run_dir)
        # A new Colab session resuming from Drive: a released base is fetched, as a new run's is.
        adapters = read_adapters(resume, flag="--restore_from")  # before a base is fetched for it
        return ensure_base(run_dir, cfg.models_dir, quiet=cfg.quiet), info, adapters
    refuse_lora_source(source_dir)
    base_prefix = check_model_dir(source_dir)
    return base_prefix, base_info(cfg.model or DEFAULT_MODEL, base_prefix, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets), None


def refuse_lora_source(source_dir: str) -> None:
    """A new run does not start from a LoRA run folder (its checkpoint holds adapters, not a model)."""
    if is_lora_run(source_dir):
        raise RapgenError(f"--model {source_dir} is a LoRA run: fold it into a full model first with "
                          f"`rapgen merge {source_dir} OUT`, then train on --model OUT")


def recorded_rank(resume: Optional[str]) -> Optional[int]:
    """The LoRA rank a resumed checkpoint was trained with (0: full fine-tuning); None for a new run."""
    if resume is None:
        return None
    folder = os.path.dirname(resume)
    return int(read_info(folder)["rank"]) if is_lora_run(folder) else 0
