"""What `--mixed_precision auto` and `--distribute auto` pick on a machine without accelerators."""

import pytest

from rapgen.devices import compute_dtype, cpu_flags, cpu_has_fast_bfloat16, describe, gpu_dtype, make_strategy
from rapgen.errors import RapgenError


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_flags(str(info)) == {"fpu", "sse2", "avx2", "amx_bf16", "amx_tile"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(
    "flags, fast",
    [
        ({"avx2", "fma"}, False),  # e.g. AMD EPYC Zen 2/3: bfloat16 is emulated
        ({"avx512f", "avx512_bf16"}, True),  # Cooper Lake, Zen 4
        ({"avx512f", "amx_bf16", "amx_tile"}, True),  # Sapphire Rapids and later
    ],
)
def test_auto_uses_bfloat16_only_where_the_cpu_has_it(flags, fast, monkeypatch):
    for name in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(name, raising=False)
    assert cpu_has_fast_bfloat16(flags) is fast
    # capability=None: decide as on a machine without a GPU, whatever this one has.
    assert compute_dtype("auto", flags=flags, capability=None) == ("bfloat16" if fast else "float32")
    assert compute_dtype("off", flags=flags, capability=(7, 5)) == "float32"
    assert compute_dtype("float16", flags=flags, capability=None) == "float16"


@pytest.mark.parametrize(
    "capability, dtype",
    [
        ((6, 0), "float16"),  # P100
        ((7, 0), "float16"),  # V100
        ((7, 5), "float16"),  # T4, Colab's free GPU: no bfloat16 tensor cores
        ((8, 0), "bfloat16"),  # A100
        ((8, 9), "bfloat16"),  # L4
        ((9, 0), "bfloat16"),  # H100
    ],
)
def test_auto_on_a_gpu_follows_its_compute_capability(capability, dtype):
    assert gpu_dtype(capability) == dtype
    # A GPU decides, whatever the CPU could do.
    for flags in (set(), {"avx512_bf16"}):
        assert compute_dtype("auto", flags=flags, capability=capability) == dtype


def test_bad_choices_are_named():
    with pytest.raises(RapgenError, match="--mixed_precision must be auto, off, float16 or bfloat16; got 'half'"):
        compute_dtype("half")
    with pytest.raises(RapgenError, match="--distribute must be one of auto, off, mirrored, tpu; got 'horovod'"):
        make_strategy("horovod")


def test_no_accelerator_means_no_distribution(monkeypatch):
    for name in ("COLAB_TPU_ADDR", "TPU_NAME", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(name, raising=False)
    assert describe(make_strategy("auto")) == "1 device"
    assert describe(make_strategy("off")) == "1 device"
