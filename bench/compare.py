"""rapgen side by side with the tools its users would otherwise use, on this machine.

    python bench/compare.py                  # everything (about 35 minutes on 2 cores)
    python bench/compare.py --quick          # tiny model only, few steps, short samples (a smoke check)
    python bench/compare.py --only rapgen,transformers --steps 3 --json out.json
    python bench/compare.py --setup-only     # just build the peers' virtual environments

Peers, each in its own virtual environment under bench/.venvs/<name>/ (made here on first use
with `python -m venv` and pip, reused afterwards) and driven by a small script under
bench/peers/ that does one measurement per process and prints one `RESULT {json}` line:

  rapgen        the project's .venv; bench_train.py's training child, rapgen.write.generation.generate,
                the `rapgen sample` command line, rapgen's encoder on bench_core.py's text
  gpt2simple    gpt-2-simple 0.8.1 on the same TensorFlow as .venv (tf.compat.v1 graph mode)
  transformers  Hugging Face GPT2LMHeadModel on PyTorch's CPU build
  kerashub      keras-hub GPT2CausalLM, Keras 3 on TensorFlow
  tiktoken      tiktoken's BPE built offline from the same vocabulary files

Same weights everywhere: `rapgen init` writes the models once into bench/.work/models (the
124M shape, 12 x 768, and a tiny one, 2 x 64; both with a 1024 context; seed 1), in OpenAI's
checkpoint format, which gpt-2-simple reads as it is. The same arrays, exported once to .npz,
are loaded into transformers' and keras-hub's models. Each conversion is checked before
anything is timed: logits of one token sequence against rapgen's, on the benchmark models
and on `check`, a tiny model whose every array is random (gains and biases included, which
are ones and zeros in a fresh model and would hide a swapped array). A difference over
1e-3 stops the run.

What is measured (each in its own child process, after a warm-up step or call):
  * training tokens/s at batch 1 x 1024 (one update per window), tiny and 124M shape, float32
    and bfloat16 mixed precision where the tool has it (gpt-2-simple has not); the first step
    (tracing, graph optimisation: the warm-up) is left out, and at the tiny size one more; seconds per step, peak
    resident memory of the child (ru_maxrss), MFU: model FLOPs (6 x parameters x tokens +
    attention, see peers/common.py) per second over the machine's measured matmul peak for that
    type (the better of TensorFlow's and torch's 2048 x 2048 matmul). Where a tool's bfloat16
    matmul is so slow here that the run could not finish in a few minutes (torch on a CPU
    without avx512_bf16/AMX), the row says so instead of running.
  * sampling tokens/s, 124M shape, batch 1 and 8, 256 new tokens, top-k 40, KV cache, no early
    stop: a first call, then a warm call. gpt-2-simple builds new graph ops on every
    generate() call, so its warm call includes that; its row notes what re-running one graph
    gives.
  * cold sampling: wall time of a whole process that loads the 124M-shaped model and writes 32
    tokens: `rapgen sample --model DIR --artist "Lil Tofu" --length 32 --seed 1
    --stop_at_end False` against a script doing the same with gpt-2-simple.
  * encoding MB/s of bench_core.py's synthetic lyrics: rapgen (empty word cache) against
    tiktoken (one thread); the ids must be identical (SHA-256 of the int32 ids).

OpenMP: every child runs with OMP_WAIT_POLICY=PASSIVE (--omp-wait-policy). torch's CPU build
uses OpenMP, whose threads spin while they wait; with other processes on a 2-core machine that
spinning took the cores from the threads with work, and made transformers' training steps about
2x and its generate() 15x slower than with PASSIVE (TensorFlow's own thread pool is not
affected). Pass --omp-wait-policy '' to measure torch as it comes.

Ratios: "rapgen ÷ peer" divides rapgen's figure by the peer's (for tokens/s and MB/s above 1
means rapgen is faster; for seconds below 1 does); "÷ gpt-2-simple" divides the row's figure by
gpt-2-simple's. Other processes on the machine slow every figure down: each row shows the
share of the CPU they used meanwhile (from /proc/stat).

Needs: the project's .venv (`make test` sets it up), the GPT-2 vocabulary ($RAPGEN_GPT2_DIR or
../shared/gpt2), and the package index for the first set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, os.path.join(BENCH, "peers")]

import bench_core  # noqa: E402  (machine description; standard library only at import)
import bench_train  # noqa: E402  (vocabulary lookup, CPU accounting; standard library only at import)
import common  # noqa: E402

RAPGEN_VENV = os.path.join(ROOT, ".venv")
VENVS = os.path.join(BENCH, ".venvs")
PEERS = ["rapgen", "gpt2simple", "transformers", "kerashub", "tiktoken"]
LABEL = {
    "rapgen": "rapgen",
    "gpt2simple": "gpt-2-simple",
    "transformers": "transformers (torch)",
    "kerashub": "keras-hub",
    "tiktoken": "tiktoken",
}
TOLERANCE = 1e-3  # max |logit difference| a conversion may show


def pip_steps(tf_version: str) -> dict:
    """Per peer, the pip installs that build its venv, in order (torch's CPU build before transformers)."""
    return {
        "gpt2simple": [["gpt-2-simple==0.8.1", f"tensorflow=={tf_version}"]],
        "transformers": [["torch==2.13.0"], ["transformers"]],
        "kerashub": [[f"tensorflow=={tf_version}", "keras-hub"]],
        "tiktoken": [["tiktoken"]],
    }


def python_of(peer: str) -> str:
    return os.path.join(RAPGEN_VENV if peer == "rapgen" else os.path.join(VENVS, peer), "bin", "python")


# -- set-up -----------------------------------------------------------------------------


def rapgen_tf_version() -> str:
    out = subprocess.run(
        [python_of("rapgen"), "-c", "import importlib.metadata as m; print(m.version('tensorflow'))"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"compare: TensorFlow is not installed in {RAPGEN_VENV}: run `make test` first")
    return out.stdout.strip()


def setup_venv(peer: str, steps: list) -> None:
    """Create bench/.venvs/<peer> and pip install into it, unless it was already built with these steps."""
    folder = os.path.join(VENVS, peer)
    marker = os.path.join(folder, ".compare-installed")
    wanted = json.dumps(steps)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            if f.read() == wanted:
                return
    print(f"[setting up {folder}: {'; then '.join(' '.join(s) for s in steps)}]", flush=True)
    t0 = time.perf_counter()
    if not os.path.exists(python_of(peer)):
        subprocess.run([sys.executable, "-m", "venv", folder], check=True)
    log = os.path.join(folder, "pip.log")
    with open(log, "w", encoding="utf-8") as f:
        for packages in steps:
            status = subprocess.run(
                [python_of(peer), "-m", "pip", "install", "-q", *packages], stdout=f, stderr=f
            ).returncode
            if status != 0:
                raise SystemExit(f"compare: pip install {' '.join(packages)} failed in {folder} (see {log})")
    with open(marker, "w", encoding="utf-8") as f:
        f.write(wanted)
    print(f"[{peer}: ready in {time.perf_counter() - t0:.0f} s]", flush=True)


# -- running one measurement ----------------------------------------------------------------


class Runner:
    """Runs peer scripts (or any command) as child processes and keeps every result."""

    def __init__(self, timeout: float, omp_wait_policy: str):
        self.timeout = timeout
        self.children_cpu = 0.0
        self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
        if omp_wait_policy:
            self.env["OMP_WAIT_POLICY"] = omp_wait_policy

    def command(self, argv: list, label: str) -> dict:
        """Run argv; returns {'wall_s', 'others_cpu', 'stdout'} or {'error': ...}."""
        busy0, t0 = bench_train.busy_cpu_seconds(), time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {self.timeout:.0f} s"}
        wall, busy = time.perf_counter() - t0, bench_train.busy_cpu_seconds() - busy0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = usage.ru_utime + usage.ru_stime - self.children_cpu
        self.children_cpu = usage.ru_utime + usage.ru_stime
        others = max(0.0, busy - own) / (wall * (os.cpu_count() or 1)) if busy else float("nan")
        out = {"wall_s": wall, "others_cpu": others, "stdout": proc.stdout}
        if proc.returncode != 0:
            errors = [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("ERROR ")]
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            out["error"] = errors[-1] if errors else f"exit status {proc.returncode}: " + " | ".join(tail[-3:])
            sys.stderr.write(f"--- {label} failed; last lines:\n" + "\n".join(tail) + "\n")
        return out

    def peer(self, peer: str, task: str, spec: dict) -> dict:
        """One task of a peer script; the RESULT dict plus wall_s and others_cpu, or {'error': ...}."""
        script = os.path.join(BENCH, "peers", f"{peer}_peer.py")
        out = self.command([python_of(peer), script, task, json.dumps(spec)], f"{peer} {task} {spec}")
        if "error" in out:
            return {"error": out["error"]}
        results = [line[7:] for line in out["stdout"].splitlines() if line.startswith("RESULT ")]
        if not results:
            return {"error": "no RESULT line"}
        result = json.loads(results[-1])
        result.update(wall_s=out["wall_s"], others_cpu=out["others_cpu"])
        return result


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict:
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = float("nan")
    return {
        "cpu": bench_core.cpu_model(),
        "cores": bench_core.usable_cores(),
        "online": os.cpu_count(),
        "flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")},
        "memory_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load": os.getloadavg(),
    }


# -- the table --------------------------------------------------------------------------------


def fmt(x, digits=1, suffix=""):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if x != x:  # NaN
        return "?"
    if abs(x) >= 100:
        return f"{x:,.0f}{suffix}"
    return f"{x:.{digits}f}{suffix}"


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def table(headers: list, rows: list) -> str:
    """A markdown table, columns padded; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(r[i][:1].isdigit() or r[i][:1] in "–?-" for r in cells) and i > 0 for i in range(len(headers))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric)) + "|",
    ]
    for r in cells:
        lines.append("| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(r, widths, numeric)) + " |")
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny model only, few steps, short samples")
    parser.add_argument("--only", default=",".join(PEERS), help="comma-separated peers: " + ", ".join(PEERS))
    parser.add_argument(
        "--steps", type=int, default=None, help="timed training steps (default: tiny 10, 124M 2; --quick 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed training steps after the first, which traces/compiles and is never timed "
        "(default: tiny 1, 124M 0, so 124M runs 1 warm-up + 2 timed steps)",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="also write every result to this file")
    parser.add_argument("--setup-only", action="store_true", help="build the peers' virtual environments and stop")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds any one child may take")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for every child (default PASSIVE; '' leaves it unset): torch's OpenMP "
        "threads spin-wait by default, which on a shared 2-core machine slowed its steps 2-15x",
    )
    args = parser.parse_args()

    only = [p.strip() for p in args.only.split(",") if p.strip()]
    for p in only:
        if p not in PEERS:
            raise SystemExit(f"compare: unknown peer {p!r}; choose from {', '.join(PEERS)}")
    if not os.path.exists(python_of("rapgen")):
        raise SystemExit(f"compare: {RAPGEN_VENV} is missing: run `make test` (it sets up .venv) first")
    tf_version = rapgen_tf_version()
    for peer, steps in pip_steps(tf_version).items():
        if peer in only:
            setup_venv(peer, steps)
    if args.setup_only:
        print("compare: virtual environments ready under " + VENVS)
        return

    quick = args.quick
    sizes = ["tiny"] if quick else ["tiny", "124M"]
    steps_for = {"tiny": args.steps or (3 if quick else 10), "124M": args.steps or 2}
    warmup_for = {"tiny": 1 if args.warmup is None else args.warmup, "124M": 0 if args.warmup is None else args.warmup}
    warm_calls = 1  # sampling: a first call (compiles), then this many timed calls
    sample_size, sample_len = ("tiny", 32) if quick else ("124M", 256)
    cold_size, cold_len = ("tiny", 32) if quick else ("124M", 32)
    encode_mb = 0.5 if quick else 4.0
    bf16_budget_s = 60 if quick else 240  # skip a bfloat16 run predicted to take longer than this
    vocab = bench_train.vocab_dir()
    run = Runner(args.timeout, args.omp_wait_policy)
    results = {
        "machine": machine(),
        "args": vars(args),
        "versions": {},
        "peaks": {},
        "checks": [],
        "train": [],
        "sample": [],
        "cold": [],
        "encode": [],
    }
    m = results["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores usable ({m['online']} online), {m['memory_gib']:.0f} GiB, "
        f"{m['os']}, Python {m['python']}"
    )
    print(
        "CPU flags: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
        + f"; load average {m['load'][0]:.2f} {m['load'][1]:.2f} {m['load'][2]:.2f}"
    )
    print(f"children run with OMP_WAIT_POLICY={args.omp_wait_policy or '(unset)'}")

    def note(text):
        print(f"[{text}]", flush=True)

    def version_from(peer, r):
        for key in ("tf", "gpt_2_simple", "torch", "transformers", "keras", "keras_hub", "tiktoken"):
            if key in r:
                results["versions"][key if key != "tf" or peer == "rapgen" else f"tf ({LABEL[peer]})"] = r[key]

    # 1. Models, exported weights, reference logits (cached in bench/.work).
    t0 = time.perf_counter()
    r = run.peer("rapgen", "prepare", {"vocab_dir": vocab, "sizes": ["check"] + sizes})
    if "error" in r:
        raise SystemExit(f"compare: preparing the models failed: {r['error']}")
    note(
        f"models in {os.path.relpath(os.path.join(common.WORK, 'models'), ROOT)}: "
        f"{'made ' + ', '.join(r['made']) if r['made'] else 'reused'} ({time.perf_counter() - t0:.0f} s)"
    )

    # 2. Matmul peaks.
    for peer, framework in (("rapgen", "tensorflow"), ("transformers", "torch")):
        if peer == "rapgen" or peer in only:
            r = run.peer(peer, "peaks", {})
            if "error" in r:
                note(f"{framework} matmul peak failed: {r['error']}")
                continue
            results["peaks"][framework] = r["peaks"]
            version_from(peer, r)
            note(
                f"{framework} matmul: "
                + ", ".join(f"{d} {v['gflops']:.1f} GFLOP/s (n={v['n']})" for d, v in r["peaks"].items())
            )
    peak = {d: max(p[d]["gflops"] for p in results["peaks"].values()) for d in ("float32", "bfloat16")}
    framework_of = {
        "rapgen": "tensorflow",
        "gpt2simple": "tensorflow",
        "kerashub": "tensorflow",
        "transformers": "torch",
    }

    # 3. Conversion checks: fail loudly on a mismatch.
    failed = []
    for peer in ("gpt2simple", "transformers", "kerashub"):
        if peer not in only:
            continue
        for size in ["check", sizes[-1]]:  # tiny has check's shape: in a full run the 124M weights matter more
            r = run.peer(peer, "check", {"size": size})
            version_from(peer, r)
            row = {"peer": peer, "size": size, **r}
            results["checks"].append(row)
            if "error" in r or r["max_abs_diff"] > TOLERANCE:
                failed.append(row)
            note(
                f"check {LABEL[peer]} {size}: "
                + (
                    r["error"]
                    if "error" in r
                    else f"max |logit diff| {r['max_abs_diff']:.2e} (logits up to {r['logit_scale']:.2f})"
                )
            )
    if results["checks"]:
        print()
        print(f"Conversion check: logits of the same token ids, each peer against rapgen (tolerance {TOLERANCE:g})")
        print(
            table(
                ["peer", "model", "max |Δ logit|", "max |logit|", "ok"],
                [
                    [
                        LABEL[c["peer"]],
                        c["size"],
                        fmt(c.get("max_abs_diff"), 2) if "error" in c else f"{c['max_abs_diff']:.1e}",
                        fmt(c.get("logit_scale"), 2),
                        "FAILED" if c in failed else "yes",
                    ]
                    for c in results["checks"]
                ],
            )
        )
        print()
    if failed:
        for c in failed:
            print(
                f"compare: CONVERSION CHECK FAILED for {LABEL[c['peer']]} on {c['size']}: "
                + (c["error"] if "error" in c else f"max |logit diff| {c['max_abs_diff']:.3e} > {TOLERANCE:g}"),
                file=sys.stderr,
            )
        write_json(args.json_out, results)
        raise SystemExit(1)

    # 4. Encoding.
    for peer in ("rapgen", "tiktoken"):
        if peer in only:
            r = run.peer(peer, "encode", {"mb": encode_mb, "vocab_dir": vocab})
            version_from(peer, r)
            results["encode"].append({"peer": peer, **r})
            note(
                f"encode {LABEL[peer]}: "
                + (
                    r["error"]
                    if "error" in r
                    else f"{r.get('cold_mb_s', r.get('mb_s')):.2f} MB/s, {r['tokens']:,} tokens"
                )
            )

    # 5. Cold sampling: a whole process, load + 32 tokens.
    cold_dir = common.model_dir(cold_size)
    if "rapgen" in only:
        argv = [
            os.path.join(RAPGEN_VENV, "bin", "rapgen"),
            "sample",
            "--model",
            cold_dir,
            "--artist",
            "Lil Tofu",
            "--length",
            str(cold_len),
            "--seed",
            "1",
            "--stop_at_end",
            "False",
        ]
        out = run.command(argv, "rapgen sample")
        results["cold"].append(
            {"peer": "rapgen", "command": shlex.join(argv), **{k: v for k, v in out.items() if k != "stdout"}}
        )
        note(f"cold rapgen sample: {out.get('error') or format(out['wall_s'], '.1f') + ' s'}")
    if "gpt2simple" in only:
        r = run.peer("gpt2simple", "cold", {"size": cold_size, "length": cold_len})
        results["cold"].append({"peer": "gpt2simple", **r})
        note(f"cold gpt-2-simple script: {r.get('error') or format(r['wall_s'], '.1f') + ' s'}")

    # 6. Sampling.
    for batch in (1, 8):
        for peer in ("rapgen", "gpt2simple", "transformers", "kerashub"):
            if peer not in only:
                continue
            r = run.peer(
                peer, "sample", {"size": sample_size, "batch": batch, "length": sample_len, "warm_runs": warm_calls}
            )
            results["sample"].append({"peer": peer, "size": sample_size, "batch": batch, "length": sample_len, **r})
            note(
                f"sample {LABEL[peer]} {sample_size} batch {batch}: "
                + (
                    r["error"]
                    if "error" in r
                    else f"first {r['first_s']:.1f} s, warm {r['best_s']:.2f} s, {r['tokens_per_s']:.1f} tokens/s, "
                    f"others used {r['others_cpu']:.0%} CPU"
                )
            )

    # 7. Training.
    for size in sizes:
        flops = common.train_flops(common.SIZES[size])
        for dtype in ("float32", "bfloat16"):
            for peer in ("rapgen", "gpt2simple", "transformers", "kerashub"):
                if peer not in only:
                    continue
                row = {"peer": peer, "size": size, "dtype": dtype, "steps": steps_for[size]}
                if dtype == "bfloat16" and peer == "gpt2simple":
                    continue  # gpt-2-simple has no mixed precision
                fw_peak = results["peaks"].get(framework_of[peer], {}).get(dtype, {}).get("gflops")
                if dtype == "bfloat16" and fw_peak:
                    est = flops / (fw_peak * 1e9)  # seconds per step at 100% of the matmul peak: a lower bound
                    if est * (1 + warmup_for[size] + steps_for[size]) > bf16_budget_s:
                        row["skipped"] = (
                            f"{framework_of[peer]} bfloat16 matmul runs at {fw_peak:.1f} GFLOP/s here: "
                            f">= {est:,.0f} s per step"
                        )
                        results["train"].append(row)
                        note(f"train {LABEL[peer]} {size} {dtype}: skipped ({row['skipped']})")
                        continue
                r = run.peer(
                    peer, "train", {"size": size, "dtype": dtype, "steps": steps_for[size], "warmup": warmup_for[size]}
                )
                row.update(r)
                if "error" not in r:
                    row["mfu"] = flops / r["mean_step_s"] / (peak[dtype] * 1e9) if peak.get(dtype) else None
                results["train"].append(row)
                note(
                    f"train {LABEL[peer]} {size} {dtype}: "
                    + (
                        r["error"]
                        if "error" in r
                        else f"{r['tokens_per_s']:.0f} tokens/s, steps {', '.join(f'{s:.2f}' for s in r['step_s'])} s, "
                        f"peak {r['peak_rss_mib']:,.0f} MiB, others used {r['others_cpu']:.0%} CPU"
                    )
                )

    report(results, peak, sample_len, cold_len)
    write_json(args.json_out, results)
    errors = [r for key in ("train", "sample", "cold", "encode") for r in results[key] if "error" in r]
    if errors:
        raise SystemExit(f"compare: {len(errors)} measurement(s) failed (see the table)")


def write_json(path, results) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
        print(f"results written to {path}")


def report(results: dict, peak: dict, sample_len: int, cold_len: int) -> None:
    """The one table (markdown), sections one after another."""
    v = results["versions"]
    print()
    print("Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    print(
        "Matmul peaks (GFLOP/s): "
        + "; ".join(
            f"{fw} " + ", ".join(f"{d} {p['gflops']:.1f} (n={p['n']})" for d, p in peaks.items())
            for fw, peaks in results["peaks"].items()
        )
        + ". MFU uses the better of the two for the row's type."
    )
    print()

    def find(key, **match):
        for r in results[key]:
            if all(r.get(k) == x for k, x in match.items()) and "error" not in r and "skipped" not in r:
                return r
        return None

    rows = []
    for r in results["train"]:
        base = find("train", peer="rapgen", size=r["size"], dtype=r["dtype"])
        simple = find("train", peer="gpt2simple", size=r["size"], dtype="float32")
        label = LABEL[r["peer"]]
        if "skipped" in r or "error" in r:
            rows.append(
                [
                    f"train {r['size']}",
                    r["dtype"],
                    label,
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "skipped: " + r["skipped"] if "skipped" in r else "FAILED: " + r["error"][:90],
                ]
            )
            continue
        tps = r["tokens_per_s"]
        rows.append(
            [
                f"train {r['size']}",
                r["dtype"],
                label,
                fmt(r["mean_step_s"], 2),
                fmt(tps),
                fmt(100 * r["mfu"] if r.get("mfu") is not None else None, 1, "%"),
                fmt(r["peak_rss_mib"]),
                fmt(ratio(base and base["tokens_per_s"], tps), 2) if r["peer"] != "rapgen" else "1",
                fmt(ratio(tps, simple and simple["tokens_per_s"]), 2),
                fmt(100 * r["others_cpu"], 0, "%"),
                f"{r['steps']} timed steps: " + ", ".join(f"{s:.2f}" for s in r["step_s"]),
            ]
        )
    for r in results["sample"]:
        label = LABEL[r["peer"]]
        what = f"sample {r['size']} b{r['batch']}"
        if "error" in r:
            rows.append([what, "float32", label, "–", "–", "–", "–", "–", "–", "–", "FAILED: " + r["error"][:90]])
            continue
        base = find("sample", peer="rapgen", size=r["size"], batch=r["batch"])
        simple = find("sample", peer="gpt2simple", size=r["size"], batch=r["batch"])
        extra = f"{sample_len} new tokens; first call {r['first_s']:.1f} s, warm {r['best_s']:.2f} s"
        if r["peer"] == "gpt2simple":
            extra += (
                f" (new graph each call; Session.run {r['run_s']:.2f} s of it; one graph re-run: "
                f"{r['graph_reused_tokens_per_s']:.1f} tokens/s)"
            )
        rows.append(
            [
                what,
                "float32",
                label,
                fmt(r["best_s"] / r["length"], 3),
                fmt(r["tokens_per_s"]),
                "–",
                fmt(r["peak_rss_mib"]),
                fmt(ratio(base and base["tokens_per_s"], r["tokens_per_s"]), 2) if r["peer"] != "rapgen" else "1",
                fmt(ratio(r["tokens_per_s"], simple and simple["tokens_per_s"]), 2),
                fmt(100 * r["others_cpu"], 0, "%"),
                extra,
            ]
        )
    base = next((r for r in results["cold"] if r["peer"] == "rapgen" and "error" not in r), None)
    for r in results["cold"]:
        label = LABEL[r["peer"]] + (" CLI" if r["peer"] == "rapgen" else " script")
        if "error" in r:
            rows.append(
                [
                    f"cold sample {cold_len}",
                    "float32",
                    label,
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "FAILED: " + r["error"][:90],
                ]
            )
            continue
        rows.append(
            [
                f"cold sample {cold_len}",
                "float32",
                label,
                fmt(r["wall_s"], 1, " s"),
                "–",
                "–",
                "–",
                fmt(ratio(base and base["wall_s"], r["wall_s"]), 2) if r["peer"] != "rapgen" else "1",
                "–",
                fmt(100 * r["others_cpu"], 0, "%"),
                "wall time of the whole process (import, load, sample)",
            ]
        )
    enc = {r["peer"]: r for r in results["encode"] if "error" not in r}
    same = "rapgen" in enc and "tiktoken" in enc and enc["rapgen"]["sha256"] == enc["tiktoken"]["sha256"]
    for r in results["encode"]:
        label = LABEL[r["peer"]]
        if "error" in r:
            rows.append(["encode", "–", label, "–", "–", "–", "–", "–", "–", "–", "FAILED: " + r["error"][:90]])
            continue
        mbs = r.get("cold_mb_s", r.get("mb_s"))
        extra = f"{r['mb']:.2f} MB, {r['tokens']:,} tokens"
        if r["peer"] == "rapgen":
            extra += f"; empty word cache (warm cache: {r['warm_mb_s']:.2f} MB/s)"
        else:
            extra += "; one thread; ids identical to rapgen's: " + (
                "yes" if same else "NO" if "rapgen" in enc else "not compared"
            )
        rows.append(
            [
                "encode",
                "–",
                label,
                "–",
                fmt(mbs, 2, " MB/s"),
                "–",
                fmt(r["peak_rss_mib"]),
                fmt(ratio(enc["rapgen"]["cold_mb_s"], mbs), 2)
                if "rapgen" in enc and r["peer"] != "rapgen"
                else ("1" if r["peer"] == "rapgen" else "–"),
                "–",
                fmt(100 * r["others_cpu"], 0, "%"),
                extra,
            ]
        )
    print(
        table(
            [
                "measure",
                "type",
                "tool",
                "s/step",
                "tokens/s",
                "MFU",
                "peak RSS MiB",
                "rapgen ÷ peer",
                "÷ gpt-2-simple",
                "others' CPU",
                "notes",
            ],
            rows,
        )
    )
    print()
    print(
        "s/step: seconds per training step, or per new token (per batch step) when sampling; cold sample: seconds. "
        "rapgen ÷ peer: rapgen's tokens/s (MB/s) over the peer's, > 1 = rapgen faster; for the cold sample, "
        "seconds over seconds, < 1 = rapgen faster. ÷ gpt-2-simple: the row's tokens/s over gpt-2-simple's. "
        "others' CPU: share of the machine's CPU other processes used during the run."
    )
    if enc and "rapgen" in enc and "tiktoken" in enc and not same:
        raise SystemExit("compare: rapgen's token ids differ from tiktoken's")


if __name__ == "__main__":
    main()
