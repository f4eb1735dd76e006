"""Hugging Face transformers' side of bench/compare.py: GPT2LMHeadModel on PyTorch's CPU build,
in bench/.venvs/torch.

The model is built from a GPT2Config of the same shape (dropout 0, as rapgen and
gpt-2-simple have none; the default attention implementation) and loaded with the arrays
rapgen exported (bench/.work/weights/<size>.npz, OpenAI's names). OpenAI's c_attn, c_proj and
c_fc weights are [1, in, out]; transformers' Conv1D keeps [in, out], so only the leading 1
goes. lm_head is tied to wte.

Tasks (one per process, each prints one RESULT line):
  check   logits of the reference ids against rapgen's.
  peaks   float32 and bfloat16 2048 x 2048 matmul GFLOP/s in torch.
  train   Adam (lr 1e-4) steps at batch 1 x 1024: forward, cross-entropy of the next token,
          backward, optimizer step; float32, or the forward under
          torch.autocast("cpu", dtype=torch.bfloat16) for mixed precision. Each step is timed
          with perf_counter (CPU execution is synchronous); the first step and `warmup` more
          are dropped.
  sample  model.generate(do_sample=True, top_k=40, max_new_tokens=L, min_new_tokens=L,
          use_cache=True) at a batch size; a first call, then warm calls.
"""

from __future__ import annotations

import os
import sys

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]

import common  # noqa: E402
from common import Timer  # noqa: E402


def versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}


def load(size: str):
    """GPT2LMHeadModel with the exported weights; fails if any array is left unset."""
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    hp = common.SIZES[size]
    config = GPT2Config(
        vocab_size=hp["n_vocab"],
        n_positions=hp["n_ctx"],
        n_embd=hp["n_embd"],
        n_layer=hp["n_layer"],
        n_head=hp["n_head"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        activation_function="gelu_new",
        tie_word_embeddings=True,
        bos_token_id=common.EOT_ID,
        eos_token_id=common.EOT_ID,
    )
    model = GPT2LMHeadModel(config)
    arrays = np.load(common.weights_npz(size))
    renames = {"wte": "wte.weight", "wpe": "wpe.weight", "ln_f/g": "ln_f.weight", "ln_f/b": "ln_f.bias"}
    state = {}
    for name in arrays.files:
        short = name[len("model/") :]
        if short in renames:
            key = renames[short]
        else:  # h3/attn/c_attn/w -> h.3.attn.c_attn.weight; ln_1/g -> ln_1.weight
            block, *rest = short.split("/")
            leaf = {"w": "weight", "g": "weight", "b": "bias"}[rest[-1]]
            key = ".".join(["h", block[1:], *rest[:-1], leaf])
        value = arrays[name]
        if value.ndim == 3:
            value = value[0]  # [1, in, out] -> [in, out]
        state["transformer." + key] = torch.from_numpy(np.ascontiguousarray(value))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to transformer.wte.weight
    if missing or unexpected:
        raise RuntimeError(f"weights did not map: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise RuntimeError("lm_head is not tied to wte")
    return model


def check(spec: dict) -> dict:
    import numpy as np
    import torch

    ref = np.load(common.reference_npz(spec["size"]))
    model = load(spec["size"]).eval()
    with torch.inference_mode():
        got = model(input_ids=torch.from_numpy(ref["ids"]).long()).logits.numpy()
    return {
        "max_abs_diff": float(np.max(np.abs(got - ref["logits"]))),
        "logit_scale": float(np.max(np.abs(ref["logits"]))),
        "attn_implementation": model.config._attn_implementation,
        **versions(),
    }


def peaks(spec: dict) -> dict:
    """Float32 and bfloat16 matmul GFLOP/s in torch (2048 x 2048 unless bfloat16 is too slow for it)."""
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):

        def make_pair(n, dtype=dtype):
            a = torch.randn(n, n).to(dtype)
            return a, a.t().contiguous()

        rate, n = common.matmul_gflops(make_pair, torch.matmul)
        out[str(dtype).split(".")[-1]] = {"gflops": rate, "n": n}
    return {"peaks": out, **versions()}


def train(spec: dict) -> dict:
    import contextlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    with Timer() as setup:
        model = load(spec["size"]).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        tokens = np.load(common.TOKENS)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if spec["dtype"] == "bfloat16" else contextlib.nullcontext()
    n_vocab = common.SIZES[spec["size"]]["n_vocab"]
    times, losses = [], []
    for i in range(1 + spec["warmup"] + spec["steps"]):
        start = (i * 997) % (len(tokens) - common.LENGTH - 1)
        window = torch.from_numpy(tokens[start : start + common.LENGTH + 1].astype(np.int64))[None]  # [1, T+1]
        with Timer() as t:
            opt.zero_grad(set_to_none=True)
            with amp:
                logits = model(input_ids=window[:, :-1]).logits  # [1, T, V]
            loss = F.cross_entropy(logits.float().reshape(-1, n_vocab), window[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
        times.append(t.s)
        losses.append(float(loss))
    if not np.isfinite(losses[-1]):
        raise RuntimeError(f"loss {losses[-1]}")
    return {
        "setup_s": setup.s,
        "first_step_s": times[0],
        "loss_first": losses[0],
        "loss_last": losses[-1],
        **common.summarize_steps(times[1 + spec["warmup"] :], common.BATCH * common.LENGTH),
        **versions(),
    }


def sample(spec: dict) -> dict:
    import torch

    with Timer() as load_t:
        model = load(spec["size"]).eval()
    ref_ids = common.prompt_ids()  # <|endoftext|><<Lil Tofu, as rapgen encodes it
    batch, length = spec["batch"], spec["length"]
    ids = torch.tensor([ref_ids] * batch, dtype=torch.long)

    def call(seed):
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=40,
                temperature=1.0,
                top_p=1.0,
                max_new_tokens=length,
                min_new_tokens=length,
                use_cache=True,
                pad_token_id=common.EOT_ID,
            )
        assert out.shape == (batch, len(ref_ids) + length), out.shape

    with Timer() as first:
        call(1)
    warm = []
    for i in range(spec["warm_runs"]):
        with Timer() as t:
            call(2 + i)
        warm.append(t.s)
    return {
        "load_s": load_t.s,
        "first_s": first.s,
        "warm_s": warm,
        "best_s": min(warm),
        "tokens_per_s": batch * length / min(warm),
        **versions(),
    }


if __name__ == "__main__":
    common.run_task({"check": check, "peaks": peaks, "train": train, "sample": sample})
