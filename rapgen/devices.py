"""What the hardware can do: the compute type for `--mixed_precision auto` and the
tf.distribute strategy for `--distribute auto`.

- A GPU with compute capability 8.0 or more (A100, L4) computes in bfloat16, an older one
  (T4, 7.5; V100, 7.0) in float16 with loss scaling; a TPU in bfloat16.
- A CPU with AMX or AVX-512 BF16 (Sapphire Rapids and later, Zen 4) computes in bfloat16;
  any other CPU stays in float32, where bfloat16 matmuls are emulated and slower.
- Several GPUs train with MirroredStrategy, a Colab TPU runtime with TPUStrategy, anything
  else with TensorFlow's default strategy (no distribution).

>>> compute_dtype("auto")          # doctest: +SKIP
'float32'
>>> make_strategy("auto")          # doctest: +SKIP
<tensorflow.python.distribute.distribute_lib._DefaultDistributionStrategy ...>
"""

from __future__ import annotations

import os
import subprocess
from typing import FrozenSet, Optional

from .errors import RapgenError
from .rules import one_of

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
DISTRIBUTE_CHOICES = ("auto", "off", "mirrored", "tpu")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The feature flags of the first CPU in /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bfloat16(flags=None) -> bool:
    """True where the CPU multiplies bfloat16 natively (AMX tiles or AVX-512 BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def _tpu_runtime() -> bool:
    # Colab's TPU runtimes set one of these; a TPU VM names its accelerator.
    return any(os.environ.get(name) for name in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE"))


def gpu_dtype(compute_capability) -> str:
    """The compute type `auto` picks on a GPU of this compute capability, a (major, minor) pair.

    >>> gpu_dtype((7, 5)), gpu_dtype((8, 0))      # a T4, an A100
    ('float16', 'bfloat16')
    """
    # bfloat16 tensor cores arrived with Ampere (8.0); a T4 (7.5) or V100 (7.0) has only float16 ones.
    return "bfloat16" if tuple(int(x) for x in compute_capability) >= (8, 0) else "float16"


def gpu_capability() -> Optional[tuple]:
    """(major, minor) of the first GPU TensorFlow sees, (0, 0) when it does not say; None without a GPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))


def compute_dtype(choice="auto", flags=None, capability="detect") -> str:
    """The matmul type for --mixed_precision: off/float32, float16, bfloat16 or auto.

    For `auto`, `flags` stands for the CPU's feature flags and `capability` for the GPU's
    compute capability (None: no GPU) instead of asking the machine: tests force each path.

    >>> compute_dtype("auto", flags={"avx2"}, capability=(7, 5))
    'float16'
    """
    if choice in ("off", "float32", False, None):
        return "float32"
    if choice in ("float16", "bfloat16"):
        return choice
    check_mixed_precision(choice)
    cc = gpu_capability() if capability == "detect" else capability
    if cc is not None:
        return gpu_dtype(cc)
    if _tpu_runtime() or (capability == "detect" and _tpu_devices()):
        return "bfloat16"
    if choice is True or cpu_has_fast_bfloat16(flags):
        return "bfloat16"
    return "float32"


def check_mixed_precision(choice) -> None:
    """--mixed_precision takes auto, off, float16 or bfloat16 (True/False/None/float32 from Python).

    Why not `rules.one_of`: the tests pin this wording (it lists the command-line words
    only, not the Python spellings), so the rule keeps its one phrasing here.
    """
    if isinstance(choice, bool) or choice is None:
        return
    if choice not in ("auto", "off", "float32", "float16", "bfloat16"):
        raise RapgenError(f"--mixed_precision must be auto, off, float16 or bfloat16; got {choice!r}")


def _tpu_devices() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("TPU"))


def make_strategy(choice: str = "auto"):
    """A tf.distribute strategy for --distribute: auto, off, mirrored or tpu.

    `mirrored` spreads over every GPU, or over the logical CPU devices where there is no GPU
    (several only when configured with tf.config.set_logical_device_configuration: tests).
    """
    import tensorflow as tf

    one_of("--distribute", choice, DISTRIBUTE_CHOICES)
    if choice == "off":
        return tf.distribute.get_strategy()
    if choice == "tpu" or (choice == "auto" and _tpu_runtime()):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as e:
            if choice == "auto":
                return tf.distribute.get_strategy()
            raise RapgenError(f"--distribute tpu: no TPU found ({str(e).splitlines()[0]}); use --distribute auto") from None
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if choice == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def device_memory_gib(meminfo: str = "/proc/meminfo") -> Optional[float]:
    """Memory one training replica may use, in GiB: the first GPU's total (nvidia-smi), else
    the host's available memory (training on the CPU); None where neither can be read."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20)
            return int(out.stdout.split()[0]) / 1024 if out.returncode == 0 else None
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None
    if _tpu_runtime():
        return None
    try:
        with open(meminfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe(strategy) -> str:
    """'1 device' or '2 replicas (MirroredStrategy)' for the start-of-run message."""
    n = strategy.num_replicas_in_sync
    name = type(strategy).__name__
    if n == 1 and name.startswith("_Default"):
        return "1 device"
    return f"{n} replica{'s' if n > 1 else ''} ({name})"
