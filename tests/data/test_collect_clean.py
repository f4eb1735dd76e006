"""Lyrics extraction from song pages, the shared cleaning, the summary table, argument parsing and
the Colab secret glue. All text here is invented."""

import ast
import importlib
import sys
import types

import pytest

import rapgen.colab as colab
from rapgen.data.collect import collect, parse_where
from rapgen.data.collect.arguments import parse_names as _names
from rapgen.data.collect.clean import (
    Cleaner,
    TokenCounter,
    clean_name,
    clean_text,
    is_instrumental,
    safe_filename,
    write_dataset,
)
from rapgen.data.collect.genius import extract_lyrics, looks_blocked, strip_remnants
from rapgen.data.lyrics import Song, parse_songs
from rapgen.errors import RapgenError

from support.genius_fake import FakeSong, invented_lyrics, song_page

PAGE = """<html><head><title>Lil Tofu – Soy Drip Lyrics | Genius</title></head><body>
<div data-lyrics-container="true" class="Lyrics__Container-sc-1">
<div data-exclude-from-selection="true"><span>27 Contributors</span><div>Translations</div><h2>Soy Drip Lyrics</h2></div>[Verse 1: Lil Tofu &amp; MC Fjord]<br/>soy on my <a href="/1"><span class="Ref">wrist, it’s “cold”</span></a><br/>tofu&nbsp;in the  <i>fridge</i><br/><br/>[Hook]<br/>drip drip</div>
<div class="SidebarRecommendations">You might also like</div>
<div data-lyrics-container="true"><div data-exclude-from-selection="true">You might also like<ul><li>Other</li></ul></div>[Verse 2]<br/>last line here</div>
<div>3Embed</div></body></html>"""


def test_the_cleaner_imports_no_source_and_no_source_imports_another():
    """`clean` is source-neutral: a CSV or folder import must not need the Genius client."""
    genius_side = {"genius", "fetch", "from_genius"}
    sources = genius_side | {"from_csv", "from_folder"}
    for module in ("clean", "arguments", "from_csv", "from_folder", "from_genius"):
        path = importlib.import_module(f"rapgen.data.collect.{module}").__file__
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        siblings = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                siblings.update([node.module] if node.module else [a.name for a in node.names])
        allowed = genius_side - {"from_genius"} if module == "from_genius" else set()
        assert siblings & sources <= allowed, f"rapgen.data.collect.{module} imports {sorted(siblings & sources)}"


def test_extract_lyrics_from_a_song_page():
    assert clean_text(extract_lyrics(PAGE)) == (
        '[Verse 1: Lil Tofu & MC Fjord]\nsoy on my wrist, it\'s "cold"\ntofu in the fridge\n\n'
        "[Hook]\ndrip drip\n[Verse 2]\nlast line here"
    )
    assert (
        extract_lyrics("<html><body><div class='LyricsPlaceholder'>This song is an instrumental</div></body></html>")
        is None
    )
    assert (
        extract_lyrics('<div data-lyrics-container="true"><div data-exclude-from-selection="true">x</div></div>')
        is None
    )


@pytest.mark.parametrize("song_id", [300, 301, 302])  # the fake's three page layouts
@pytest.mark.parametrize("padding", [0, 300_000])
def test_every_page_layout_of_the_fake_gives_the_lyrics_back(song_id, padding):
    song = FakeSong(song_id, 1, "Lil Tofu", "Soy Drip", invented_lyrics(song_id, "Lil Tofu"), "/x")
    page = song_page(song, padding)
    assert len(page) > padding
    assert clean_text(extract_lyrics(page)) == song.lyrics
    assert not looks_blocked(page)  # a normal page may load Cloudflare's script


def test_nested_and_unbalanced_markup():
    nested = '<div data-lyrics-container="true"><div><div>[Hook]</div></div>yo<br/>yo</div><div>after</div>'
    assert extract_lyrics(nested) == "[Hook]yo\nyo"
    unclosed = '<main><div data-lyrics-container="true">one<br/>two</main>'
    assert extract_lyrics(unclosed) == "one\ntwo"


def test_strip_remnants():
    text = "12 Contributors\nTranslations\nSoy Drip Lyrics\n[Intro]\nyeah\nYou might also like\nok lineYou might also like[Hook]\nhey5Embed"
    assert strip_remnants(text) == "[Intro]\nyeah\n\nok line\n\n[Hook]\nhey"
    assert strip_remnants("I got lyrics\nEmbed the flow\nlast") == "I got lyrics\nEmbed the flow\nlast"
    assert strip_remnants("See Lil Tofu LiveGet tickets as low as $45\nverse") == "verse"


def test_clean_text_normalises_and_guards_the_format():
    assert clean_text("a\u2019b \u201cc\u201d\u00a0 d\t\te\u200b\r\n\r\n\r\n\r\nf  ") == 'a\'b "c" d e\n\nf'
    assert "<|endoftext|>" not in clean_text("one\n<|endoftext|>\n<<Fake - Header>>\ntwo")
    assert clean_text("[Verse 1]\nline\n\n[Hook: X]\nhook", strip_sections=True) == "line\n\nhook"
    assert clean_name(" MC\nFjord - Jr ", artist=True) == "MC Fjord – Jr" and clean_name("A - B") == "A - B"


def test_cleaner_drops_empty_instrumental_short_duplicates():
    cleaner = Cleaner(min_length=20)
    songs = [
        Song("Lil Tofu", "Soy Drip", "soy on my wrist, tofu in the fridge"),
        Song("LIL TOFU", "soy  drip", "different words entirely, still a duplicate"),  # same artist and title
        Song("Lil Tofu", "Remix", "soy on my   wrist,\ntofu in the fridge"),  # same lyrics, spacing aside
        Song("Lil Tofu", "Beat Tape", "[Instrumental]"),
        Song("Lil Tofu", "Skit", "[Intro]\n\n[Outro]"),
        Song("Lil Tofu", "Short", "too short"),
        Song("MC Fjord", "Soy Drip", "a fjord song with the same title as the first"),
        Song("MC Fjord", "", "an untitled fjord song, told apart by its words"),
        Song("MC Fjord", "", "another untitled one, with other words"),
    ]
    kept = [s for s in map(cleaner, songs) if s]
    assert [(s.artist, s.title) for s in kept] == [
        ("Lil Tofu", "Soy Drip"),
        ("MC Fjord", "Soy Drip"),
        ("MC Fjord", ""),
        ("MC Fjord", ""),
    ]
    assert cleaner.dropped == {"duplicates": 2, "empty or instrumental": 2, "shorter than --min_length": 1}
    limited = Cleaner(max_songs=1)
    assert [bool(limited(Song("A", str(i), f"words {i}"))) for i in range(3)] == [True, False, False]
    assert is_instrumental("Instrumental") and is_instrumental("") and not is_instrumental("[Hook]\nyo")


def test_safe_filename_never_makes_a_path():
    for text in ["../../etc/passwd", "a/b\\c", "..", "  ", "nul", 'Lil Tofu: "Best" <Of>*?', "x" * 500]:
        name = safe_filename(text)
        assert name and "/" not in name and "\\" not in name and "." not in name and ":" not in name
        assert len(name) <= 61 and name.lower() not in ("nul", "con")
    assert safe_filename("Doña Ruido") == "doña_ruido"


def test_write_dataset_is_atomic_and_prints_the_table(tmp_path, capsys, vocab_dir):
    out = tmp_path / "rap.txt"
    out.write_text("the old dataset\n")
    songs = [Song("Lil Tofu", "Soy Drip", "soy on my wrist"), Song("MC Fjord", "Cold", "cold water, cold fjord")]
    stats = write_dataset(songs, str(out), counter=TokenCounter(vocab_dir))
    assert [s.title for s in parse_songs(out.read_text())] == ["Soy Drip", "Cold"]
    table = capsys.readouterr().out
    assert "tokens" in table.splitlines()[0] and "words" not in table
    assert stats["Lil Tofu"][0] == 1 and stats["Lil Tofu"][1] > 5

    def failing():
        yield Song("Lil Tofu", "New", "new words")
        raise RapgenError("the source broke")

    with pytest.raises(RapgenError):
        write_dataset(failing(), str(out))
    with pytest.raises(RapgenError, match="no songs"):
        write_dataset([Song("A", "B", "[Instrumental]")], str(out))
    assert [s.title for s in parse_songs(out.read_text())] == ["Soy Drip", "Cold"]  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rap.txt"]  # no temp files left


def test_token_counts_fall_back_to_words(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no models/ and no ../shared/gpt2 here
    monkeypatch.delenv("RAPGEN_VOCAB_DIR", raising=False)
    counter = TokenCounter()
    assert counter.unit == "words" and "--vocab_dir" in counter.note
    write_dataset([Song("Lil Tofu", "Soy Drip", "soy on my wrist")], "out.txt", counter=counter)
    header, *rest = capsys.readouterr().out.splitlines()
    assert "words*" in header and any("no GPT-2 vocabulary" in line for line in rest)
    with pytest.raises(RapgenError, match="--vocab_dir"):
        TokenCounter(vocab_dir=str(tmp_path / "missing"))
    assert TokenCounter(vocab_dir=str(tmp_path / "missing"), tokens=False).unit == "words"


def test_argument_forms():
    assert _names("Lil Tofu, MC Fjord,,lil tofu") == ["Lil Tofu", "MC Fjord"]
    assert _names(("Lil Tofu", "MC Fjord")) == ["Lil Tofu", "MC Fjord"] == _names(["Lil Tofu", "MC Fjord"])
    assert _names("Tofu, The Creator; MC Fjord") == ["Tofu, The Creator", "MC Fjord"]
    assert _names(50) == ["50"] and _names(None) == []
    assert parse_where(["tag=rap", "language=en"]) == {"tag": {"rap"}, "language": {"en"}}
    assert parse_where("tag=Rap|trap,language=en") == {"tag": {"rap", "trap"}, "language": {"en"}}
    assert parse_where(("tag=rap", "tag=trap")) == {"tag": {"rap", "trap"}}
    with pytest.raises(RapgenError, match="COLUMN=VALUE"):
        parse_where("rap")
    with pytest.raises(RapgenError, match="unknown lyrics source"):
        collect("myspace")
    with pytest.raises(RapgenError, match="no option artist_column"):
        collect("csv", file="x.csv", artist_column="a")
    with pytest.raises(RapgenError, match="--max_songs"):
        collect("folder", folder=".", max_songs=0)


def test_get_secret_prefers_the_environment_and_degrades_off_colab(monkeypatch):
    monkeypatch.delenv("RAPGEN_TEST_SECRET", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.get_secret("RAPGEN_TEST_SECRET") is None and not colab.on_colab()
    monkeypatch.setenv("RAPGEN_TEST_SECRET", "from-env")
    assert colab.get_secret("RAPGEN_TEST_SECRET") == "from-env"


def test_get_secret_asks_colab_userdata(monkeypatch):
    class SecretNotFoundError(Exception):
        pass

    class NotebookAccessError(Exception):
        pass

    secrets = {"GIVEN": "from-colab"}

    def get(name):
        if name == "DENIED":
            raise NotebookAccessError(name)
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    userdata = types.SimpleNamespace(
        get=get, SecretNotFoundError=SecretNotFoundError, NotebookAccessError=NotebookAccessError
    )
    google = types.ModuleType("google")
    google_colab = types.ModuleType("google.colab")
    google_colab.userdata = userdata
    google.colab = google_colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google_colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    for name in ("GIVEN", "DENIED", "MISSING"):
        monkeypatch.delenv(name, raising=False)
    assert colab.on_colab()
    assert colab.get_secret("GIVEN") == "from-colab"
    assert colab.get_secret("DENIED") is None and colab.get_secret("MISSING") is None
    monkeypatch.setenv("GIVEN", "env wins")
    assert colab.get_secret("GIVEN") == "env wins"
