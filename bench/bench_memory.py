"""Peak memory of one training step, measured, against `rapgen.finetune.memory.estimate_memory`.

Each configuration (model shape, optimizer, recompute, sequence length; batch 1, float32)
runs in its own child process, which sets the model up the way `rapgen.finetune.loop` does
(weights read from a `rapgen init` checkpoint, `GPT2`, the numpy copy dropped,
`Trainer`) and runs two training steps:

- the first traces and compiles the step function (host-side work a GPU run does too, but
  whose memory is not GPU memory), then the kernel's peak-RSS mark is reset
  (`/proc/self/clear_refs`);
- the second is the measured step: its peak resident memory (`VmHWM`) is what one
  steady-state training step needs.

What is compared: the estimate is of the memory TensorFlow's tensors need (weights,
gradients, optimizer slots, activations, logits, temporaries) plus a fixed runtime term for
the accelerator's own context. On the CPU that runtime is TensorFlow's libraries, already
resident before the model exists, so the measured figure is the step's peak minus a
baseline taken in the same child after importing TensorFlow and loading the data, and it is
compared with the estimate's total minus its runtime term. Both are printed, and so is the
whole-process peak (`ru_maxrss`, which includes set-up: while the model is built its
checkpoint values and its variables briefly coexist, a CPU-only cost).

    python bench/bench_memory.py                                 # the default set, below
    python bench/bench_memory.py --configs tiny:adam:1024,124M:adafactor+recompute:1024
    python bench/bench_memory.py --configs 355M:adam+lora16:1024 --checkpoint_sizes 355M

A configuration is SIZE:OPTIMIZER[+recompute][+loraR]:SEQUENCE_LENGTH; `+lora16` trains LoRA
adapters of rank 16 on the frozen base, as `rapgen train --lora_rank 16` (rapgen.model.lora).
`--checkpoint_sizes SIZE` writes, for a model of that shape, the checkpoint a LoRA run saves
(rank 16 adapters, their Adam slots, the step) and the one full fine-tuning with Adam saves
(weights and slots), and prints their sizes on disk. Models are created with
random weights in a temporary folder (355M takes 1.4 GB of disk, 774M 3.1 GB) and deleted
at the end. The vocabulary comes from $RAPGEN_GPT2_DIR or ../shared/gpt2 beside the project.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_train import invented_lyrics, machine, run_as_child, vocab_dir  # noqa: E402

SIZES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=2, n_ctx=1024),
    "124M": dict(n_layer=12, n_embd=768, n_head=12, n_ctx=1024),
    "355M": dict(n_layer=24, n_embd=1024, n_head=16, n_ctx=1024),
    "774M": dict(n_layer=36, n_embd=1280, n_head=20, n_ctx=1024),
}
# tiny and 124M calibrate; 355M and 774M are the check. 774M with Adam at 1024 tokens needs
# more than this 24 GiB machine has (est. 24 GiB), so it runs at 256 tokens, and 774M with
# Adafactor + recompute at 512 to keep the run short.
DEFAULT_CONFIGS = [
    "tiny:adam:1024",
    "tiny:adafactor+recompute:1024",
    "124M:adam:1024",
    "124M:adafactor+recompute:1024",
    "355M:adam:1024",
    "355M:adafactor+recompute:1024",
    "774M:adafactor+recompute:512",
    "774M:adam:256",
]
BATCH = 1


def parse_config(text: str) -> dict:
    try:
        size, options, length = text.split(":")
        optimizer, *extras = options.split("+")
        recompute = "recompute" in extras
        ranks = [int(e[len("lora") :]) for e in extras if e.startswith("lora")]
        if size not in SIZES or optimizer not in ("adam", "adafactor", "sgd") or len(extras) != recompute + len(ranks):
            raise ValueError
        return {
            "size": size,
            "optimizer": optimizer,
            "recompute": recompute,
            "sequence_length": int(length),
            "lora_rank": ranks[0] if ranks else 0,
        }
    except ValueError:
        raise SystemExit(
            f"bench: bad configuration {text!r}: SIZE:OPTIMIZER[+recompute][+loraR]:LENGTH, "
            f"SIZE one of {', '.join(SIZES)}"
        ) from None


def memory_status() -> dict:
    """Current and peak resident memory of this process, in bytes (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> None:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


# -- the child: one configuration -----------------------------------------------------


def child(spec: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from rapgen.data.dataset import load_dataset, training_batch
    from rapgen.devices import compute_dtype
    from rapgen.finetune.config import TrainConfig
    from rapgen.finetune.step import Trainer
    from rapgen.model.encoder import load_encoder
    from rapgen.model.folders import check_model_dir, read_weights
    from rapgen.model.gpt2 import GPT2
    from rapgen.model.hparams import HParams

    model_dir, length = spec["model_dir"], spec["sequence_length"]
    cfg = TrainConfig(
        dataset=spec["dataset"],
        model=model_dir,
        steps=2,
        batch_size=BATCH,
        sequence_length=length,
        optimizer=spec["optimizer"],
        recompute=spec["recompute"],
        mixed_precision="off",
        save_every=0,
        sample_every=0,
        val_every=0,
        val_fraction=0.0,
        quiet=True,
    )
    cfg.check()
    hparams = HParams.load(model_dir)
    encoder = load_encoder(model_dir)
    data = load_dataset(cfg.dataset, encoder, cfg.val_fraction, None, cfg.encoding, quiet=True)
    tf.constant(0.0) + 1.0  # start the runtime (thread pools, device) before the baseline
    baseline = memory_status()["VmRSS"]

    # As rapgen.finetune.loop._run builds a fresh run.
    weights = read_weights(check_model_dir(model_dir), hparams)
    dtype = compute_dtype(cfg.mixed_precision)
    lora_rank = spec.get("lora_rank", 0)
    model = GPT2(hparams, compute_dtype=dtype, weights=weights, variable_dtype=dtype if lora_rank else "float32")
    del weights
    if lora_rank:
        from rapgen.model.lora import attach

        train_names = list(attach(model, lora_rank))
    else:
        train_names = [
            n for n in model.variables_by_name if not cfg.only_train_transformer_layers or n.startswith("model/h")
        ]
    trainer = Trainer(cfg, model, train_names)
    after_setup = memory_status()["VmRSS"]

    def step():
        batch = training_batch(data.train, trainer.step, cfg.batch_size, length, cfg.seed)[None]  # [1, B, T+1]
        t0 = time.perf_counter()
        loss = float(
            trainer.train_step(
                tf.constant(batch),
                tf.constant(trainer.learning_rate(trainer.step), tf.float32),
                tf.constant(trainer.step, tf.int64),
            )
        )
        if not np.isfinite(loss):
            raise SystemExit(f"bench: loss {loss} at step {trainer.step}")
        trainer.step += 1
        return time.perf_counter() - t0

    reset_peak()
    first_s = step()  # traces and compiles
    first_peak = memory_status()["VmHWM"]
    reset_peak()
    before_step = memory_status()["VmRSS"]
    timeline = []
    if spec.get("trace"):
        # RSS every 10 ms during the measured step, to see where in the step the peak falls.
        import threading

        done = threading.Event()

        def sample():
            page = os.sysconf("SC_PAGE_SIZE")
            t0 = time.perf_counter()
            while not done.is_set():
                with open("/proc/self/statm") as f:
                    timeline.append((time.perf_counter() - t0, int(f.read().split()[1]) * page))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    step_s = step()
    if spec.get("trace"):
        done.set()
        sampler.join()
        timeline = [(round(t, 2), rss - baseline) for t, rss in timeline]
    return {
        "tf": tf.__version__,
        "baseline": baseline,
        "after_setup": after_setup,
        "first_peak": first_peak,
        "before_step": before_step,
        "step_peak": memory_status()["VmHWM"],
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "first_step_s": first_s,
        "step_s": step_s,
        "timeline": timeline,
    }


def checkpoint_sizes(spec: dict) -> dict:
    """Bytes on disk of the checkpoint a LoRA run (rank 16, Adam) saves and of a full Adam run's, same model."""
    import tensorflow as tf

    from rapgen.finetune.config import TrainConfig
    from rapgen.finetune.step import Trainer
    from rapgen.model.checkpoint import DATA_SUFFIX, write_checkpoint
    from rapgen.model.folders import check_model_dir, read_weights
    from rapgen.model.gpt2 import GPT2
    from rapgen.model.hparams import HParams
    from rapgen.model.lora import attach

    model_dir, out = spec["model_dir"], spec["out"]
    hparams = HParams.load(model_dir)
    cfg = TrainConfig(dataset="unused", optimizer="adam", recompute=False, mixed_precision="off", quiet=True)
    sizes = {}
    for kind in ("lora16", "full"):
        model = GPT2(hparams, weights=read_weights(check_model_dir(model_dir), hparams))
        names = list(attach(model, 16)) if kind == "lora16" else list(model.variables_by_name)
        trainer = Trainer(cfg, model, names)
        prefix = os.path.join(out, kind)
        write_checkpoint(prefix, trainer.state_tensors())
        sizes[kind] = os.path.getsize(prefix + DATA_SUFFIX) + os.path.getsize(prefix + ".index")
        sizes[kind + "_tensors"] = len(tf.train.list_variables(prefix))
        for suffix in (DATA_SUFFIX, ".index"):
            os.unlink(prefix + suffix)
        del model, trainer
    return sizes


# -- the parent -----------------------------------------------------------------------


def run_child(args: list, env: dict, must_succeed: bool = True) -> dict:
    """The child's RESULT; a configuration that fails (killed for memory: status -9) gives None."""
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True)
    results = [line[len("RESULT ") :] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        sys.stderr.write((proc.stdout + proc.stderr)[-3000:])
        if must_succeed:
            raise SystemExit(f"bench: child {' '.join(args)[:200]} failed with status {proc.returncode}")
        print(f"[{' '.join(args)[:200]}: failed with status {proc.returncode}]", flush=True)
        return None
    return json.loads(results[-1])


def gb(n: float) -> str:
    """GiB, as rapgen.finetune.memory counts."""
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated SIZE:OPTIMIZER[+recompute]:LENGTH"
    )
    parser.add_argument(
        "--tmp", default=None, help="where to create the models (default: the system's temporary folder)"
    )
    parser.add_argument(
        "--checkpoint_sizes", default=None, help="a SIZE: LoRA (rank 16) and full checkpoint sizes on disk"
    )
    parser.add_argument("--sizes_child", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.sizes_child:
        print("RESULT " + json.dumps(checkpoint_sizes(json.loads(args.sizes_child))), flush=True)
        return
    if run_as_child(args, child, SIZES):
        return

    from rapgen.finetune.memory import estimate_memory
    from rapgen.model.hparams import HParams

    configs = [parse_config(c) for c in args.configs.split(",") if c]
    if args.checkpoint_sizes and args.checkpoint_sizes not in SIZES:
        raise SystemExit(f"bench: --checkpoint_sizes takes one of {', '.join(SIZES)}")
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    vocab = vocab_dir()
    print(f"machine: {machine()}")
    print(
        f"batch {BATCH}, float32; measured = peak RSS of the second training step minus the RSS after importing "
        f"TensorFlow (before the model); estimate = rapgen.finetune.memory total minus its runtime term",
        flush=True,
    )

    rows = []
    tmp = tempfile.mkdtemp(prefix="rapgen-bench-memory-", dir=args.tmp)
    try:
        dataset = os.path.join(tmp, "invented_lyrics.txt")
        with open(dataset, "w", encoding="utf-8") as f:
            f.write(invented_lyrics(n_songs=200))
        made = set()
        if args.checkpoint_sizes:
            size = args.checkpoint_sizes
            model_dir = os.path.join(tmp, size)
            run_child(["--init", json.dumps({"model_dir": model_dir, "size": size, "vocab_dir": vocab})], env)
            made.add(size)
            r = run_child(["--sizes_child", json.dumps({"model_dir": model_dir, "out": tmp})], env)
            print(
                f"[{size} checkpoint on disk: LoRA rank 16 + Adam slots + step {r['lora16'] / 2**20:.1f} MiB "
                f"({r['lora16_tensors']} tensors); full weights + Adam slots + step {r['full'] / 2**30:.2f} GiB "
                f"({r['full_tensors']} tensors); ratio {r['full'] / r['lora16']:.0f}x]",
                flush=True,
            )
            if not any(c["size"] == size for c in configs):
                shutil.rmtree(model_dir, ignore_errors=True)
        for i, c in enumerate(configs):
            size = c["size"]
            model_dir = os.path.join(tmp, size)
            if size not in made:
                t0 = time.perf_counter()
                run_child(["--init", json.dumps({"model_dir": model_dir, "size": size, "vocab_dir": vocab})], env)
                made.add(size)
                print(f"[{size}: rapgen init took {time.perf_counter() - t0:.0f} s]", flush=True)
            r = run_child(
                ["--child", json.dumps({**c, "model_dir": model_dir, "dataset": dataset})], env, must_succeed=False
            )
            if i + 1 == len(configs) or configs[i + 1]["size"] != size:
                shutil.rmtree(model_dir, ignore_errors=True)  # the big ones take GiBs of disk
            if r is None:
                continue
            est = estimate_memory(
                HParams(**SIZES[size]),
                batch_size=BATCH,
                sequence_length=c["sequence_length"],
                optimizer=c["optimizer"],
                recompute=c["recompute"],
                lora_rank=c["lora_rank"],
            )
            measured = r["step_peak"] - r["baseline"]
            estimated = est["total"] - est["runtime"]
            rows.append((c, r, est, measured, estimated))
            print(
                f"[{size} {c['optimizer']}{' +recompute' if c['recompute'] else ''}"
                f"{' +LoRA rank ' + str(c['lora_rank']) if c['lora_rank'] else ''} x {c['sequence_length']}: "
                f"baseline {gb(r['baseline'])} GiB, after set-up {gb(r['after_setup'])}, first step peak {gb(r['first_peak'])}, "
                f"second step peak {gb(r['step_peak'])} (from {gb(r['before_step'])}), ru_maxrss {gb(r['ru_maxrss'])}; "
                f"step {r['step_s']:.1f} s; estimate {gb(estimated)} (+ runtime {gb(est['runtime'])}), "
                f"measured {gb(measured)}, ratio {estimated / measured:.2f}]",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"TensorFlow {rows[0][1]['tf'] if rows else '?'}; GiB = 2^30 bytes")
    print(
        "| model | optimizer | recompute | LoRA rank | tokens | estimate (GiB) | measured (GiB) | estimate / measured | whole-process step peak (GiB) | s/step |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for c, r, _, measured, estimated in rows:
        print(
            f"| {c['size']} | {c['optimizer']} | {'yes' if c['recompute'] else 'no'} | {c['lora_rank'] or '-'} | {c['sequence_length']} | "
            f"{gb(estimated)} | {gb(measured)} | {estimated / measured:.2f} | {gb(r['step_peak'])} | {r['step_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
