"""Colab's TPU runtimes, on machines made of files: detection, the pip commands, `--distribute auto`.

There is no TPU here. A fake machine is a folder standing for `/` (device files under dev/, the
PCI bus under sys/) plus a dict standing for the environment, laid out as the real ones are:
Colab's TPU runtime sets COLAB_TPU_1VM=1 and TPU_ACCELERATOR_TYPE (v5e-1, v2-8); a TPU VM shows
its chips as /dev/accel<N> (v2-v4) or /dev/vfio/<N> (v5e and later), and sysfs lists them with
Google's PCI vendor id. The install runs a stand-in for the kernel's Python, a real executable
that records its arguments, since installing TensorFlow is not possible here. `--distribute
auto` then meets the real TensorFlow of this machine, which has no TPU build: it must say so.
"""

import ast
import json
import os
import stat
import subprocess
import sys

import pytest

from rapgen.colab import TPU_WHEELS, setup_tpu, tpu_chips, tpu_install_commands, tpu_release_for, tpu_runtime
from rapgen.devices import compute_dtype, describe, make_strategy, strategy_kind
from rapgen.errors import RapgenError

from support.helpers import ROOT, THREE_SONGS, assert_one_line_error

COLAB_TPU = {
    "COLAB_TPU_1VM": "1",
    "TPU_ACCELERATOR_TYPE": "v5e-1",
    "TPU_WORKER_ID": "0",
    "TPU_SKIP_MDS_QUERY": "1",
    "COLAB_GPU": "",
}  # as a Colab v5e-1 runtime has them
COLAB_GPU = {"COLAB_TPU_1VM": "", "COLAB_GPU": "1"}  # Colab's other runtimes set it empty


def machine(tmp_path, pci=(), dev=()):
    """A fake `/`: `pci` holds (vendor, device) ids of PCI devices, `dev` device file names."""
    root = tmp_path / "root"
    for i, (vendor, device) in enumerate(pci):
        folder = root / "sys" / "bus" / "pci" / "devices" / f"0000:00:{4 + i:02x}.0"
        folder.mkdir(parents=True)
        (folder / "vendor").write_text(vendor + "\n")
        (folder / "device").write_text(device + "\n")
    for name in dev:
        (root / "dev" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "dev" / name).write_text("")
    root.mkdir(exist_ok=True)
    return str(root)


@pytest.mark.parametrize(
    "environ, pci, dev, found",
    [
        (COLAB_TPU, (), (), "TPU v5e-1 (Colab TPU runtime)"),
        ({**COLAB_TPU, "TPU_ACCELERATOR_TYPE": ""}, (), (), "TPU (type not named) (Colab TPU runtime)"),
        ({"TPU_ACCELERATOR_TYPE": "v4-8", "TPU_NAME": "pod-1"}, (), (), "TPU v4-8 (TPU_ACCELERATOR_TYPE)"),  # GKE
        # A TPU VM made with gcloud sets neither variable: its chips show.
        (
            {},
            [("0x1ae0", "0x005e")] * 4,
            ["accel0", "accel1", "accel2", "accel3"],
            "TPU with 4 chips (/dev/accel0, /dev/accel1, /dev/accel2, /dev/accel3)",
        ),
        ({}, [("0x1ae0", "0x0063"), ("0x1ae0", "0x0042")], ["vfio/0", "vfio/vfio"], "TPU with 1 chip (/dev/vfio/0)"),
        # No TPU: Colab's GPU runtime; a name of a TPU somewhere else; the retired TPU Node runtime;
        # NVIDIA's /dev/accel0 (drivers 570+); a Mellanox device handed to vfio; Google's network card.
        (COLAB_GPU, [("0x10de", "0x2b85")], ["nvidia0", "nvidiactl"], None),
        ({"TPU_NAME": "my-tpu"}, (), (), None),
        ({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, (), (), None),
        ({}, [("0x10de", "0x2b85")], ["accel0"], None),
        ({}, [("0x15b3", "0xc2d5")], ["vfio/96", "vfio/vfio"], None),
        ({}, [("0x1ae0", "0x0042")], ["vfio/0"], None),
        # A TPU on the bus whose driver made no device file cannot be used.
        ({}, [("0x1ae0", "0x0063")], (), None),
    ],
    ids=[
        "colab-v5e",
        "colab-untyped",
        "gke",
        "vm-v4",
        "vm-v5e",
        "colab-gpu",
        "tpu-name-only",
        "tpu-node",
        "nvidia-accel",
        "vfio-not-tpu",
        "gvnic",
        "no-driver",
    ],
)
def test_a_tpu_is_found_where_there_is_one(tmp_path, environ, pci, dev, found):
    root = machine(tmp_path, pci, dev)
    assert tpu_runtime(environ, root) == found
    # Without a TPU, strategy_kind picks what it picked before there were TPU runtimes.
    assert strategy_kind("auto", found, gpus=0) == ("tpu" if found else "default")


def test_chips_are_listed_in_order_and_only_with_a_tpu_on_the_bus(tmp_path):
    root = machine(tmp_path, [("0x1ae0", "0x006f")] * 2, ["vfio/1", "vfio/0", "vfio/vfio", "accel"])
    assert tpu_chips(root) == ["/dev/vfio/0", "/dev/vfio/1"]
    assert tpu_chips(str(tmp_path / "nothing")) == []


def test_strategy_kind_for_each_choice():
    tpu = "TPU v2-8 (Colab TPU runtime)"
    assert [strategy_kind("auto", tpu, g) for g in (0, 2)] == ["tpu", "tpu"]
    assert [strategy_kind("auto", None, g) for g in (0, 1, 2)] == ["default", "default", "mirrored"]
    assert strategy_kind("off", tpu, 2) == "default"
    assert strategy_kind("tpu", None, 0) == "tpu"  # asked for: TensorFlow is to find one
    assert strategy_kind("mirrored", tpu, 0) == "mirrored"
    with pytest.raises(RapgenError, match="--distribute must be one of auto, off, mirrored, tpu; got 'gpu'"):
        strategy_kind("gpu", None, 0)


@pytest.mark.parametrize(
    "tf_version, releases, wanted",
    [
        ("2.20.0", None, "2.20.0"),
        ("2.18.0", None, "2.18.0"),
        ("2.19.0", None, "2.19.1"),  # same minor version: its newest TPU build
        ("2.21.0", None, "2.20.0"),  # newer than every TPU build (today's PyPI TensorFlow)
        ("2.22.0rc1", None, "2.20.0"),
        (None, None, "2.20.0"),  # no TensorFlow: the newest TPU build
        ("2.15.1", None, "2.20.0"),  # older than every TPU build (rapgen needs 2.16+): the newest
        ("2.21.0", ("2.20.0", "2.21.0", "2.9.0"), "2.21.0"),  # the day 2.21 gets one; 2.9 < 2.20 numerically
    ],
)
def test_the_tpu_build_follows_the_installed_tensorflow(tf_version, releases, wanted):
    assert tpu_release_for(tf_version, *([releases] if releases else [])) == wanted


def test_pip_commands_for_each_starting_point():
    pip = ["py", "-m", "pip", "install", "-q"]
    tpu = lambda v, *more: pip + [f"tensorflow-tpu=={v}", "--find-links", TPU_WHEELS, *more]  # noqa: E731
    # Colab's TPU runtime today, after `pip install rapgen` brought TensorFlow 2.21 from PyPI.
    assert tpu_install_commands("2.21.0", None, python="py") == [pip + ["tensorflow==2.20.0"], tpu("2.20.0")]
    assert tpu_install_commands("2.20.0", None, python="py") == [tpu("2.20.0")]
    assert tpu_install_commands(None, None, python="py") == [pip + ["tensorflow==2.20.0"], tpu("2.20.0")]
    assert tpu_install_commands("2.18.0", None, python="py") == [tpu("2.18.0")]
    assert tpu_install_commands("2.20.0", "2.20.0", python="py") == []  # run again: nothing to do
    # TensorFlow upgraded over the TPU build: the TPU build is laid over it again.
    assert tpu_install_commands("2.21.0", "2.20.0", python="py") == [
        pip + ["tensorflow==2.20.0"],
        tpu("2.20.0", "--force-reinstall", "--no-deps"),
    ]


@pytest.fixture
def fake_python(tmp_path):
    """An executable standing for the kernel's Python: it appends its arguments to a log and
    exits with the status in FAIL_ON (for the command holding that text) or 0."""
    log = tmp_path / "pip.log"
    script = tmp_path / "python"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> "{log}"\ncase "$*" in *"$FAIL_ON"*) [ -n "$FAIL_ON" ] && exit 3;; esac\nexit 0\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


def test_setup_tpu_installs_on_a_tpu_runtime_only(tmp_path, fake_python, capsys, monkeypatch):
    python, log = fake_python
    root = machine(tmp_path)
    monkeypatch.delenv("FAIL_ON", raising=False)
    # Not a TPU runtime: nothing runs, nothing is said.
    assert setup_tpu(environ=COLAB_GPU, root=root, python=python, tf_version="2.21.0", tpu_version=None) is None
    assert not log.exists() and capsys.readouterr().out == ""

    found = setup_tpu(
        environ=COLAB_TPU, root=root, python=python, tf_version="2.21.0", tpu_version=None, tf_imported=False
    )
    assert found == "TPU v5e-1 (Colab TPU runtime)"
    assert log.read_text().splitlines() == [
        "-m pip install -q tensorflow==2.20.0",
        f"-m pip install -q tensorflow-tpu==2.20.0 --find-links {TPU_WHEELS}",
    ]
    out = capsys.readouterr().out
    assert "TPU v5e-1 (Colab TPU runtime): installing TensorFlow for TPUs" in out
    assert "$ pip install -q tensorflow-tpu==2.20.0" in out and "Restart" not in out

    # Installed already: nothing runs. TensorFlow imported before an install: restart, it says.
    assert setup_tpu(environ=COLAB_TPU, root=root, python=python, tf_version="2.20.0", tpu_version="2.20.0")
    assert "TensorFlow 2.20.0 for TPUs is installed" in capsys.readouterr().out
    setup_tpu(environ=COLAB_TPU, root=root, python=python, tf_version="2.20.0", tpu_version=None, tf_imported=True)
    assert "Runtime > Restart session" in capsys.readouterr().out
    assert len(log.read_text().splitlines()) == 3


def test_a_failed_pip_stops_the_install_with_one_line(tmp_path, fake_python, monkeypatch):
    python, log = fake_python
    monkeypatch.setenv("FAIL_ON", "tensorflow==2.20.0")
    with pytest.raises(RapgenError) as caught:
        setup_tpu(environ=COLAB_TPU, root=machine(tmp_path), python=python, tf_version="2.21.0", tpu_version=None)
    message = str(caught.value)
    assert "\n" not in message and "exited with 3" in message and "install -q tensorflow==2.20.0" in message
    assert log.read_text().splitlines() == ["-m pip install -q tensorflow==2.20.0"]  # the TPU build not tried


def test_auto_picks_bfloat16_on_a_tpu():
    assert compute_dtype("auto", flags={"avx2"}, capability=None, tpu="TPU v2-8 (Colab TPU runtime)") == "bfloat16"
    assert compute_dtype("auto", flags={"avx2"}, capability=None, tpu=None) == "float32"
    assert compute_dtype("off", flags={"avx2"}, capability=None, tpu="TPU v2-8 (Colab TPU runtime)") == "float32"


def test_auto_on_a_tpu_that_tensorflow_cannot_use_says_how_to_fix_it(tmp_path):
    """This TensorFlow is the ordinary build: on a TPU machine it cannot start the TPU, and
    `auto` must say so instead of training on the CPU (as it did, silently)."""
    root = machine(tmp_path, [("0x1ae0", "0x0027")] * 4, ["accel0", "accel1", "accel2", "accel3"])
    for choice in ("auto", "tpu"):
        with pytest.raises(RapgenError) as caught:
            make_strategy(choice, environ={}, root=root)
        message = str(caught.value)
        assert "\n" not in message, message
        assert message.startswith(f"--distribute {choice}: this machine has a TPU with 4 chips"), message
        assert "rapgen.colab.setup_tpu()" in message and "--distribute off" in message
    # The failed attempt leaves TensorFlow as it was: no TPU, one device.
    assert describe(make_strategy("auto", environ={}, root=root + "-none")) == "1 device"
    assert describe(make_strategy("off", environ=COLAB_TPU, root=root)) == "1 device"


@pytest.mark.slow
def test_the_cli_refuses_to_train_on_the_cpu_of_a_tpu_runtime(tmp_path, tiny_model_dir, cli_env):
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text(THREE_SONGS, encoding="utf-8")
    env = {**cli_env, **COLAB_TPU, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rapgen",
            "train",
            "--dataset",
            str(lyrics),
            "--model",
            tiny_model_dir,
            "--checkpoint_dir",
            str(tmp_path / "checkpoints"),
            "--steps",
            "1",
            "--batch_size",
            "1",
            "--sequence_length",
            "16",
            "--val_fraction",
            "0",
            "--mixed_precision",
            "off",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(
        result, "--distribute auto: this machine has a TPU v5e-1 (Colab TPU runtime)", "rapgen.colab.setup_tpu()"
    )
    run = tmp_path / "checkpoints" / "run1"
    assert not run.exists() or not any(name.startswith("model-") for name in os.listdir(run))


def test_notebook_02_installs_for_the_tpu_on_colab_before_tensorflow_is_imported():
    cells = [
        c
        for c in json.loads((ROOT / "notebooks" / "02_finetune.ipynb").read_text())["cells"]
        if c["cell_type"] == "code"
    ]
    setup = "".join(cells[1]["source"])
    tree = ast.parse("\n".join("" if line.lstrip().startswith("!") else line for line in setup.splitlines()))
    calls = sorted((node.lineno, ast.unparse(node.func)) for node in ast.walk(tree) if isinstance(node, ast.Call))
    calls = [name for _, name in calls]
    assert calls.index("rapgen.colab.setup_tpu") < calls.index("rapgen.notebook.setup_report")
    guarded = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and ast.unparse(node.test) == "IN_COLAB"
        and "rapgen.colab.setup_tpu()" in ast.unparse(node)
    ]
    assert guarded, "setup_tpu() runs on Colab only"
    # Nothing before it imports TensorFlow: importing rapgen does not.
    before = setup.split("rapgen.colab.setup_tpu()")[0]
    assert "tensorflow" not in before and "import rapgen.notebook" in before
