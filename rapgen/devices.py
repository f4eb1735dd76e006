"""What the hardware can do: the compute type for `--mixed_precision auto` and the
tf.distribute strategy for `--distribute auto`.

- A GPU with compute capability 8.0 or more (A100, L4) computes in bfloat16, an older one
  (T4, 7.5; V100, 7.0) in float16 with loss scaling; a TPU in bfloat16.
- A CPU with AMX or AVX-512 BF16 (Sapphire Rapids and later, Zen 4) computes in bfloat16;
  any other CPU stays in float32, where bfloat16 matmuls are emulated and slower.
- Several GPUs train with MirroredStrategy, a TPU runtime (Colab's, any TPU VM: see
  `colab.tpu_runtime`) with TPUStrategy on the TPU attached to this machine, anything else
  with TensorFlow's default strategy (no distribution). `strategy_kind` makes that choice from
  what it is told, so tests make it for machines they are not.

>>> compute_dtype("auto")          # doctest: +SKIP
'float32'
>>> make_strategy("auto")          # doctest: +SKIP
<tensorflow.python.distribute.distribute_lib._DefaultDistributionStrategy ...>
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import FrozenSet, Optional

from rapgen.checks import one_of
from rapgen.colab import tpu_runtime
from rapgen.errors import RapgenError

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
DISTRIBUTE_CHOICES = ("auto", "off", "mirrored", "tpu")


def quiet_tensorflow_import(set_environment: bool = True) -> None:
    """Import TensorFlow with its C++ start-up chatter muted (set RAPGEN_DEBUG=1 to see it).

    A CPU-only machine with the GPU build prints CUDA notices straight to file descriptor 2,
    where the log-level variable does not reach; they would bury rapgen's own one-line errors.
    The command line also sets TensorFlow's environment variables (its process runs rapgen
    only); `set_environment=False` leaves the environment alone and only points descriptor 2
    at /dev/null during the import, for a process that is the user's (a notebook's kernel).

    >>> quiet_tensorflow_import(set_environment=False)   # doctest: +SKIP
    """
    if "tensorflow" in sys.modules or os.environ.get("RAPGEN_DEBUG"):
        return
    if set_environment:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if set_environment and importlib.util.find_spec("tf_keras") is None:
        # TensorFlow imports Keras 3's optimizers eagerly (about a second) unless told to use
        # the legacy tf_keras, which then is not there to load. rapgen uses no Keras, and
        # this process runs only rapgen, so the cold start of a command skips it.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device probing prints too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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


def _tpu_runtime() -> Optional[str]:
    """What shows a TPU attached to this machine (colab.tpu_runtime), or None."""
    return tpu_runtime(os.environ, "/")


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


def compute_dtype(choice="auto", flags=None, capability="detect", tpu="detect") -> str:
    """The matmul type for --mixed_precision: off/float32, float16, bfloat16 or auto.

    For `auto`, `flags` stands for the CPU's feature flags, `capability` for the GPU's
    compute capability (None: no GPU) and `tpu` for what shows a TPU (None: none; see
    colab.tpu_runtime) instead of asking the machine: tests force each path.

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
    if (_tpu_runtime() if tpu == "detect" else tpu) or (capability == "detect" and _tpu_devices()):
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


def strategy_kind(choice: str, tpu: Optional[str], gpus: int) -> str:
    """Which strategy --distribute `choice` makes: "tpu", "mirrored" or "default".

    `tpu` is what shows a TPU attached to this machine (colab.tpu_runtime; None: none) and
    `gpus` the number of GPUs; `auto` takes the TPU, else several GPUs, else no distribution.

    >>> strategy_kind("auto", "TPU v5e-1 (Colab TPU runtime)", 0), strategy_kind("auto", None, 2)
    ('tpu', 'mirrored')
    """
    one_of("--distribute", choice, DISTRIBUTE_CHOICES)
    if choice == "off":
        return "default"
    if choice == "tpu" or (choice == "auto" and tpu):
        return "tpu"
    return "mirrored" if choice == "mirrored" or gpus > 1 else "default"


def make_strategy(choice: str = "auto", environ=None, root: str = "/"):
    """A tf.distribute strategy for --distribute: auto, off, mirrored or tpu.

    `mirrored` spreads over every GPU, or over the logical CPU devices where there is no GPU
    (several only when configured with tf.config.set_logical_device_configuration: tests).
    `environ` and `root` stand for this machine's environment variables and file system when
    looking for a TPU (colab.tpu_runtime). A TPU that is there but that TensorFlow cannot use
    (the ordinary TensorFlow build, without tensorflow-tpu) is an error, not a silent fall back
    to the CPU, which would train a hundred times slower.
    """
    import tensorflow as tf

    tpu = tpu_runtime(os.environ if environ is None else environ, root)
    if strategy_kind(choice, tpu, gpus=0) == "tpu":
        return _tpu_strategy(choice, tpu)
    gpus = tf.config.list_logical_devices("GPU")
    if strategy_kind(choice, tpu, len(gpus)) == "default":
        return tf.distribute.get_strategy()
    if choice == "auto":
        return tf.distribute.MirroredStrategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def _tpu_strategy(choice: str, tpu: Optional[str]):
    import tensorflow as tf

    # "local": the TPU is attached to this VM (Colab's TPU runtimes since 2024, any TPU VM). With
    # nothing local, "" lets TensorFlow resolve TPU_NAME or ask the GCE metadata server.
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local" if tpu else "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        if tpu:
            raise RapgenError(
                f"--distribute {choice}: this machine has a {tpu} but TensorFlow cannot use it ({why}); "
                "install TensorFlow for TPUs with rapgen.colab.setup_tpu() (notebook 02's set-up does) "
                "and restart, or pass --distribute off to train without it"
            ) from None
        raise RapgenError(f"--distribute tpu: no TPU found ({why}); use --distribute auto") from None
    return tf.distribute.TPUStrategy(resolver)


def device_memory_gib(meminfo: str = "/proc/meminfo") -> Optional[float]:
    """Memory one training replica may use, in GiB: the first GPU's total (nvidia-smi), else
    the host's available memory (training on the CPU); None where neither can be read."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
            )
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
