"""Atomic writes and the temp files of dead writers: planted names for dead, live and reused pids,
and a real `kill -9` of a process in the middle of writing checkpoints."""

import os
import signal
import subprocess
import sys
import time

import pytest

import rapgen.fileio as fileio
from rapgen.model.folders import latest_checkpoint

DATA = ".data-00000-of-00001"


def touch(path, data=b"x", age=0.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if age:
        now = time.time()
        os.utime(path, (now - age, now - age))
    return path


def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[19])


@pytest.fixture
def live_child():
    """Another process that stays alive for the test: a writer still at work."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    pid_start = (proc.pid, start_time(proc.pid))
    proc.wait()
    assert not os.path.exists(f"/proc/{proc.pid}")
    return pid_start


def test_atomic_writes_name_their_writer_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "counter"
    fileio.atomic_write_text(str(target), "12\n")
    fileio.atomic_copy(str(target), str(tmp_path / "copy"))
    assert sorted(os.listdir(tmp_path)) == ["copy", "counter"]
    tag = fileio.writer_tag()
    assert tag == f"pid{os.getpid()}-t{start_time(os.getpid())}"
    assert fileio.writer_alive(os.getpid(), start_time(os.getpid()))


def test_atomic_open_streams_into_a_tagged_temp_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "rap.txt"
    target.write_text("old\n")
    with pytest.raises(ValueError):
        with fileio.atomic_open(str(target)) as f:
            f.write("half of a new file\n")
            temps = [n for n in os.listdir(tmp_path) if n != "rap.txt"]
            assert len(temps) == 1 and fileio.writer_tag() in temps[0]  # a later cleanup can tell it apart
            raise ValueError("the writer fails mid-way")
    assert os.listdir(tmp_path) == ["rap.txt"] and target.read_text() == "old\n"
    with fileio.atomic_open(str(target)) as f:
        f.write("new\n")
    assert os.listdir(tmp_path) == ["rap.txt"] and target.read_text() == "new\n"


def test_only_temp_files_of_dead_writers_are_removed(tmp_path, live_child, dead_pid):
    run = tmp_path / "run1"
    dead, live = dead_pid, (live_child.pid, start_time(live_child.pid))
    me = (os.getpid(), start_time(os.getpid()))
    reused = (live_child.pid, live[1] + 1)  # the pid now belongs to a process started later
    gone = [
        touch(str(run / f".tmp-model-400-pid{dead[0]}-t{dead[1]}{DATA}.tempstate81723")),
        touch(str(run / f".tmp-model-400-pid{dead[0]}-t{dead[1]}.index")),
        touch(str(run / f".counter.pid{dead[0]}-t{dead[1]}.a8b7c6d5.tmp")),
        touch(str(run / "samples" / f".step-400.txt.pid{dead[0]}-t{dead[1]}.zz11yy22.tmp")),
        touch(str(run / f".tmp-model-500-pid{reused[0]}-t{reused[1]}{DATA}")),
        # Names of rapgen before the writer's start time was in them, and an untagged temp an hour old.
        touch(str(run / f".tmp-model-300-{dead[0]}{DATA}.tempstate5")),
        touch(str(run / ".log.csv.k3j2h1g0.tmp"), age=2 * 3600),
    ]
    kept = [
        touch(str(run / f".tmp-model-600-pid{live[0]}-t{live[1]}{DATA}.tempstate1")),
        touch(str(run / f".train.json.pid{live[0]}-t{live[1]}.q1w2e3r4.tmp")),
        touch(str(run / f".tmp-model-700-pid{me[0]}-t{me[1]}.index")),
        touch(str(run / f".tmp-model-300-{live[0]}.index")),
        touch(str(run / ".log.csv.m9n8b7v6.tmp")),  # untagged and fresh: a writer may be at it
        touch(str(run / f"model-400{DATA}")),
        touch(str(run / ".gitignore")),
        touch(str(run / ".hidden" / f".tmp-model-1-pid{dead[0]}-t{dead[1]}.index")),  # dot folders are not ours
    ]
    assert fileio.remove_dead_temps(str(run)) == sorted(gone)
    for path in gone:
        assert not os.path.exists(path), path
    for path in kept:
        assert os.path.exists(path), path
    assert fileio.remove_dead_temps(str(run)) == []


CHILD = """
import sys
import numpy as np
from rapgen.model.checkpoint import write_checkpoint
folder = sys.argv[1]
big = np.ones((4, 1 << 20), np.float32)  # 16 MB, so a save takes long enough to be caught in
step = 0
while True:
    step += 1
    write_checkpoint(f"{folder}/model-{step}", {"model/wte": big * step})
"""


@pytest.mark.slow
def test_kill_9_mid_save_leaves_temps_that_the_next_cleanup_removes(tmp_path, live_child):
    run = tmp_path / "run1"
    run.mkdir()
    live_tmp = touch(str(run / f".tmp-model-9-pid{live_child.pid}-t{start_time(live_child.pid)}{DATA}.tempstate3"))
    left = []
    for _attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run)], stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        # Kill it the moment a save after the first (which completed) is being written.
        while time.time() < deadline and proc.poll() is None:
            if latest_checkpoint(str(run)) and any(
                n.startswith(".tmp-model-") and n != os.path.basename(live_tmp) for n in os.listdir(run)
            ):
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        left = [n for n in os.listdir(run) if n.startswith(".tmp-model-") and n != os.path.basename(live_tmp)]
        if left:
            break
    assert left, "no kill landed inside a save in 5 tries"
    assert all(f"pid{proc.pid}-" in n for n in left)  # named for their writer
    removed = fileio.remove_dead_temps(str(run))
    assert sorted(os.path.basename(p) for p in removed) == sorted(left)
    assert os.path.exists(live_tmp)
    # The complete checkpoints the writer renamed into place stay, and the newest is whole.
    newest = latest_checkpoint(str(run))
    assert newest is not None and os.path.getsize(newest + DATA) == 4 * 4 * (1 << 20)
