"""`rapgen analyze`: judge songs by the numbers rap research uses, as a table or JSON.

Per song: rhyme density (Malmi et al.), syllables per line, the rhyme scheme, and with a
training `--dataset` the longest span copied from it (tokens, words, the song it comes from),
the share of 8-grams found there and GhostWriter's tf-idf similarity to the artist's songs.
Every song of a file is transcribed in one espeak-ng call.

>>> results = analyze("drive/songs.txt", dataset="data/sample_lyrics.txt", quiet=True)   # doctest: +SKIP
>>> results[0]["rhyme_density"]                                                        # doctest: +SKIP
0.91
"""

from __future__ import annotations

import html
import json as jsonlib
from typing import List, Optional

from rapgen.data.dataset import encoder_for, read_text
from rapgen.data.lyrics import Song, parse_songs, split_songs
from rapgen.errors import RapgenError
from rapgen.judge.originality import artist_songs, copied, load_index, max_tfidf_similarity
from rapgen.judge.phonetics import resolve_source, transcribe
from rapgen.judge.ranking import rank_order
from rapgen.judge.rhyme import lyric_lines, report_from_words, strip_sections


def read_songs(text: str) -> List[Song]:
    """Songs of a lyrics text; a text without separators or headers is one song."""
    if not split_songs(text):
        return []
    return parse_songs(text)


class Judge:
    """Scores songs: rhyme always, originality when given a dataset index (reused across calls)."""

    def __init__(self, phonetics: str = "auto", index=None, encoder=None):
        self.source = resolve_source(phonetics)
        self.index, self.encoder = index, encoder

    def judge(self, songs: List[Song]) -> List[dict]:
        song_lines = [lyric_lines(s.lyrics) for s in songs]
        flat = [line for lines in song_lines for line in lines]
        words = transcribe(flat, self.source)  # one espeak-ng call for all songs
        results, at = [], 0
        for song, lines in zip(songs, song_lines):
            report = report_from_words(lines, words[at : at + len(lines)], self.source)
            at += len(lines)
            results.append(self._result(song, report))
        return results

    def _result(self, song: Song, report) -> dict:
        syllables = [line.syllables for line in report.lines]
        result = {
            "artist": song.artist,
            "title": song.title,
            "phonetics": report.source,
            "rhyme_density": report.density,
            "words": report.words,
            "lines": len(report.lines),
            "syllables_per_line": round(sum(syllables) / len(syllables), 2) if syllables else 0.0,
            "scheme": report.scheme,
            "line_details": [vars(line) for line in report.lines],
        }
        if self.index is not None:
            # Section headers ("[Verse 1: Lil Tofu]") are in every song: copying one copies no lyrics.
            found = copied(self.index, self.encoder.encode(strip_sections(song.lyrics)), self.encoder)
            result.update(
                {
                    "copied_tokens": found.longest_tokens,
                    "copied_words": found.longest_words,
                    "copied_text": found.span,
                    "copied_from": f"{found.artist} - {found.title}" if found.longest_tokens else "",
                    "ngram8_share": found.ngram_share,
                    "tfidf_max": round(
                        max_tfidf_similarity(song.lyrics, artist_songs(self.index, song.artist, self.encoder)), 4
                    )
                    if song.artist
                    else None,
                }
            )
        return result


def format_table(result: dict) -> str:
    """One song's figures and its lines with syllables and scheme letters."""
    head = f"<<{result['artist']} - {result['title']}>>" if result["artist"] else "(no header)"
    rows = [
        head,
        f"  rhyme density {result['rhyme_density']:.2f} ({result['phonetics']}), {result['words']} words, "
        f"{result['syllables_per_line']:.1f} syllables per line, scheme {result['scheme'] or '-'}",
    ]
    if "copied_tokens" in result:
        copied = (
            "none (under 8 tokens)"
            if not result["copied_tokens"]
            else (
                f"{result['copied_tokens']} tokens / {result['copied_words']} words from {result['copied_from']}: "
                f'"{" / ".join(result["copied_text"].splitlines())[:80]}"'
            )
        )
        tfidf = "-" if result["tfidf_max"] is None else f"{result['tfidf_max']:.2f}"
        rows.append(
            f"  longest copied span {copied}; 8-grams in the training set {100 * result['ngram8_share']:.1f}%; "
            f"tf-idf max {tfidf}"
        )
    for line in result["line_details"]:
        rows.append(f"  {line['letter']} {line['syllables']:3d}  {line['text']}")
    return "\n".join(rows)


def highlight_html(result: dict, lyrics: str) -> str:
    """The lyrics as HTML with the copied span marked (for notebooks)."""
    body = html.escape(lyrics)
    span = html.escape(result.get("copied_text") or "")
    if span and span in body:
        body = body.replace(span, f'<mark title="copied from {html.escape(result["copied_from"])}">{span}</mark>', 1)
    return "<pre>" + body + "</pre>"


def show(results: List[dict], file: str) -> None:
    """In a notebook: each song's table, then its lyrics with the copied span highlighted."""
    from IPython.display import HTML, display  # notebooks only: IPython stays off the command line

    songs = read_songs(read_text(str(file)))
    for result, song in zip(results, songs):
        print(format_table(result))
        display(HTML(highlight_html(result, song.lyrics)))


def best(results: List[dict], rank: str = "both", quiet: bool = False) -> int:
    """Index of the best song under `rank` (rapgen.judge.ranking's rules: rhyme, original, both), said unless quiet."""
    if not results:
        raise RapgenError("no songs to choose from")
    if rank in ("original", "both") and "copied_tokens" not in results[0]:
        raise RapgenError(f"ranking by {rank} needs the songs analysed with a dataset: analyze(..., dataset=PATH)")
    chosen = rank_order(results, rank)[0]
    if not quiet:
        r = results[chosen]
        copied = f", longest copied span {r['copied_tokens']} tokens" if "copied_tokens" in r else ""
        print(
            f"best by {rank}: song {chosen + 1}, <<{r['artist']} - {r['title']}>> "
            f"(rhyme density {r['rhyme_density']:.2f}{copied})"
        )
    return chosen


def analyze(
    file: str,
    dataset: Optional[str] = None,
    model: Optional[str] = None,
    models_dir: str = "models",
    phonetics: str = "auto",
    json: bool = False,
    encoding: str = "utf-8",
    quiet: bool = False,
) -> List[dict]:
    """Rhyme density, syllables, scheme and (with `dataset`) originality of every song in `file`.

    `--phonetics auto|espeak|cmudict` picks the source of phonemes; `--model` only supplies the
    vocabulary for the originality index (any model or run folder). Prints a table per song, or
    JSON with `--json`; returns the same list of dicts.

    >>> analyze("songs.txt", dataset="data/rap.txt", json=True)   # doctest: +SKIP
    """
    if not isinstance(json, bool):
        raise RapgenError(f"--json takes no value (or True/False), got {json!r}")
    source = resolve_source(phonetics)
    songs = read_songs(read_text(str(file), encoding))
    if not songs:
        raise RapgenError(f"{file} holds no lyrics: give a text file of songs (rapgen sample --save_to writes one)")
    index = encoder = None
    if dataset is not None:
        encoder = encoder_for(model, models_dir)
        index = load_index(str(dataset), encoder, encoding=encoding, quiet=quiet)
    results = Judge(source, index, encoder).judge(songs)
    if json:
        print(jsonlib.dumps(results, indent=2, ensure_ascii=False))
    elif not quiet:
        print("\n\n".join(format_table(r) for r in results))
    return results
