"""Colab glue that degrades gracefully elsewhere: where we run, and secrets.

`get_secret(name)` reads the environment variable `name` first; only inside a Colab notebook does it
then ask Colab's secrets panel (`google.colab.userdata`). Off Colab, or when the secret is missing
or the notebook was not given access to it, it returns None instead of raising, so callers can
say in one line what to set. Secrets are returned, never printed or stored.

(A `!rapgen …` shell cell runs outside the notebook's kernel and cannot reach the secrets panel:
call `rapgen.collect(...)` in a Python cell, or export the variable for the shell.)

>>> on_colab()                                 # doctest: +SKIP
False
>>> token = get_secret("GENIUS_ACCESS_TOKEN")  # None if it is set nowhere

TPU runtimes. Since March 2025 Colab's TPU runtimes come without TensorFlow (googlecolab/colabtools
#5164); Colab's advice is to pip-install `tensorflow-tpu` (TensorFlow built for TPUs) with
`--find-links` on Google's libtpu page, pinned to a TensorFlow version (colabtools #5228), and to
connect with `TPUClusterResolver(tpu="local")`: the TPU is attached to the notebook's own machine
(a TPU VM) since the TPU Node runtime (`COLAB_TPU_ADDR`) was retired in 2024 (colabtools #4481).
`tpu_runtime(environ, root)` says whether this machine has a TPU, `tpu_install_commands(...)` which
pip commands give TensorFlow the TPU, and `setup_tpu()` (notebook 02's set-up cell, on Colab only)
runs them. All three take what they look at as arguments, so tests run them on a fake machine;
nothing here runs at import.

>>> tpu_runtime({"COLAB_TPU_1VM": "1", "TPU_ACCELERATOR_TYPE": "v5e-1"}, root="/nonexistent")
'TPU v5e-1 (Colab TPU runtime)'
>>> [c[3:] for c in tpu_install_commands(tf_version="2.21.0", tpu_version=None, python="python")]
[['install', '-q', 'tensorflow==2.20.0'], ['install', '-q', 'tensorflow-tpu==2.20.0', '--find-links', 'https://storage.googleapis.com/libtpu-tf-releases/index.html']]
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import subprocess
import sys
from typing import List, Mapping, Optional, Sequence

from rapgen.errors import RapgenError

# What google.colab.userdata raises (the set differs between Colab releases).
_USERDATA_ERRORS = ("SecretNotFoundError", "NotebookAccessError", "TimeoutException")


def on_colab() -> bool:
    """True inside a Google Colab runtime (its notebook kernel or a shell it started)."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def get_secret(name: str) -> Optional[str]:
    """The value of `$name`, else (inside a Colab notebook) the Colab secret `name`, else None.

    >>> get_secret("GENIUS_ACCESS_TOKEN")        # doctest: +SKIP
    '…'
    """
    value = os.environ.get(name)
    if value:
        return value
    if "google.colab" not in sys.modules:  # not in a Colab notebook kernel: no secrets panel to ask
        return None
    try:
        from google.colab import userdata
    except ImportError:
        return None
    errors = tuple(
        e
        for e in (getattr(userdata, n, None) for n in _USERDATA_ERRORS)
        if isinstance(e, type) and issubclass(e, Exception)
    )
    try:
        value = userdata.get(name)
    except errors:
        return None
    return value or None


# -- TPU runtimes ------------------------------------------------------------------------------

# Where pip finds the libtpu builds that tensorflow-tpu 2.16-2.18 pin (they are not on PyPI;
# 2.19 and later take libtpu from PyPI, where the extra index does no harm).
TPU_WHEELS = "https://storage.googleapis.com/libtpu-tf-releases/index.html"
# tensorflow-tpu releases on PyPI, oldest first. Checked November 2026: the newest is 2.20.0
# (August 2025), with wheels for Python 3.9-3.13; TensorFlow 2.21 has no TPU build.
TENSORFLOW_TPU_RELEASES = ("2.16.1", "2.16.2", "2.17.0", "2.17.1", "2.18.0", "2.19.1", "2.20.0")

# Google's PCI vendor id and the device ids of its TPU chips (v2/v3, v4, v5p, v5e, v6e, 7x). Other
# Google PCI devices exist (the gVNIC network card), hence the device ids.
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = frozenset({"0x0027", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})


def tpu_chips(root: str = "/") -> List[str]:
    """The TPU chips attached to the machine whose file system starts at `root`: their device files.

    A chip shows as /dev/accel<N> (TPU v2-v4) or /dev/vfio/<N> (v5e, v5p, v6e). Neither name is
    proof alone (NVIDIA's drivers since 570 make /dev/accel* too, and any device handed to vfio
    gets a /dev/vfio group), so they count only where sysfs lists a Google TPU chip on the PCI bus.

    >>> tpu_chips("/nonexistent")
    []
    """

    def read(path):
        try:
            with open(path, encoding="ascii") as f:
                return f.read().strip().lower()
        except (OSError, UnicodeDecodeError):
            return ""

    pci = os.path.join(root, "sys", "bus", "pci", "devices")
    tpus = [
        d
        for d in sorted(glob.glob(os.path.join(pci, "*")))
        if read(os.path.join(d, "vendor")) == GOOGLE_PCI_VENDOR and read(os.path.join(d, "device")) in TPU_PCI_DEVICES
    ]
    if not tpus:
        return []
    dev = os.path.join(root, "dev")
    accel = sorted(os.path.basename(p) for p in glob.glob(os.path.join(dev, "accel[0-9]*")))
    try:
        vfio = sorted(name for name in os.listdir(os.path.join(dev, "vfio")) if name.isdigit())
    except OSError:
        vfio = []
    return ["/dev/" + name for name in accel] + ["/dev/vfio/" + name for name in vfio]


def tpu_runtime(environ: Mapping[str, str], root: str = "/") -> Optional[str]:
    """What shows that this machine has a TPU attached, in words; None where nothing does.

    `environ` stands for the environment variables and `root` for the file system (tests pass
    a fake one of each). Evidence, strongest first:
    - Colab's TPU runtimes set COLAB_TPU_1VM=1 (its other runtimes set it empty) and
      TPU_ACCELERATOR_TYPE (v5e-1, v2-8, v6e-1), as GKE's TPU nodes do;
    - any TPU VM: the chips' device files (`tpu_chips`).
    TPU_NAME alone names a TPU that may be elsewhere, and COLAB_TPU_ADDR belonged to the retired
    TPU Node runtime: neither counts.

    >>> tpu_runtime({"COLAB_TPU_1VM": ""}, root="/nonexistent") is None
    True
    """
    kind = (environ.get("TPU_ACCELERATOR_TYPE") or "").strip()
    colab = (environ.get("COLAB_TPU_1VM") or "").strip() == "1"
    if kind or colab:
        return f"TPU {kind or '(type not named)'}" + (" (Colab TPU runtime)" if colab else " (TPU_ACCELERATOR_TYPE)")
    chips = tpu_chips(root)
    if chips:
        return f"TPU with {len(chips)} chip{'s' if len(chips) > 1 else ''} ({', '.join(chips)})"
    return None


def _version_tuple(version: str) -> tuple:
    # "2.21.0" -> (2, 21, 0); "2.20.0rc1" -> (2, 20, 0): pre-release tags are dropped.
    return tuple(int(part) for part in re.findall(r"\d+", re.match(r"[\d.]*", version).group(0)))


def tpu_release_for(tf_version: Optional[str], releases: Sequence[str] = TENSORFLOW_TPU_RELEASES) -> str:
    """The tensorflow-tpu release to install beside TensorFlow `tf_version` (None: not installed).

    The same version where it exists; else the newest release of the same minor version; else
    the newest older one (TensorFlow newer than every TPU build, as 2.21 is); else the newest.

    >>> tpu_release_for("2.18.0"), tpu_release_for("2.19.0"), tpu_release_for("2.21.0"), tpu_release_for(None)
    ('2.18.0', '2.19.1', '2.20.0', '2.20.0')
    """
    ordered = sorted(releases, key=_version_tuple)
    if tf_version is None:
        return ordered[-1]
    tf = _version_tuple(tf_version)
    if tf_version in ordered:
        return tf_version
    same_minor = [r for r in ordered if _version_tuple(r)[:2] == tf[:2]]
    older = [r for r in ordered if _version_tuple(r) < tf]
    return (same_minor or older or ordered)[-1]


def tpu_install_commands(
    tf_version: Optional[str],
    tpu_version: Optional[str],
    python: str = sys.executable,
    releases: Sequence[str] = TENSORFLOW_TPU_RELEASES,
) -> List[List[str]]:
    """The pip commands that give TensorFlow the TPU, in order; [] when it already has it.

    `tf_version` and `tpu_version` are the installed versions of the `tensorflow` and
    `tensorflow-tpu` distributions (None: not installed). Both install the same `tensorflow`
    package, so `tensorflow` is first brought to the TPU build's version (pip installing
    rapgen brought the newest, which may have no TPU build), then `tensorflow-tpu` is laid over
    it, as Colab advises; where the TPU build is there already but `tensorflow` was changed
    since, it is laid again (--force-reinstall, its dependencies kept).

    >>> tpu_install_commands("2.20.0", "2.20.0", python="python")
    []
    >>> tpu_install_commands("2.20.0", None, python="python")[0][3:6]
    ['install', '-q', 'tensorflow-tpu==2.20.0']
    """
    target = tpu_release_for(tf_version, releases)
    if tf_version == target and tpu_version == target:
        return []
    pip = [python, "-m", "pip", "install", "-q"]
    commands = [] if tf_version == target else [pip + [f"tensorflow=={target}"]]
    again = ["--force-reinstall", "--no-deps"] if tpu_version == target else []
    return commands + [pip + [f"tensorflow-tpu=={target}", "--find-links", TPU_WHEELS] + again]


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a pip distribution, read without importing it; None if absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def setup_tpu(
    environ: Optional[Mapping[str, str]] = None,
    root: str = "/",
    python: str = sys.executable,
    tf_version="detect",
    tpu_version="detect",
    tf_imported: Optional[bool] = None,
) -> Optional[str]:
    """On a TPU runtime, install the TPU build of TensorFlow (see `tpu_install_commands`); else nothing.

    Called by notebook 02's set-up cell on Colab, before anything imports TensorFlow: it
    prints what it found and what it runs, and returns the TPU's description (None: no TPU).
    Where TensorFlow was imported already in this process (`tf_imported`, default: it is in
    sys.modules) the new build loads only after a restart, which it says. A failed pip raises
    RapgenError naming the command. `environ`, `root` and the versions ("detect": ask pip's
    metadata) stand for this machine's, for tests.

    >>> setup_tpu(environ={}, root="/nonexistent") is None
    True
    """
    tpu = tpu_runtime(os.environ if environ is None else environ, root)
    if tpu is None:
        return None
    tf_version = installed_version("tensorflow") if tf_version == "detect" else tf_version
    tpu_version = installed_version("tensorflow-tpu") if tpu_version == "detect" else tpu_version
    commands = tpu_install_commands(tf_version, tpu_version, python=python)
    if not commands:
        print(f"{tpu}: TensorFlow {tpu_version} for TPUs is installed")
        return tpu
    print(f"{tpu}: installing TensorFlow for TPUs (about two minutes)")
    for command in commands:
        print("$ pip " + " ".join(command[3:]))  # python -m pip ...: the pip of this kernel's Python
        done = subprocess.run(command)
        if done.returncode != 0:
            raise RapgenError(
                f"installing TensorFlow for the TPU failed: `{' '.join(command)}` exited with "
                f"{done.returncode}; run it in a cell to see why, or pick a GPU runtime"
            )
    if tf_imported if tf_imported is not None else "tensorflow" in sys.modules:
        print("TensorFlow was imported before this install: Runtime > Restart session, then run all again")
    return tpu
