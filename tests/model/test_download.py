"""`rapgen download` against a loopback HTTP mirror serving a tiny model (no other network)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

import rapgen.model.download as dl
from rapgen.errors import RapgenError
from rapgen.model.hparams import HParams
from rapgen.model.release import META

from support.http_mirror import ModelMirror
from support.loopback import HangingServer, refused_port

WEIGHTS = dl.WEIGHTS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model):
    """The served model: `rapgen init` output, laid out like OpenAI's release minus `.meta`."""
    model_dir = tiny_model(tmp_path_factory.mktemp("served") / "tiny", n_layer=2, n_embd=32, n_head=2, n_ctx=64, seed=0)
    assert sorted(os.listdir(model_dir)) == sorted(f for f in dl.FILES if f != META)
    assert os.path.getsize(os.path.join(model_dir, WEIGHTS)) == 4 * HParams.load(model_dir).n_params()
    return model_dir


@pytest.fixture
def mirror(tiny):
    with ModelMirror({"355M": tiny}) as m:
        yield m


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    monkeypatch.delenv(dl.ENV_BASE_URL, raising=False)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _assert_same(served, got):
    for name in os.listdir(served):
        assert _read(os.path.join(got, name)) == _read(os.path.join(served, name)), name
    leftovers = [n for n in os.listdir(got) if n.endswith(".part")]
    assert leftovers == []


def _looks_complete(model_dir):
    return os.path.exists(os.path.join(model_dir, "checkpoint"))


def test_full_download_is_byte_identical_and_writes_checkpoint_last(tiny, mirror, tmp_path):
    got = dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert got == os.path.join(str(tmp_path), "355M")
    _assert_same(tiny, got)
    assert not os.path.exists(os.path.join(got, META))  # optional, absent on this mirror
    gets = [r.path.rsplit("/", 1)[1] for r in mirror.requests if r.method == "GET"]
    assert gets[0] == "hparams.json" and gets[-1] == "checkpoint"
    assert sorted(gets) == sorted(dl.FILES)


def test_optional_meta_is_fetched_when_the_mirror_has_it(tiny, tmp_path):
    served = str(tmp_path / "served")
    shutil.copytree(tiny, served)
    with open(os.path.join(served, META), "wb") as f:
        f.write(b"graph" * 100)
    with ModelMirror({"124M": served}) as m:
        got = dl.download("124M", models_dir=str(tmp_path / "models"), base_url=m.url, quiet=True)
    _assert_same(served, got)


def test_old_names_are_stored_under_the_new_ones(tiny, tmp_path):
    with ModelMirror({"355M": tiny, "124M": tiny}) as m:
        a = dl.download("345M", models_dir=str(tmp_path), base_url=m.url, quiet=True)
        b = dl.download("117M", models_dir=str(tmp_path), base_url=m.url, quiet=True)
        assert {r.path.split("/")[1] for r in m.requests} == {"355M", "124M"}
    assert a == os.path.join(str(tmp_path), "355M") and b == os.path.join(str(tmp_path), "124M")
    _assert_same(tiny, a)
    _assert_same(tiny, b)


def test_complete_directory_is_skipped_without_any_request(tiny, mirror, tmp_path):
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    mirror.reset_log()
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert mirror.requests == []


def test_interrupted_directory_fetches_only_what_is_missing(tiny, mirror, tmp_path, capsys):
    got = dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    os.remove(os.path.join(got, "checkpoint"))
    os.remove(os.path.join(got, "vocab.bpe"))
    mirror.reset_log()
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url)
    fetched = sorted(r.path for r in mirror.requests if r.method == "GET")
    assert fetched == ["/355M/checkpoint", f"/355M/{META}", "/355M/vocab.bpe"]
    err = capsys.readouterr().err
    assert "hparams.json: already complete" in err and "vocab.bpe: 100%" in err  # a progress bar
    _assert_same(tiny, got)


def test_damaged_weights_are_fetched_again_and_the_marker_goes_first(tiny, mirror, tmp_path):
    got = dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    with open(os.path.join(got, WEIGHTS), "r+b") as f:
        f.truncate(1000)
    mirror.fault(f"/355M/{WEIGHTS}", "error500")
    with pytest.raises(RapgenError):
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True, retries=0)
    assert not _looks_complete(got)
    mirror.clear_faults()
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    _assert_same(tiny, got)


def test_partial_file_is_resumed_with_a_range_request(tiny, mirror, tmp_path):
    model_dir = tmp_path / "355M"
    model_dir.mkdir()
    data = _read(os.path.join(tiny, WEIGHTS))
    keep = len(data) // 3
    (model_dir / (WEIGHTS + ".part")).write_bytes(data[:keep])
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    gets = mirror.gets(f"/355M/{WEIGHTS}")
    assert [(r.range, r.status) for r in gets] == [(f"bytes={keep}-", 206)]
    _assert_same(tiny, str(model_dir))


def test_server_without_range_support_restarts_from_zero(tiny, mirror, tmp_path):
    model_dir = tmp_path / "355M"
    model_dir.mkdir()
    data = _read(os.path.join(tiny, WEIGHTS))
    (model_dir / (WEIGHTS + ".part")).write_bytes(data[:1000])
    mirror.fault(f"/355M/{WEIGHTS}", "ignore_range")
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert [r.status for r in mirror.gets(f"/355M/{WEIGHTS}")] == [200]
    _assert_same(tiny, str(model_dir))


def test_part_holding_the_whole_file_is_finished_on_416(tiny, mirror, tmp_path):
    model_dir = tmp_path / "355M"
    model_dir.mkdir()
    vocab = _read(os.path.join(tiny, "vocab.bpe"))
    (model_dir / "vocab.bpe.part").write_bytes(vocab)
    (model_dir / "encoder.json.part").write_bytes(_read(os.path.join(tiny, "encoder.json")) + b"junk")
    dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert [r.status for r in mirror.gets("/355M/vocab.bpe")] == [416]
    assert [r.status for r in mirror.gets("/355M/encoder.json")] == [416, 200]  # stale: restarted
    _assert_same(tiny, str(model_dir))


def test_dropped_connection_is_resumed(tiny, mirror, tmp_path):
    mirror.fault(f"/355M/{WEIGHTS}", "drop", times=1)
    got = dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    first, second = mirror.gets(f"/355M/{WEIGHTS}")
    assert (first.range, first.status, second.status) == (None, 200, 206)
    # what arrived before the drop was kept (up to the chunk being read when it broke)
    resumed_at = int(second.range.removeprefix("bytes=").removesuffix("-"))
    half = os.path.getsize(os.path.join(tiny, WEIGHTS)) // 2
    assert half - dl.CHUNK_BYTES < resumed_at <= half
    _assert_same(tiny, got)


@pytest.mark.parametrize("filename", ["hparams.json", WEIGHTS])
def test_connection_that_always_drops_gives_up_with_a_clear_error(tiny, mirror, tmp_path, filename):
    # Each drop sends half of what is left and closes. urllib3 hands over whole chunks only, so
    # the 85 bytes of hparams.json never arrive, while the weights (MBs) progress until the
    # remainder fits in a chunk; then `retries + 1` attempts in a row fail without progress.
    mirror.fault(f"/355M/{filename}", "drop")
    with pytest.raises(RapgenError, match=f"giving up on .*{filename} after 3 attempts without progress") as caught:
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True, retries=2)
    assert not os.path.exists(tmp_path / "355M" / filename)
    if filename == WEIGHTS:  # bytes were received: they stay, and the message offers the resume
        assert "run the same command again to resume" in str(caught.value)
        assert os.path.getsize(tmp_path / "355M" / (WEIGHTS + ".part")) > dl.CHUNK_BYTES
    else:  # nothing was received: no resume to offer, and no empty folder left behind
        assert "resume" not in str(caught.value) and "try again later" in str(caught.value)
        assert os.listdir(tmp_path) == []


def test_404_on_a_required_file_names_the_url_and_saves_nothing_complete(tiny, mirror, tmp_path):
    mirror.fault("/355M/vocab.bpe", "not_found")
    with pytest.raises(RapgenError, match=r"/355M/vocab\.bpe was not found .*--base_url") as err:
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert "\n" not in str(err.value) and dl.ENV_BASE_URL in str(err.value)
    model_dir = tmp_path / "355M"
    assert not _looks_complete(model_dir)
    assert sorted(os.listdir(model_dir)) == ["encoder.json", "hparams.json"]
    assert mirror.gets(f"/355M/{WEIGHTS}") == []  # failed before the big download


def test_truncated_body_is_detected(tiny, mirror, tmp_path):
    mirror.fault("/355M/vocab.bpe", "truncate")  # Content-Length 100 bytes more than sent
    size = os.path.getsize(os.path.join(tiny, "vocab.bpe"))
    with pytest.raises(RapgenError, match=rf"vocab\.bpe.*body stopped after \d+ of {size + 100} bytes"):
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True, retries=2)
    model_dir = tmp_path / "355M"
    assert not os.path.exists(model_dir / "vocab.bpe") and not _looks_complete(model_dir)
    assert len(mirror.gets("/355M/vocab.bpe")) == 4  # one that made progress, then 3 that did not


def test_weights_of_the_wrong_size_are_rejected(tiny, tmp_path):
    served = str(tmp_path / "served")
    shutil.copytree(tiny, served)
    with open(os.path.join(served, WEIGHTS), "ab") as f:
        f.write(b"\0" * 8)
    with ModelMirror({"355M": served}) as m:
        with pytest.raises(RapgenError, match="4 bytes per parameter"):
            dl.download("355M", models_dir=str(tmp_path / "models"), base_url=m.url, quiet=True)
    model_dir = tmp_path / "models" / "355M"
    assert not os.path.exists(model_dir / WEIGHTS)
    assert not os.path.exists(model_dir / (WEIGHTS + ".part"))
    assert not _looks_complete(model_dir)


def test_error_page_with_status_500_is_never_saved(tiny, mirror, tmp_path):
    mirror.fault("/355M/encoder.json", "error500")
    with pytest.raises(RapgenError, match="HTTP 500"):
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True, retries=1)
    model_dir = tmp_path / "355M"
    assert not os.path.exists(model_dir / "encoder.json")
    assert not os.path.exists(model_dir / "encoder.json.part")
    assert len(mirror.gets("/355M/encoder.json")) == 2


def test_a_passing_500_is_retried(tiny, mirror, tmp_path):
    mirror.fault("/355M/encoder.json", "error500", times=1)
    got = dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert [r.status for r in mirror.gets("/355M/encoder.json")] == [500, 200]
    _assert_same(tiny, got)


def test_a_429_waits_what_its_retry_after_asks(tiny, mirror, tmp_path, capsys):
    # The autouse fixture makes the backoff 0 s: a 0.3 s wait can only come from the header.
    mirror.fault("/355M/vocab.bpe", "slow_down", times=1)
    start = time.monotonic()
    got = dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url)
    assert time.monotonic() - start >= 0.3
    assert [r.status for r in mirror.gets("/355M/vocab.bpe")] == [429, 200]
    assert "vocab.bpe: HTTP 429 Too Many Requests; retrying in 0.3 s (attempt 2 of 6)" in capsys.readouterr().err
    _assert_same(tiny, got)


def test_a_429_asking_for_a_long_wait_stops_with_one_line(tiny, mirror, tmp_path):
    mirror.retry_after = "3600"
    mirror.fault("/355M/vocab.bpe", "slow_down")
    with pytest.raises(RapgenError, match=r"vocab.bpe: the server asks to wait 3600 s .*try again later"):
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True)
    assert len(mirror.gets("/355M/vocab.bpe")) == 1
    assert not os.path.exists(tmp_path / "355M" / "vocab.bpe")


@pytest.mark.parametrize(
    "filename, content",
    [
        ("encoder.json", "<html><body>Please sign in</body></html>"),  # a portal's page, status 200
        ("checkpoint", 'model_checkpoint_path: "model-100"\n'),  # names files that are not fetched
    ],
)
def test_files_that_are_not_what_they_claim_are_rejected(tiny, tmp_path, filename, content):
    served = str(tmp_path / "served")
    shutil.copytree(tiny, served)
    with open(os.path.join(served, filename), "w") as f:
        f.write(content)
    with ModelMirror({"355M": served}) as m:
        with pytest.raises(RapgenError, match=f"not a valid {filename}"):
            dl.download("355M", models_dir=str(tmp_path / "models"), base_url=m.url, quiet=True)
    model_dir = tmp_path / "models" / "355M"
    assert not os.path.exists(model_dir / filename)
    assert not os.path.exists(model_dir / (filename + ".part"))
    assert not _looks_complete(model_dir)


def test_base_url_comes_from_the_environment(tiny, mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.ENV_BASE_URL, mirror.url + "/")
    got = dl.download("355M", models_dir=str(tmp_path / "a"), quiet=True)
    _assert_same(tiny, got)
    # --base_url wins over the environment
    monkeypatch.setenv(dl.ENV_BASE_URL, "http://127.0.0.1:9/nothing")
    got = dl.download("355M", models_dir=str(tmp_path / "b"), base_url=mirror.url, quiet=True)
    _assert_same(tiny, got)


def test_bad_names_and_urls_are_user_errors(tmp_path):
    with pytest.raises(RapgenError, match="124M.*355M.*774M.*1558M"):
        dl.download("999M", models_dir=str(tmp_path))
    with pytest.raises(RapgenError, match="http"):
        dl.download("124M", models_dir=str(tmp_path), base_url="ftp://example.com/models")
    assert os.listdir(tmp_path) == []


def _cli(env, *args, cwd=None):
    # cwd: anywhere but the source tree, so the installed package is what runs
    return subprocess.run(
        [sys.executable, "-m", "rapgen", "download", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_404_is_one_line_and_exit_status_2(mirror, tmp_path, cli_env):
    done = _cli(cli_env, "124M", "--models_dir", str(tmp_path), "--base_url", mirror.url, cwd=str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapgen: error:"), done.stderr
    assert "/124M/hparams.json" in lines[0]


def test_cli_downloads_and_prints_the_directory(tiny, mirror, tmp_path, capfd):
    # in-process (the subprocess above covers the real entry point): fire maps NAME positionally
    from rapgen.cli.commands import main

    assert main(["download", "345M", "--models_dir", str(tmp_path), "--base_url", mirror.url, "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() == os.path.join(str(tmp_path), "355M") and err == ""
    _assert_same(tiny, out.strip())


# --- offline: a refused port, a server that never answers, and what the next command finds ---

LYRICS = (
    "<<Lil Tofu - Bean Curd Bounce>>\n[Hook]\nsoy on my wrist and the tempeh on ice\n<|endoftext|>\n"
    "<<MC Fjord - Kall Natt>>\n[Verse 1: MC Fjord]\ncold harbour lights and the ferry runs late\n<|endoftext|>\n"
)


def test_offline_says_each_retry_and_ends_with_one_short_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.01)
    port = refused_port()
    models = tmp_path / "models"
    with pytest.raises(RapgenError) as caught:
        dl.download("124M", models_dir=str(models), base_url=f"http://127.0.0.1:{port}", retries=2)
    message = str(caught.value)
    assert message.startswith(f"could not connect to 127.0.0.1:{port} (connection refused")
    assert "--base_url" in message and dl.ENV_BASE_URL in message and "connection" in message
    assert "resume" not in message  # nothing was received
    assert "\n" not in message and len(message) < 220
    retries = capsys.readouterr().err.strip().splitlines()
    assert retries == [
        f"hparams.json: could not connect to 127.0.0.1:{port} (connection refused); "
        f"retrying in {w} s (attempt {n} of 3)"
        for w, n in (("0.01", 2), ("0.02", 3))
    ]
    assert not models.exists()  # no empty models/124M/ that would stop the next command


def test_a_server_that_never_answers_times_out_and_leaves_no_folder(tmp_path):
    models = tmp_path / "models"
    models.mkdir()  # the user's folder stays; only what the download created goes
    with HangingServer() as server:
        host = server.url.removeprefix("http://")
        started = time.monotonic()
        with pytest.raises(RapgenError) as caught:
            dl.download("124M", models_dir=str(models), base_url=server.url, timeout=0.2, retries=1, quiet=True)
        elapsed = time.monotonic() - started
    assert str(caught.value).startswith(f"could not connect to {host} (no answer within 0.2 s")
    assert elapsed < 10  # two attempts of 0.2 s, not the 60 s default
    assert os.listdir(models) == []


def test_resume_is_offered_only_when_something_was_received(tiny, mirror, tmp_path):
    mirror.fault(f"/355M/{WEIGHTS}", "error500")
    with pytest.raises(RapgenError, match="HTTP 500"):
        dl.download("355M", models_dir=str(tmp_path), base_url=mirror.url, quiet=True, retries=0)
    kept = sorted(os.listdir(tmp_path / "355M"))
    assert kept == ["encoder.json", "hparams.json", "model.ckpt.index", "vocab.bpe"]
    port = refused_port()
    with pytest.raises(
        RapgenError, match=f"could not connect to 127.0.0.1:{port}.*run the same command again to resume"
    ):
        dl.download("355M", models_dir=str(tmp_path), base_url=f"http://127.0.0.1:{port}", quiet=True, retries=0)
    assert sorted(os.listdir(tmp_path / "355M")) == kept  # what was received stays for the resume


@pytest.mark.slow
def test_cli_offline_is_short_and_the_next_train_downloads(tiny, tmp_path, cli_env):
    env = dict(cli_env, RAPGEN_MODEL_URL=f"http://127.0.0.1:{refused_port()}")
    done = _cli(env, "124M", "--retries", "1", cwd=str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("hparams.json: could not connect to 127.0.0.1:") and "(attempt 2 of 2)" in lines[0]
    assert lines[1].startswith("rapgen: error: could not connect to 127.0.0.1:") and len(lines[1]) < 240
    assert not (tmp_path / "models").exists()

    # back online: train --model 124M downloads the model it names
    (tmp_path / "lyrics.txt").write_text(LYRICS, encoding="utf-8")
    with ModelMirror({"124M": tiny}) as m:
        env = dict(cli_env, RAPGEN_MODEL_URL=m.url)
        trained = subprocess.run(
            [
                sys.executable,
                "-m",
                "rapgen",
                "train",
                "--dataset",
                "lyrics.txt",
                "--model",
                "124M",
                "--steps",
                "1",
                "--batch_size",
                "1",
                "--sequence_length",
                "8",
                "--save_every",
                "0",
                "--sample_every",
                "0",
                "--val_every",
                "0",
                "--mixed_precision",
                "off",
                "--quiet",
            ],
            cwd=str(tmp_path),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert trained.returncode == 0, trained.stderr
    _assert_same(tiny, str(tmp_path / "models" / "124M"))


@pytest.mark.parametrize("left", ["empty", "killed"])
def test_train_finishes_a_download_that_an_older_run_left(tiny, mirror, tmp_path, monkeypatch, left):
    from rapgen.finetune.loop import train

    model_dir = tmp_path / "models" / "355M"
    if left == "empty":
        model_dir.mkdir(parents=True)  # what rapgen 0.1 left after an offline download
    else:
        mirror.fault("/355M/vocab.bpe", "not_found")
        with pytest.raises(RapgenError):
            dl.download("355M", models_dir=str(tmp_path / "models"), base_url=mirror.url, quiet=True)
        mirror.clear_faults()
        assert sorted(os.listdir(model_dir)) == ["encoder.json", "hparams.json"]
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text(LYRICS, encoding="utf-8")
    mirror.reset_log()
    monkeypatch.setenv(dl.ENV_BASE_URL, mirror.url)
    result = train(
        dataset=str(lyrics),
        model="355M",
        models_dir=str(tmp_path / "models"),
        checkpoint_dir=str(tmp_path / "runs"),
        steps=1,
        batch_size=1,
        sequence_length=8,
        save_every=0,
        sample_every=0,
        val_every=0,
        print_every=0,
        mixed_precision="off",
        quiet=True,
    )
    assert result["step"] == 1
    fetched = {r.path.rsplit("/", 1)[1] for r in mirror.requests if r.method == "GET"}
    assert ("hparams.json" in fetched) == (left == "empty")  # a killed download is finished, not restarted
    _assert_same(tiny, str(model_dir))


def test_sample_on_an_unfinished_download_says_how_to_finish_it(tmp_path):
    from rapgen.model.folders import resolve_model_dir

    (tmp_path / "124M").mkdir()
    (tmp_path / "124M" / (WEIGHTS + ".part")).write_bytes(b"\0" * 64)
    with pytest.raises(RapgenError, match=r"unfinished download.*rapgen download 124M --models_dir"):
        resolve_model_dir("124M", str(tmp_path))
    assert os.listdir(tmp_path / "124M") == [WEIGHTS + ".part"]  # kept for the resume
