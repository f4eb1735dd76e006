"""The command line, run as `python -m rapgen` in subprocesses, and its contract with the functions.

Each subprocess pays TensorFlow's import (~5 s), so the independent runs are started
together, two at a time, by one module fixture; the tests then check their results. The
signature and --help tests at the end run in-process (no TensorFlow); tests/cli/test_cli_sweep.py
holds the table of user mistakes.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.helpers import assert_one_line_error, run_cli, snapshot

LYRICS = (
    "<<Lil Tofu - Soy Drip>>\n[Hook]\nsoy on my wrist and the tofu on ice\n<|endoftext|>\n"
    "<<MC Fjord - Kall Natt>>\n[Vers 1]\nkall natt i hamnen, färjan går sent\n<|endoftext|>\n"
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, vocab_dir, tiny_model):
    """Every CLI run of this module, done once: ({name: CompletedProcess}, context).

    (The environment is conftest's `cli_env`, rebuilt here because that fixture is per test.)
    """
    env = dict(os.environ)
    env["RAPGEN_VOCAB_DIR"] = vocab_dir
    env.pop("RAPGEN_MODEL_URL", None)

    base = tmp_path_factory.mktemp("cli")
    model = tiny_model(base / "model", n_layer=2, n_embd=32, n_head=2, n_ctx=64, seed=2)
    lyrics = base / "heldout.txt"
    lyrics.write_text(LYRICS, encoding="utf-8")
    latin1 = base / "latin1.txt"
    latin1.write_bytes("<<MC Åke - Höst>>\nså kallt\n".encode("latin-1"))
    context = {
        "model": model,
        "new": str(base / "new"),
        "before": snapshot(model),
        "lyrics": str(lyrics),
        "models_dir": str(base / "models"),
    }
    os.makedirs(context["models_dir"])

    jobs = {
        "help": (["--help"], None),
        "init_new": (
            [
                "init",
                context["new"],
                "--n_layer",
                "2",
                "--n_embd",
                "32",
                "--n_head",
                "2",
                "--n_ctx",
                "64",
                "--seed",
                "5",
            ],
            None,
        ),
        "init_again": (["init", model, "--n_layer", "2", "--n_embd", "32", "--n_head", "2", "--seed", "9"], None),
        "sample_1": (["sample", "--model", model, "--artist", "Lil Tofu", "--seed", "1", "--length", "16"], None),
        "sample_2": (["sample", "--model", model, "--artist", "Lil Tofu", "--seed", "1", "--length", "16"], None),
        "empty_prefix": (["sample", "--model", model, "--prefix", ""], None),
        "unknown_model": (["sample", "--model", "999M", "--models_dir", context["models_dir"], "--artist", "X"], None),
        "interactive": (["interactive", "--model", model, "--length", "8", "--seed", "3"], "<<Lil Tofu\n   \n"),
        "score": (["score", str(lyrics), "--model", model], None),
        "score_latin1": (["score", str(latin1), "--model", model], None),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_cli, args, env, str(base), stdin, 300) for name, (args, stdin) in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}
    return results, context


@pytest.mark.slow
def test_help_exits_zero(runs):
    results, _ = runs
    r = results["help"]
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    for command in ("sample", "interactive", "init", "score", "download"):
        assert command in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_init_writes_a_model_then_refuses_to_overwrite(runs):
    from rapgen.model.hparams import HParams
    from rapgen.model.loading import load_model

    results, ctx = runs
    r = results["init_new"]
    assert r.returncode == 0, r.stderr
    assert HParams.load(ctx["new"]) == HParams(n_ctx=64, n_embd=32, n_head=2, n_layer=2)
    assert load_model(ctx["new"]).hparams.n_layer == 2
    assert_one_line_error(results["init_again"], "already")
    assert snapshot(ctx["model"]) == ctx["before"]


@pytest.mark.slow
def test_sample_with_seed_is_reproducible(runs):
    results, _ = runs
    a, b = results["sample_1"], results["sample_2"]
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    assert "<<Lil Tofu" in a.stdout and "SAMPLE 1" in a.stdout
    assert "Traceback" not in a.stderr


@pytest.mark.slow
def test_empty_prefix_is_a_one_line_error(runs):
    results, _ = runs
    assert_one_line_error(results["empty_prefix"], "prompt")


@pytest.mark.slow
def test_unknown_model_name_lists_the_valid_ones(runs):
    results, _ = runs
    assert_one_line_error(results["unknown_model"], "999M", "124M", "355M", "774M", "1558M")


@pytest.mark.slow
def test_interactive_answers_then_exits_on_eof(runs):
    results, _ = runs
    r = results["interactive"]
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Model prompt >>>") == 3  # the prompt, a blank line, then EOF
    assert "SAMPLE 1" in r.stdout and "<<Lil Tofu" in r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_score_prints_json(runs):
    from rapgen.judge.perplexity import score

    results, ctx = runs
    r = results["score"]
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(printed) == {"tokens", "loss", "perplexity"}
    here = score(ctx["lyrics"], model=ctx["model"])
    assert printed["tokens"] == here["tokens"] > 10
    assert abs(printed["loss"] - here["loss"]) <= 1e-5
    assert printed["perplexity"] > 1.0


@pytest.mark.slow
def test_score_of_non_utf8_file_is_a_one_line_error(runs):
    results, _ = runs
    assert_one_line_error(results["score_latin1"], "latin1.txt")


# -- the command line's contract with the functions' signatures (in-process, no TensorFlow) ------


def test_train_signature_is_train_config():
    """train() spells out every TrainConfig field, in the same order, with the same default."""
    import dataclasses
    import inspect

    from rapgen.finetune.config import TrainConfig
    from rapgen.finetune.loop import train

    params = inspect.signature(train).parameters
    fields = dataclasses.fields(TrainConfig)
    assert [p.name for p in params.values()] == [f.name for f in fields]
    for field in fields:
        assert params[field.name].default == field.default, field.name
        assert params[field.name].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    args = inspect.getdoc(train).split("Args:")[1]
    documented = [
        line.strip().split(":")[0]
        for line in args.splitlines()
        if line.startswith("    ") and ":" in line and not line.startswith("     ")
    ]
    assert documented == [f.name for f in fields]  # one line per option, in order


def _help_page(argv, capsys):
    from rapgen.cli.commands import main

    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return out


def test_every_command_help_lists_every_flag_with_its_default(capsys):
    import inspect

    from rapgen.cli.commands import COMMANDS, _load

    pages = 0
    for name in COMMANDS:
        target = _load(name)
        commands = (
            {f"{name} {source}": fn for source, fn in target.items()} if isinstance(target, dict) else {name: target}
        )
        for typed, fn in commands.items():
            page = _help_page([*typed.replace("_", "-").split(), "--help"], capsys)
            for param in inspect.signature(fn).parameters.values():
                if param.default is inspect.Parameter.empty:
                    assert param.name.upper() in page, (typed, param.name)
                else:
                    assert f"--{param.name}=" in page, (typed, param.name)
                    assert f"Default: {param.default!r}" in page, (typed, param.name, param.default)
            pages += 1
    assert pages >= 12


def test_train_help_lists_each_option_with_its_default_and_doc(capsys):
    import dataclasses

    from rapgen.finetune.config import TrainConfig

    page = _help_page(["train", "--help"], capsys)
    for field in dataclasses.fields(TrainConfig):
        block = page.split(f"--{field.name}=", 1)[1].split("\n    -", 1)[0]
        assert f"Default: {field.default!r}" in block, field.name
        assert len(block.strip().splitlines()) >= 3, f"--{field.name} has no description line"


def test_repeated_where_flags_reach_collect_csv_as_conditions(tmp_path, monkeypatch, capsys):
    from rapgen.cli.commands import main

    dump = tmp_path / "dump.csv"
    dump.write_text(
        "artist,title,lyrics,tag,language\n"
        "Lil Tofu,Soy Drip,soy on my wrist,rap,en\n"
        "Lil Tofu,Tempeh,tempeh on ice,rap,sv\n"
        "MC Fjord,Kall Natt,kall natt i hamnen,pop,en\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "collect",
            "csv",
            str(dump),
            "--where",
            "tag=rap",
            "--where",
            "language=en",
            "--out",
            "out.txt",
            "--tokens",
            "False",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    text = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert "Soy Drip" in text and "Tempeh" not in text and "Kall Natt" not in text


def test_python_collect_names_the_option_it_meant(tmp_path):
    from rapgen import collect
    from rapgen.errors import RapgenError

    with pytest.raises(RapgenError, match=r"no option were \(did you mean where\?\)"):
        collect("csv", str(tmp_path / "dump.csv"), were="tag=rap")
    with pytest.raises(RapgenError, match="did you mean csv"):
        collect("cvs", str(tmp_path / "dump.csv"))
    assert os.listdir(tmp_path) == []
