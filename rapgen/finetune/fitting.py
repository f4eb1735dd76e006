"""Which fine-tuning settings fit a memory budget: the fastest candidate whose estimated peak fits.

`choose_settings` walks CANDIDATES (then LoRA's, where allowed) fastest first and returns the
first whose `rapgen.finetune.memory.estimate_memory` fits the budget, or, when none does, the smallest
with the longest window that would fit. `rapgen train` takes its "auto" settings from here
(rapgen.finetune.config.choose_memory_settings), `rapgen plan --memory_gb` prints them.

>>> from rapgen.model.hparams import HParams
>>> choose_settings(HParams.for_model("774M"), 15 * GIB, model_name="774M")["reason"]
'774M on 15.0 GiB: adafactor + recompute, est. peak 8.7 GiB'
"""

from __future__ import annotations

from typing import Optional

from rapgen.model.hparams import HParams
from rapgen.finetune.memory import GIB, check_optimizer, estimate_memory
from rapgen.checks import positive_number


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


def choose_settings(hparams: HParams, memory_bytes: float, *, batch_size: int = 1, sequence_length: Optional[int] = None,
                    mixed_precision_dtype: str = "float32", accumulate_gradients: int = 1, margin: float = 0.1,
                    model_name: Optional[str] = None, optimizer: Optional[str] = None, recompute: Optional[bool] = None,
                    only_train_transformer_layers: Optional[bool] = None, lora_rank=0,
                    lora_targets="c_attn,c_proj,c_fc", auto_rank: int = 16) -> dict:
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
    common = dict(batch_size=batch_size, compute_dtype=mixed_precision_dtype, accumulate_gradients=accumulate_gradients,
                  lora_targets=lora_targets)
    pins = {k: v for k, v in (("optimizer", None if optimizer is None else check_optimizer(optimizer)),
                              ("recompute", recompute), ("only_train_transformer_layers", only_train_transformer_layers))
            if v is not None}
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
            return {**settings, "fits": True, "estimate": est, "max_sequence_length": T,
                    "reason": f"{where}: {describe(settings)}, est. peak {est['total'] / GIB:.1f} GiB"}

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
    return {**smallest, "fits": False, "estimate": est, "max_sequence_length": longest,
            "reason": f"{where}: nothing fits at {T} tokens x batch {batch_size}: even {describe(smallest)} needs "
                      f"est. {est['total'] / GIB:.1f} GiB, over {budget / GIB:.1f} GiB ({margin:.0%} kept free); {hint}"}
