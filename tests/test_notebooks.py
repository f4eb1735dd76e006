"""The Colab notebooks: their shape (checked statically) and a real run of each, top to bottom.

The runs use the smoke configuration (`RAPGEN_SMOKE=1`, docs/architecture.md) in a temporary folder:
a tiny model served by a loopback mirror through `RAPGEN_MODEL_URL`, so the download cell
really downloads; a loopback imitation of the Genius API and song pages serving the project's
sample lyrics, so the collection cell really collects; a few training steps; a few tokens.

Each notebook runs in its own IPython kernel started from this interpreter, two ways:

* headless, by nbclient, as papermill, `jupyter nbconvert --execute` and CI services run
  notebooks: no stdin, so `input()` in the interactive cell raises StdinNotImplementedError,
  which `rapgen.interactive` must take as the end of the loop (one line, no error). 01 and 02
  run this way, and 03 once too;
* interactively, through jupyter_client's `execute_interactive` with stdin allowed, so the
  prompt in 03 is answered like a person would: a prompt, then Ctrl-D ("\\x04", which
  ipykernel turns into EOFError and `rapgen.interactive` takes as the end).

The whole series takes about a minute and a half on two CPU cores (mostly TensorFlow starting
in each kernel); `-k 03` runs what one notebook needs.
"""

from __future__ import annotations

import ast
import html
import http.server
import json
import os
import pathlib
import re
import shutil
import sys
import threading
import urllib.parse

import nbformat
import pytest

from support.helpers import ROOT
from support.http_mirror import ModelMirror

pytestmark = pytest.mark.slow  # the notebooks run headless in Jupyter kernels

NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_collect_lyrics.ipynb", "02_finetune.ipynb", "03_rap.ipynb", "04_perform.ipynb"]
SAMPLE_LYRICS = ROOT / "data" / "sample_lyrics.txt"
FAKE_TOKEN = "fake-genius-token-0123456789abcdef"
CELL_TIMEOUT_S = 240
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def load(name):
    return nbformat.read(str(NOTEBOOKS / name), as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def python_source(source: str) -> str:
    """A cell's source without IPython's `!shell` and `%magic` lines, for `ast`."""
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in source.splitlines())


# -- the notebooks' shape ----------------------------------------------------------------


def test_the_series_is_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nbformat.validate(load(name))


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_stripped(name):
    nb = load(name)
    for i, cell in enumerate(code_cells(nb)):
        assert cell.outputs == [], f"{name}: code cell {i} keeps its outputs"
        assert cell.execution_count is None, f"{name}: code cell {i} keeps an execution count"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("name", NAMES)
def test_cells_define_nothing(name):
    """Logic lives in the tested package: no def, class or lambda in a cell."""
    for i, cell in enumerate(code_cells(load(name))):
        tree = ast.parse(python_source(cell.source))
        for node in ast.walk(tree):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{name}: code cell {i} defines {type(node).__name__} at line {node.lineno}"
            )


@pytest.mark.parametrize("name", NAMES)
def test_badge_points_at_its_own_file(name):
    nb = load(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert "colab-badge.svg" in first.source
    everything = "\n".join(c.source for c in nb.cells)
    urls = re.findall(r"https://colab\.research\.google\.com/github/[^)\s\"']+", everything)
    assert len(urls) == 1, urls
    own_path = r"https://colab\.research\.google\.com/github/[\w.-]+/rapgen/blob/main/notebooks/" + re.escape(name)
    assert re.fullmatch(own_path, urls[0]), urls[0]
    assert urls[0].endswith("/notebooks/" + name)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_cell_is_a_form(name):
    """The first code cell is a Colab form; every setting in it is a form field."""
    cells = code_cells(load(name))
    params = cells[0]
    assert params.source.startswith("#@title"), "the parameter cell should open with #@title"
    assert params.metadata.get("cellView") == "form"
    assignments = [line for line in params.source.splitlines() if re.match(r"^[A-Za-z_]\w* = ", line)]
    assert assignments
    for line in assignments:
        field = r"[A-Z_][A-Z0-9_]* = .+  #@param (\[.*\]( \{allow-input: true\})?|\{type:\s*\"\w+\".*\})"
        assert re.fullmatch(field, line), line
        value = line.split("  #@param")[0].split(" = ", 1)[1]
        ast.literal_eval(value)  # a form field holds a literal
    # Dropdowns offer their default.
    for line in assignments:
        found = re.fullmatch(r"\w+ = (.+?)  #@param (\[.*?\])", line)
        if found:
            assert ast.literal_eval(found.group(1)) in ast.literal_eval(found.group(2)), line


@pytest.mark.parametrize("name", NAMES)
def test_setup_installs_on_colab_only_and_reports(name):
    cells = code_cells(load(name))
    setup = cells[1].source
    assert 'IN_COLAB = "google.colab" in sys.modules' in setup
    install = re.search(
        r'^if IN_COLAB:\n\s+get_ipython\(\)\.system\("pip install -q git\+https://github\.com/[\w.-]+/rapgen"\)',
        setup,
        re.M,
    )
    assert install, "pip install from the repository, under `if IN_COLAB:`"
    assert " -e " not in setup and "--editable" not in setup
    assert "rapgen.notebook.setup_report()" in setup
    assert "rapgen.notebook.drive_folder()" in cells[2].source
    everything = "\n".join(c.source for c in cells)
    assert "drive.mount" not in everything and "userdata" not in everything


@pytest.mark.parametrize("name", NAMES)
def test_each_code_cell_follows_a_sentence(name):
    cells = load(name).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code":
            assert i > 0 and cells[i - 1].cell_type == "markdown" and cells[i - 1].source.strip(), (
                f"{name}: cell {i} has no markdown above it"
            )


@pytest.mark.parametrize("name", NAMES)
def test_after_setup_cells_only_call_rapgen(name):
    """Past the form and the setup, a statement assigns or calls, and the calls go to rapgen."""
    cells = code_cells(load(name))
    for cell in cells[2:]:
        for node in ast.walk(ast.parse(python_source(cell.source))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                root = node.func
                while isinstance(root, ast.Attribute):
                    root = root.value
                assert isinstance(root, ast.Name) and root.id == "rapgen", ast.unparse(node)
            elif isinstance(node, ast.Call):
                raise AssertionError(f"{name}: a call outside rapgen: {ast.unparse(node)}")


# -- a loopback Genius -------------------------------------------------------------------


class SampleGenius:
    """The Genius API (`/search`, `/artists/:id/songs`) and song pages, serving the sample lyrics."""

    def __init__(self, lyrics_path):
        from rapgen.data.lyrics import parse_songs

        songs = parse_songs(pathlib.Path(lyrics_path).read_text(encoding="utf-8"))
        self.artists = {}  # name -> id
        self.songs = []  # dicts: id, title, path, artist, artist_id, lyrics
        for song in songs:
            artist_id = self.artists.setdefault(song.artist, len(self.artists) + 1)
            song_id = 1000 + len(self.songs)
            self.songs.append(
                {
                    "id": song_id,
                    "title": song.title,
                    "path": f"/song-{song_id}-lyrics",
                    "artist": song.artist,
                    "artist_id": artist_id,
                    "lyrics": song.lyrics,
                }
            )
        self.headers = []  # (path, Authorization header or None)
        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    def listing(self, song):
        return {
            "id": song["id"],
            "title": song["title"],
            "path": song["path"],
            "instrumental": False,
            "primary_artist": {"id": song["artist_id"], "name": song["artist"]},
        }

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, body: bytes, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def api(self, response):
                body = json.dumps({"meta": {"status": 200}, "response": response}).encode()
                self.send(200, body, "application/json; charset=utf-8")

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                with fake.lock:
                    fake.headers.append((url.path, self.headers.get("Authorization")))
                if url.path.startswith("/api/"):
                    if self.headers.get("Authorization") != f"Bearer {FAKE_TOKEN}":
                        return self.send(401, b'{"meta": {"status": 401}}', "application/json")
                    route = url.path[len("/api") :]
                    if route == "/search":
                        q = query.get("q", [""])[0].casefold()
                        mine = [s for s in fake.songs if s["artist"].casefold() == q]
                        return self.api({"hits": [{"type": "song", "result": fake.listing(s)} for s in mine[:10]]})
                    found = re.fullmatch(r"/artists/(\d+)/songs", route)
                    if found:
                        songs = [fake.listing(s) for s in fake.songs if s["artist_id"] == int(found.group(1))]
                        return self.api({"songs": songs, "next_page": None})
                    return self.send(404, b'{"meta": {"status": 404}}', "application/json")
                song = next((s for s in fake.songs if s["path"] == url.path), None)
                if song is None:
                    return self.send(404, b"<html><body>not found</body></html>", "text/html")
                lines = "<br/>".join(html.escape(line) for line in song["lyrics"].split("\n"))
                page = (
                    f"<html><head><title>{html.escape(song['title'])} Lyrics</title></head><body>"
                    f'<div data-exclude-from-selection="true">{len(song["title"])} Contributors</div>'
                    f'<div data-lyrics-container="true">{lines}</div></body></html>'
                )
                self.send(200, page.encode("utf-8"), "text/html; charset=utf-8")

        return Handler


# -- running a notebook in a kernel ------------------------------------------------------


class Kernel:
    """An IPython kernel of this interpreter, in `cwd` with `env`; `run(nb)` executes its code cells."""

    def __init__(self, cwd, env, spec_root):
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        spec = self.write_spec(spec_root)
        self.km = KernelManager(
            kernel_name="rapgen-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)])
        )
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    @staticmethod
    def write_spec(spec_root):
        """A kernel spec that starts this interpreter (so the kernel imports the rapgen under test)."""
        spec = pathlib.Path(spec_root) / "kernels" / "rapgen-test"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "rapgen tests",
                    "language": "python",
                }
            )
        )
        return spec

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def run(self, nb, answers=()):
        """Run every code cell in order; returns (text output per cell, prompts seen). Fails on an error."""
        answers = list(answers)
        prompts = []
        outputs = []
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            texts = []

            def on_output(msg, texts=texts):
                kind, content = msg["header"]["msg_type"], msg["content"]
                if kind == "stream":
                    texts.append(content["text"])
                elif kind in ("execute_result", "display_data"):
                    data = content.get("data", {})
                    texts.append(data.get("text/plain", "") + ("\n[image/png]" if "image/png" in data else "") + "\n")
                elif kind == "error":
                    texts.append("\n".join(content["traceback"]))

            def on_input(msg, texts=texts):
                prompts.append(msg["content"]["prompt"])
                texts.append(msg["content"]["prompt"])
                answer = answers.pop(0) if answers else "\x04"  # Ctrl-D: EOFError in the kernel
                texts.append(answer.replace("\x04", "^D") + "\n")
                self.kc.input(answer)

            reply = self.kc.execute_interactive(
                cell.source, allow_stdin=True, timeout=CELL_TIMEOUT_S, output_hook=on_output, stdin_hook=on_input
            )
            text = ANSI.sub("", "".join(texts))
            outputs.append(text)
            if reply["content"]["status"] != "ok":
                pytest.fail(f"cell {index} failed:\n{cell.source}\n---- output ----\n{text[-6000:]}", pytrace=False)
        return outputs, prompts


def headless(nb, cwd, env, spec_root):
    """Execute every cell with nbclient, as headless runners do; returns the text output per code cell.

    nbclient raises CellExecutionError (with the cell and its traceback) on the first error.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    Kernel.write_spec(spec_root)
    km = KernelManager(
        kernel_name="rapgen-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(pathlib.Path(spec_root) / "kernels")]),
    )
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name="rapgen-test", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env=env)
    outputs = []
    for cell in code_cells(nb):
        texts = []
        for out in cell.outputs:
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                texts.append(
                    out.data.get("text/plain", "") + ("\n[image/png]" if "image/png" in out.data else "") + "\n"
                )
        outputs.append(ANSI.sub("", "".join(texts)))
    return outputs


class Lab:
    """A temporary working folder with the mirror and fake Genius running, and the kernels' environment."""

    def __init__(self, root, mirror, genius):
        self.root, self.cwd = pathlib.Path(root), pathlib.Path(root) / "work"
        self.cwd.mkdir()
        self.drive = self.cwd / "drive"
        self.mirror, self.genius = mirror, genius
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPGEN_", "COLAB_", "GENIUS_", "JPY_"))}
        env.pop("MPLBACKEND", None)
        env.update(
            {
                "RAPGEN_SMOKE": "1",
                "RAPGEN_MODEL_URL": mirror.url,
                "RAPGEN_SMOKE_GENIUS_API": genius.url + "/api",
                "RAPGEN_SMOKE_GENIUS_WEB": genius.url,
                "GENIUS_ACCESS_TOKEN": FAKE_TOKEN,
                "IPYTHONDIR": str(self.root / "ipython"),
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
        )
        self.env = env

    def run_headless(self, name):
        return headless(load(name), self.cwd, self.env, self.root / "jupyter")

    def run(self, name, answers=()):
        kernel = Kernel(self.cwd, self.env, self.root / "jupyter")
        try:
            return kernel.run(load(name), answers)
        finally:
            kernel.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_model):
    served = tiny_model(tmp_path_factory.mktemp("served") / "tiny", n_layer=2, n_embd=32, n_head=2, n_ctx=64, seed=0)
    with ModelMirror({"124M": str(served)}) as mirror, SampleGenius(SAMPLE_LYRICS) as genius:
        yield Lab(tmp_path_factory.mktemp("lab"), mirror, genius)


@pytest.fixture(scope="module")
def collected(lab):
    return lab.run_headless("01_collect_lyrics.ipynb")


@pytest.fixture(scope="module")
def trained(lab, collected):
    return lab.run_headless("02_finetune.ipynb")


def all_output(outputs):
    return "\n".join(outputs)


def test_01_collects_from_genius_into_drive(lab, collected):
    from rapgen.data.lyrics import parse_songs

    dataset = lab.drive / "lyrics.txt"
    songs = parse_songs(dataset.read_text(encoding="utf-8"))
    artists = {s.artist for s in songs}
    assert len(artists) == 6 and len(songs) == 30  # 5 songs each, every one the fake serves
    assert not any("Contributors" in s.lyrics for s in songs)
    text = all_output(collected)
    assert "Genius token: found" in text
    assert "Lil Tofu" in text and "total" in text  # the per-artist table
    assert "<<" in text and "<|endoftext|>" in text  # the preview
    assert FAKE_TOKEN not in text
    for path in lab.cwd.rglob("*"):
        assert not path.is_file() or FAKE_TOKEN.encode() not in path.read_bytes(), path
    for path, auth in lab.genius.headers:
        assert (auth is not None) == path.startswith("/api/"), path  # the token goes to the API only
    assert (lab.drive / "lyrics.txt.cache.jsonl").exists()  # resumable


def test_02_downloads_trains_mirrors_and_plots(lab, trained):
    assert lab.mirror.gets("/124M/model.ckpt.data-00000-of-00001"), "the download cell did not download"
    run = lab.drive / "checkpoints" / "run1"
    assert (run / "model-4.index").exists() and (run / "log.csv").exists()
    assert (lab.cwd / "checkpoints" / "run1" / "model-4.index").exists()
    assert (lab.drive / "run1-loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = all_output(trained)
    assert "samples at step 2" in text
    assert "'step': 4" in text
    assert "[image/png]" in text  # the plot was drawn in the notebook
    assert "no GPU" in text or "GPU:" in text


def test_02_run_again_after_a_disconnect_resumes_from_drive(lab, trained):
    # A new Colab machine: nothing local survives, Drive does.
    shutil.rmtree(lab.cwd / "checkpoints")
    shutil.rmtree(lab.cwd / "models")
    outputs = lab.run_headless("02_finetune.ipynb")
    text = all_output(outputs)
    assert "restoring run1 from the mirror" in text
    assert "already at step 4" in text
    assert (lab.cwd / "checkpoints" / "run1" / "model-4.index").exists()


def test_03_writes_songs_and_answers_prompts(lab, trained):
    outputs, prompts = lab.run("03_rap.ipynb", answers=["<<Lil Tofu"])
    assert prompts == ["Model prompt >>> "] * 2  # one prompt answered, then Ctrl-D ended the loop
    text = all_output(outputs)
    assert "using the newest run" in text
    interactive = outputs[-1]
    assert interactive.index("<<Lil Tofu") < interactive.index("SAMPLE 1")
    songs = (lab.drive / "songs.txt").read_text(encoding="utf-8")
    # Two artists (the form's default, "Lil Tofu, MC Fjord"), three songs each, grouped by artist.
    assert songs.count("<|endoftext|>") == 6 and songs.startswith("<<Lil Tofu")
    assert [s.strip()[:9] for s in songs.split("<|endoftext|>")[:6]] == ["<<Lil Tof"] * 3 + ["<<MC Fjor"] * 3


def test_03_runs_headless_and_the_prompt_loop_ends_in_one_line(lab, trained):
    """nbclient gives the kernel no stdin: the interactive cell must end, not fail the notebook."""
    before = (lab.drive / "songs.txt").read_text(encoding="utf-8") if (lab.drive / "songs.txt").exists() else ""
    outputs = lab.run_headless("03_rap.ipynb")
    last = outputs[-1]
    assert "takes no typed input" in last and len(last.strip().splitlines()) == 1, last
    assert "Traceback" not in all_output(outputs) and "StdinNotImplementedError" not in all_output(outputs)
    songs = (lab.drive / "songs.txt").read_text(encoding="utf-8")
    assert songs.startswith(before) and songs.count("<|endoftext|>") > before.count("<|endoftext|>")
