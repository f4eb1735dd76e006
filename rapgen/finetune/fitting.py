"""Which fine-tuning settings fit a memory budget, a run's "auto" settings, and `rapgen plan`.

`choose_settings` walks CANDIDATES (then LoRA's, where allowed) fastest first and returns the
first whose `rapgen.finetune.memory.estimate_memory` fits the budget, or, when none does, the
smallest with the longest window that would fit. `choose_memory_settings` fills a run's "auto"
settings from it (a resumed run keeps what it recorded); `plan` is `rapgen plan`, which prints
the estimate and what fits. No TensorFlow here: `rapgen plan` never imports it.

>>> from rapgen.model.hparams import HParams
>>> choose_settings(HParams.for_model("774M"), 15 * GIB, model_name="774M")["reason"]
'774M on 15.0 GiB: adafactor + recompute, est. peak 8.7 GiB'

    rapgen plan --model 774M --memory_gb 15
"""

from __future__ import annotations

import os
from typing import Optional, Union

from rapgen.checks import between, positive_number, true_false, zero_or_positive_int
from rapgen.devices import compute_dtype, device_memory_gib
from rapgen.errors import RapgenError
from rapgen.finetune.config import DEFAULT_LORA_TARGETS, TrainConfig, say
from rapgen.finetune.lora_start import recorded_rank
from rapgen.finetune.memory import GIB, check_optimizer, estimate_memory
from rapgen.model.hparams import DEFAULT_MODEL, HParams, canonical_model_name
from rapgen.model.lora import DEFAULT_AUTO_RANK, LORA_TARGETS, lora_target_names
from rapgen.model.lora_run import read_info

# The order to try: fastest first. Recompute costs about a third more compute; Adafactor
# about the same speed as Adam but a different optimizer; freezing the embeddings changes
# what is learned, so it comes last.
CANDIDATES = (
    dict(optimizer="adam", recompute=False, only_train_transformer_layers=False),
    dict(optimizer="adam", recompute=True, only_train_transformer_layers=False),
    dict(optimizer="adafactor", recompute=True, only_train_transformer_layers=False),
    dict(optimizer="adafactor", recompute=True, only_train_transformer_layers=True),
)
# LoRA (rapgen.model.lora) after all of those: it trains far fewer numbers, so it learns less than
# full fine-tuning; its memory is mostly the frozen base and the activations.
LORA_CANDIDATES = (
    dict(optimizer="adam", recompute=False, only_train_transformer_layers=False),
    dict(optimizer="adam", recompute=True, only_train_transformer_layers=False),
)


def describe(settings: dict) -> str:
    """'adafactor + recompute + frozen embeddings'; 'LoRA rank 16 + adam' for a LoRA run."""
    parts = [f"LoRA rank {settings['lora_rank']}"] if settings.get("lora_rank") else []
    parts.append(settings["optimizer"])
    if settings.get("recompute"):
        parts.append("recompute")
    if settings.get("only_train_transformer_layers"):
        parts.append("frozen embeddings")
    return " + ".join(parts)


def choose_settings(
    hparams: HParams,
    memory_bytes: float,
    *,
    batch_size: int = 1,
    sequence_length: Optional[int] = None,
    mixed_precision_dtype: str = "float32",
    accumulate_gradients: int = 1,
    margin: float = 0.1,
    model_name: Optional[str] = None,
    optimizer: Optional[str] = None,
    recompute: Optional[bool] = None,
    only_train_transformer_layers: Optional[bool] = None,
    lora_rank=0,
    lora_targets: tuple = LORA_TARGETS,
    auto_rank: int = DEFAULT_AUTO_RANK,
) -> dict:
    """The fastest of CANDIDATES whose estimated peak fits (1 - margin) x memory_bytes.

    optimizer, recompute, only_train_transformer_layers: None lets the chooser decide; a
    value pins that setting (the user's override) and the others are chosen around it.
    lora_rank: 0 full fine-tuning only, R LoRA of rank R only, "auto" full fine-tuning where
    it fits, else LoRA of rank auto_rank.

    Returns {"optimizer", "recompute", "only_train_transformer_layers", "lora_rank", "fits",
    "estimate", "reason", "max_sequence_length"}. When nothing fits, fits is False, the settings are the
    smallest candidate's, and max_sequence_length is the longest window that candidate fits
    (None when not even 2 tokens do); reason says so in one line.
    """
    positive_number("the memory budget", memory_bytes, unit="bytes")
    hp = hparams
    T = hp.n_ctx if sequence_length is None else sequence_length
    budget = memory_bytes * (1 - margin)
    name = model_name or f"n_layer {hp.n_layer}, n_embd {hp.n_embd}"
    where = f"{name} on {memory_bytes / GIB:.1f} GiB"
    common = dict(
        batch_size=batch_size,
        compute_dtype=mixed_precision_dtype,
        accumulate_gradients=accumulate_gradients,
        lora_targets=lora_targets,
    )
    pins = {
        k: v
        for k, v in (
            ("optimizer", None if optimizer is None else check_optimizer(optimizer)),
            ("recompute", recompute),
            ("only_train_transformer_layers", only_train_transformer_layers),
        )
        if v is not None
    }
    full = [{**s, "lora_rank": 0} for s in CANDIDATES]
    if lora_rank == "auto":
        ordered = full + [{**s, "lora_rank": auto_rank} for s in LORA_CANDIDATES]
    elif lora_rank:
        ordered = [{**s, "lora_rank": int(lora_rank)} for s in LORA_CANDIDATES]
    else:
        ordered = full
    candidates = []
    for settings in ordered:
        settings = {**settings, **pins}
        if settings not in candidates:
            candidates.append(settings)

    for settings in candidates:
        est = estimate_memory(hp, sequence_length=T, **settings, **common)
        if est["total"] <= budget:
            return {
                **settings,
                "fits": True,
                "estimate": est,
                "max_sequence_length": T,
                "reason": f"{where}: {describe(settings)}, est. peak {est['total'] / GIB:.1f} GiB",
            }

    # Nothing fits at this length: the longest window the smallest configuration fits.
    smallest = candidates[-1]
    est = estimate_memory(hp, sequence_length=T, **smallest, **common)
    longest = None
    lo, hi = 2, T  # the estimate grows with the length: bisect
    if estimate_memory(hp, sequence_length=lo, **smallest, **common)["total"] <= budget:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if estimate_memory(hp, sequence_length=mid, **smallest, **common)["total"] <= budget:
                lo = mid
            else:
                hi = mid - 1
        longest = lo
    if longest:
        hint = f"--sequence_length {longest} would fit" + (" (or a smaller --batch_size)" if batch_size > 1 else "")
    else:
        # What does not depend on the window: weights, gradients, slots, the update's copy.
        floor = estimate_memory(hp, sequence_length=2, **smallest, **common)["total"]
        hint = f"no sequence_length fits: weights, gradients and the update alone need est. {floor / GIB:.1f} GiB"
    return {
        **smallest,
        "fits": False,
        "estimate": est,
        "max_sequence_length": longest,
        "reason": f"{where}: nothing fits at {T} tokens x batch {batch_size}: even {describe(smallest)} needs "
        f"est. {est['total'] / GIB:.1f} GiB, over {budget / GIB:.1f} GiB ({margin:.0%} kept free); {hint}",
    }


# -- a run's "auto" settings ----------------------------------------------------------

MEMORY_FIELDS = ("optimizer", "recompute", "only_train_transformer_layers")


def choose_memory_settings(
    cfg: TrainConfig,
    hparams: HParams,
    length: int,
    dtype: str,
    replicas: int,
    recorded: dict,
    resume: Optional[str] = None,
) -> None:
    """Replace "auto" in optimizer / recompute / only_train_transformer_layers / lora_rank, in place.

    A resumed run keeps what its train.json recorded (`recorded`, rapgen.finetune.run.Run.recorded_settings),
    and LoRA or not as its checkpoint was trained (`resume`, the prefix it continues from; a rank
    other than the recorded one is refused); otherwise the fastest choice whose estimated peak
    fits `memory_gb` (or the device) is taken and said: full fine-tuning where it fits, else LoRA.

    >>> choose_memory_settings(cfg, hparams, 1024, "float32", 1, run.recorded_settings())  # doctest: +SKIP
    """
    recorded_lora = recorded_rank(resume)
    if recorded_lora is not None:
        if cfg.lora_rank == "auto":
            cfg.lora_rank = recorded_lora
        elif cfg.lora_rank != recorded_lora:
            what = f"LoRA rank {recorded_lora}" if recorded_lora else "full fine-tuning (no LoRA)"
            raise RapgenError(
                f"{os.path.dirname(resume)} was trained with {what}: continue it with --lora_rank "
                f"{recorded_lora} (or auto), or start a new --run_name for --lora_rank {cfg.lora_rank}"
            )
        if recorded_lora:
            # The adapters' scale and targets are part of the state: a resumed run keeps them, and
            # one asked for other values (not the defaults) is refused as another rank is.
            info = read_info(os.path.dirname(resume))
            alpha, targets = float(info["alpha"]), tuple(info["targets"])
            if cfg.lora_alpha is not None and float(cfg.lora_alpha) != alpha:
                raise RapgenError(
                    f"{os.path.dirname(resume)} was trained with --lora_alpha {alpha:g}: continue it "
                    f"without --lora_alpha, or start a new --run_name for --lora_alpha {cfg.lora_alpha:g}"
                )
            if cfg.lora_targets not in (targets, LORA_TARGETS):
                raise RapgenError(
                    f"{os.path.dirname(resume)} was trained with --lora_targets {','.join(targets)}: "
                    f"continue it without --lora_targets, or start a new --run_name for these targets"
                )
            cfg.lora_alpha, cfg.lora_targets = alpha, targets
    auto = [f for f in MEMORY_FIELDS if getattr(cfg, f) == "auto"]
    if not auto and cfg.lora_rank != "auto":
        return
    # A resumed run keeps what it started with: another optimizer would drop its state.
    for name in list(auto):
        if recorded.get(name, "auto") != "auto":
            setattr(cfg, name, recorded[name])
            auto.remove(name)
    if not auto and cfg.lora_rank != "auto":
        return
    budget = cfg.memory_gb or device_memory_gib()
    if budget is None:
        for name, value in zip(MEMORY_FIELDS, ("adam", False, False)):
            if name in auto:
                setattr(cfg, name, value)
        if cfg.lora_rank == "auto":
            cfg.lora_rank = 0
        say(
            cfg,
            "memory: the device's memory is unknown, so adam without recompute, no LoRA (--memory_gb GiB lets rapgen choose)",
        )
        return
    pinned = {f: getattr(cfg, f) for f in MEMORY_FIELDS if f not in auto}
    choice = choose_settings(
        hparams,
        budget * GIB,
        batch_size=cfg.batch_size // replicas,
        sequence_length=length,
        mixed_precision_dtype=dtype,
        accumulate_gradients=cfg.accumulate_gradients,
        model_name=str(cfg.model or DEFAULT_MODEL),
        optimizer=pinned.get("optimizer"),
        recompute=pinned.get("recompute"),
        only_train_transformer_layers=pinned.get("only_train_transformer_layers"),
        lora_rank=cfg.lora_rank,
        lora_targets=cfg.lora_targets,
        auto_rank=DEFAULT_AUTO_RANK,
    )
    for name in auto:
        setattr(cfg, name, choice[name])
    cfg.lora_rank = choice["lora_rank"]
    say(
        cfg,
        f"memory: {choice['reason']} (--optimizer, --recompute, --only_train_transformer_layers, --lora_rank and "
        f"--memory_gb override it; `rapgen plan` shows the estimate)",
    )
    if not choice["fits"]:
        say(cfg, "warning: this may run out of memory")


# -- rapgen plan ----------------------------------------------------------------------


def _hparams_for(model, models_dir) -> tuple:
    """(HParams, display name) for a model name or directory; no weights needed."""
    model = str(model)
    if os.path.isdir(model):
        return HParams.load(model), model.rstrip("/")
    name = canonical_model_name(model)  # RapgenError listing the valid names
    local = os.path.join(models_dir, name)
    if os.path.exists(os.path.join(local, "hparams.json")):
        return HParams.load(local), name
    return HParams.for_model(name), name


def format_estimate(est: dict) -> str:
    """The estimate as a small table, GiB."""
    forward, update = est["peak_at"] == "forward", est["peak_at"] == "update"
    rows = [
        ("weights (frozen base + adapters)" if est.get("lora_rank") else "weights (float32)", est["weights"], True),
        ("gradients (accumulated)", est["gradients"], True),
        ("optimizer slots", est["optimizer"], True),
        ("activations kept for backward", est["activations"], forward),
        ("logits / loss", est["logits"], forward),
        ("update (wte gradients, temporaries)", est["update"], update),
        ("workspace", est["workspace"], True),
        ("runtime (CUDA context, reserve)", est["runtime"], True),
    ]
    lines = [
        f"  {label:<38} {value / GIB:>7.2f} GiB" + ("" if counted else "   (not at the peak)")
        for label, value, counted in rows
    ]
    lines.append(f"  {'estimated peak':<38} {est['total'] / GIB:>7.2f} GiB   (at the {est['peak_at']} step)")
    return "\n".join(lines)


def plan(
    model: str = DEFAULT_MODEL,
    models_dir: str = "models",
    batch_size: int = 1,
    sequence_length: Optional[int] = None,
    optimizer: str = "adam",
    recompute: bool = False,
    mixed_precision: str = "off",
    only_train_transformer_layers: bool = False,
    accumulate_gradients: int = 1,
    memory_gb: Optional[float] = None,
    margin: float = 0.1,
    lora_rank: Union[int, str] = 0,
    lora_targets: str = DEFAULT_LORA_TARGETS,
) -> None:
    """Print the estimated peak memory of fine-tuning, and with --memory_gb what fits.

    --model: 124M, 355M, 774M, 1558M (no download needed) or a model directory.
    --memory_gb: the GPU's memory in GiB as nvidia-smi shows it (15 for a T4, 16 for a
    V100 16 GB, 40 or 80 for an A100); prints the settings `rapgen train` should use.
    --lora_rank R: a LoRA run of rank R (frozen base, adapters trained); auto: with
    --memory_gb, full fine-tuning where it fits, else LoRA (as `rapgen train` decides).

    >>> plan(model="1558M", lora_rank=16, memory_gb=15)   # doctest: +SKIP

    >>> plan(model="774M", memory_gb=15)   # doctest: +SKIP
    """
    hp, name = _hparams_for(model, models_dir)
    dtype = compute_dtype(mixed_precision)  # what `rapgen train` would use on this machine
    recompute = true_false("--recompute", recompute)
    frozen = true_false("--only_train_transformer_layers", only_train_transformer_layers)
    if sequence_length is not None:
        between(
            "--sequence_length", sequence_length, 2, hp.n_ctx, integer=True, hi_label=f"the model's n_ctx ({hp.n_ctx})"
        )
    if memory_gb is not None:
        positive_number("--memory_gb", memory_gb, unit="GiB")
    between("--margin", margin, 0, 1, hi_included=False)
    if lora_rank != "auto":
        zero_or_positive_int("--lora_rank", lora_rank)
    lora_targets = lora_target_names(lora_targets)
    T = sequence_length or hp.n_ctx
    # The table shows one configuration: auto's LoRA rank when asked for LoRA "auto".
    shown_rank = DEFAULT_AUTO_RANK if lora_rank == "auto" else lora_rank
    settings = dict(
        optimizer=check_optimizer(optimizer),
        recompute=recompute,
        only_train_transformer_layers=frozen,
        lora_rank=shown_rank,
    )
    est = estimate_memory(
        hp,
        batch_size=batch_size,
        sequence_length=T,
        compute_dtype=dtype,
        accumulate_gradients=accumulate_gradients,
        lora_targets=lora_targets,
        **settings,
    )
    print(
        f"{name}: {est['parameters'] / 1e6:.1f}M parameters ({est['trained_parameters'] / 1e6:.1f}M trained), "
        f"batch {batch_size} x {T} tokens, {describe(settings)}, {dtype} compute"
    )
    print(format_estimate(est))
    if memory_gb is not None:
        # The same budget and shape for both questions below; only the LoRA rank differs.
        budget = dict(
            batch_size=batch_size,
            sequence_length=T,
            mixed_precision_dtype=dtype,
            accumulate_gradients=accumulate_gradients,
            margin=margin,
            model_name=name,
            lora_targets=lora_targets,
        )
        choice = choose_settings(hp, memory_gb * GIB, lora_rank=lora_rank, auto_rank=DEFAULT_AUTO_RANK, **budget)
        print(choice["reason"])
        if not choice["fits"] and lora_rank == 0:
            # `rapgen train`'s default (--lora_rank auto) goes on to LoRA here: say whether it fits.
            lora = choose_settings(hp, memory_gb * GIB, lora_rank=DEFAULT_AUTO_RANK, **budget)
            if lora["fits"]:
                print(f"with LoRA (what `rapgen train` picks by default here): {lora['reason'].partition(': ')[2]}")
                choice = lora
        if choice["fits"]:
            flags = (
                f"--optimizer {choice['optimizer']}"
                + (" --recompute True" if choice["recompute"] else "")
                + (" --only_train_transformer_layers True" if choice["only_train_transformer_layers"] else "")
                + (f" --lora_rank {choice['lora_rank']}" if choice["lora_rank"] else "")
            )
            print(f"  rapgen train ... {flags}")
