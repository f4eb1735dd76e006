"""`rapgen.finetune.mirror.mirror`: a run folder copied to a Drive-like folder, and back."""

import os
import shutil

import pytest

import rapgen.fileio as fileio
import rapgen.finetune.mirror as sync
from rapgen.errors import RapgenError
from rapgen.model.checkpoint import list_checkpoints

BIG = sync.SMALL + 4096  # compared by size and time, like checkpoint data files


def put(folder, rel, data):
    path = os.path.join(str(folder), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return path


def tree(folder):
    """rel path -> bytes of every file under folder, dot-files included."""
    out = {}
    for root, _, names in os.walk(str(folder)):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, str(folder))] = f.read()
    return out


def dot_files(folder):
    return [rel for rel in tree(folder) if any(part.startswith(".") for part in rel.split(os.sep))]


def checkpoint(folder, step, fill=b"w"):
    put(folder, f"model-{step}.index", f"index of {step}".encode())
    put(folder, f"model-{step}.data-00000-of-00001", fill * BIG)
    put(folder, "checkpoint", f'model_checkpoint_path: "model-{step}"\nall_model_checkpoint_paths: "model-{step}"\n')
    put(folder, "counter", f"{step}\n")


@pytest.fixture
def run(tmp_path):
    src = tmp_path / "run1"
    checkpoint(src, 2)
    put(src, "hparams.json", '{"n_layer": 2}')
    put(src, "samples/step-2.txt", "<<Lil Tofu - Soy>>\nsoy soy")
    put(src, "log.csv", "step,loss\n1,10.8\n2,10.7\n")
    return src


def test_first_mirror_copies_everything_then_nothing(run, tmp_path):
    dst = tmp_path / "drive" / "run1"
    assert sync.mirror(str(run), str(dst)) == 7
    assert tree(dst) == tree(run)
    assert sync.mirror(str(run), str(dst)) == 0
    assert sync.mirror(str(run), str(dst)) == 0
    # Modification times travel with the files, so big files compare equal next time.
    for rel in tree(run):
        assert abs(os.stat(os.path.join(str(dst), rel)).st_mtime - os.stat(os.path.join(str(run), rel)).st_mtime) < 1e-3


def test_only_new_and_changed_files_are_copied(run, tmp_path, monkeypatch):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    copied = []
    real = sync.atomic_copy
    monkeypatch.setattr(sync, "atomic_copy", lambda s, d: (copied.append(os.path.relpath(d, str(dst))), real(s, d)))
    put(run, "log.csv", "step,loss\n1,10.8\n2,10.7\n3,10.6\n")  # grew
    put(run, "samples/step-3.txt", "new")  # new
    assert sync.mirror(str(run), str(dst)) == 2
    assert sorted(copied) == ["log.csv", os.path.join("samples", "step-3.txt")]
    assert tree(dst) == tree(run)


def test_same_size_rewrite_within_the_same_second_is_seen(run, tmp_path):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    index = os.path.join(str(run), "checkpoint")
    before = os.stat(index)
    with open(index, "rb") as f:
        old = f.read()
    new = old.replace(b"model-2", b"model-4")
    assert len(new) == len(old) and new != old
    with open(index, "wb") as f:
        f.write(new)
    os.utime(index, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same second, to the nanosecond
    put(run, "counter", "4\n")
    os.utime(os.path.join(str(run), "counter"), ns=(before.st_atime_ns, before.st_mtime_ns))
    assert sync.mirror(str(run), str(dst)) == 2
    with open(os.path.join(str(dst), "checkpoint"), "rb") as f:
        assert f.read() == new
    assert tree(dst) == tree(run)


def test_big_files_compare_by_size_and_time(run, tmp_path):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    data = os.path.join(str(run), "model-2.data-00000-of-00001")
    st = os.stat(data)
    put(run, "model-2.data-00000-of-00001", b"x" * (BIG + 1))  # another size
    assert sync.mirror(str(run), str(dst)) == 1
    put(run, "model-2.data-00000-of-00001", b"y" * (BIG + 1))  # same size, written later
    os.utime(data, (st.st_atime + 5, st.st_mtime + 5))
    assert sync.mirror(str(run), str(dst)) == 1
    assert tree(dst) == tree(run)


def test_files_gone_from_the_source_are_pruned(run, tmp_path):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    put(dst, "stray.txt", "only in the mirror")
    checkpoint(run, 4, fill=b"v")
    for suffix in (".index", ".data-00000-of-00001"):
        os.unlink(os.path.join(str(run), "model-2" + suffix))
    os.unlink(os.path.join(str(run), "samples", "step-2.txt"))
    assert sync.mirror(str(run), str(dst)) == 4  # model-4 x2, checkpoint, counter
    assert tree(dst) == tree(run)
    assert not os.path.exists(os.path.join(str(dst), "model-2.index"))


def test_prune_false_keeps_what_only_the_destination_has(run, tmp_path):
    """Restoring from the mirror onto a local folder (a new VM) never deletes local files."""
    local = tmp_path / "local"
    put(local, "notes.txt", "mine")
    assert sync.mirror(str(run), str(local), prune=False) == 7
    assert tree(local) == dict(tree(run), **{"notes.txt": b"mine"})


def test_dot_files_are_never_copied(run, tmp_path):
    put(run, ".model-4.index.abc123.tmp", "half a temp file")
    put(run, ".tmp-model-6-1234.data-00000-of-00001", "being written")
    put(run, ".hidden/inside.txt", "in a dot folder")
    put(run, "samples/.step-5.txt.xyz.tmp", "temp")
    dst = tmp_path / "mirror"
    assert sync.mirror(str(run), str(dst)) == 7
    assert dot_files(dst) == []
    assert sync.mirror(str(run), str(dst)) == 0


def test_index_is_copied_last_and_pruned_first(run, tmp_path, monkeypatch):
    dst = tmp_path / "mirror"
    order = []
    real = sync.atomic_copy
    monkeypatch.setattr(sync, "atomic_copy", lambda s, d: (order.append(os.path.basename(d)), real(s, d)))
    sync.mirror(str(run), str(dst))
    assert order[-1] == "checkpoint" and order.count("checkpoint") == 1
    shutil.rmtree(str(run))
    put(run, "hparams.json", '{"n_layer": 2}')
    # A newer checkpoint without an index (a source with none would not replace the mirror's).
    put(run, "model-4.index", "index of 4")
    put(run, "model-4.data-00000-of-00001", b"v" * BIG)
    removed = []
    real_unlink = os.unlink
    monkeypatch.setattr(sync.os, "unlink", lambda p: (removed.append(os.path.basename(p)), real_unlink(p)))
    sync.mirror(str(run), str(dst))
    monkeypatch.undo()
    assert removed[0] == "checkpoint" and len(removed) == 6


def test_a_failed_copy_leaves_no_partial_file_and_the_old_checkpoint_named(run, tmp_path, monkeypatch):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    good = tree(dst)
    checkpoint(run, 4, fill=b"v")
    for suffix in (".index", ".data-00000-of-00001"):
        os.unlink(os.path.join(str(run), "model-2" + suffix))

    real_copyfile = shutil.copyfile

    def dies_halfway(src, dst_path, *args, **kwargs):
        if src.endswith(".data-00000-of-00001"):
            with open(src, "rb") as a, open(dst_path, "wb") as b:
                b.write(a.read(1000))
            raise OSError(28, "No space left on device")
        return real_copyfile(src, dst_path, *args, **kwargs)

    monkeypatch.setattr(fileio.shutil, "copyfile", dies_halfway)
    with pytest.raises(OSError):
        sync.mirror(str(run), str(dst))
    # No temp file, no half file; the mirror's index still names a checkpoint that is complete.
    assert dot_files(dst) == []
    assert not os.path.exists(os.path.join(str(dst), "model-4.data-00000-of-00001"))
    now = tree(dst)
    assert now["checkpoint"] == good["checkpoint"]
    assert now["model-2.index"] == good["model-2.index"]
    assert now["model-2.data-00000-of-00001"] == good["model-2.data-00000-of-00001"]
    monkeypatch.setattr(fileio.shutil, "copyfile", real_copyfile)
    sync.mirror(str(run), str(dst))
    assert tree(dst) == tree(run) and dot_files(dst) == []


def test_a_checkpoint_rewritten_in_place_never_leaves_a_new_index_beside_old_data(run, tmp_path, monkeypatch):
    # model-best is rewritten in place at every new lowest validation loss, at the same size.
    put(run, "model-best.index", "index of best A")
    put(run, "model-best.data-00000-of-00001", b"a" * BIG)
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    put(run, "model-best.index", "index of best B")
    put(run, "model-best.data-00000-of-00001", b"b" * BIG)
    real, copied = sync.atomic_copy, []

    def disconnects_after_one_file(src, dst_path):
        if copied:
            raise OSError(5, "Input/output error")  # Colab's Drive goes away mid-mirror
        copied.append(os.path.basename(dst_path))
        real(src, dst_path)

    monkeypatch.setattr(sync, "atomic_copy", disconnects_after_one_file)
    with pytest.raises(OSError):
        sync.mirror(str(run), str(dst))
    # The new data came first and the old index is gone: an incomplete model-best, which no
    # listing takes for a checkpoint, instead of index B over data A that passes for whole.
    assert copied == ["model-best.data-00000-of-00001"]
    assert "model-best.index" not in tree(dst)
    assert os.path.join(str(dst), "model-best") not in list_checkpoints(str(dst))
    monkeypatch.undo()
    sync.mirror(str(run), str(dst))
    assert tree(dst) == tree(run)


def test_a_missing_source_changes_nothing(run, tmp_path):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    before = tree(dst)
    with pytest.raises(RapgenError) as e:
        sync.mirror(str(tmp_path / "run_typo"), str(dst))
    assert "run_typo" in str(e.value) and "\n" not in str(e.value)
    assert tree(dst) == before


def test_mirror_back_restores_a_run_on_an_empty_folder(run, tmp_path):
    drive = tmp_path / "drive" / "run1"
    sync.mirror(str(run), str(drive))
    fresh = tmp_path / "new_vm" / "checkpoints" / "run1"
    assert sync.mirror(str(drive), str(fresh), prune=False) == 7
    assert tree(fresh) == tree(run)


def test_temp_files_of_a_killed_copy_are_cleaned_up(run, tmp_path):
    """A VM that vanishes mid-copy leaves `.name.XXXX.tmp` in the mirror; the next mirror removes it."""
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    put(dst, ".model-4.data-00000-of-00001.k3j2h1.tmp", b"v" * 1000)  # what the killed copy wrote
    put(dst, "samples/.step-4.txt.a1b2c3.tmp", "half")
    checkpoint(run, 4, fill=b"v")
    sync.mirror(str(run), str(dst))
    assert dot_files(dst) == []
    assert tree(dst) == tree(run)
    # Restoring into a local folder (prune=False) leaves that folder's own files alone.
    local = tmp_path / "local"
    put(local, ".keep.me.tmp", "not ours")
    sync.mirror(str(dst), str(local), prune=False)
    assert dot_files(local) == [".keep.me.tmp"]


def test_a_mirror_newer_than_the_source_is_never_pruned(run, tmp_path):
    """Another machine trained further into the mirror: mirroring the older run there changes nothing."""
    dst = tmp_path / "drive" / "run1"
    newer = tmp_path / "colab_run"
    checkpoint(newer, 8, fill=b"n")
    put(newer, "log.csv", "step,loss\n8,9.1\n")
    sync.mirror(str(newer), str(dst))
    before = tree(dst)
    with pytest.raises(sync.MirrorIsNewer) as e:
        sync.mirror(str(run), str(dst))  # the local run is at step 2
    message = str(e.value)
    assert "\n" not in message and "model-8" in message and "model-2" in message
    assert "--restore_from " + os.path.join(str(dst), "model-8") in message
    assert tree(dst) == before
    # A source with no checkpoint at all replaces none either.
    empty = tmp_path / "empty"
    put(empty, "hparams.json", "{}")
    with pytest.raises(sync.MirrorIsNewer):
        sync.mirror(str(empty), str(dst))
    assert tree(dst) == before


def test_a_source_at_the_same_or_a_newer_step_prunes_as_usual(run, tmp_path):
    dst = tmp_path / "mirror"
    sync.mirror(str(run), str(dst))
    checkpoint(run, 2, fill=b"s")  # rewritten at the same step (a resumed run saving again), later
    data = os.path.join(str(run), "model-2.data-00000-of-00001")
    os.utime(data, (os.stat(data).st_atime + 5, os.stat(data).st_mtime + 5))
    assert sync.mirror(str(run), str(dst)) == 1
    assert tree(dst) == tree(run)
    checkpoint(run, 6, fill=b"x")
    for suffix in (".index", ".data-00000-of-00001"):
        os.unlink(os.path.join(str(run), "model-2" + suffix))
    sync.mirror(str(run), str(dst))
    assert tree(dst) == tree(run) and not os.path.exists(os.path.join(str(dst), "model-2.index"))


def test_newest_checkpoint_goes_by_step_not_by_the_index(tmp_path):
    folder = tmp_path / "run"
    checkpoint(folder, 12)
    checkpoint(folder, 9)  # the index now names model-9
    assert sync.newest_checkpoint(str(folder)).endswith("model-12")
    assert sync.newest_checkpoint(str(tmp_path / "nothing")) is None
