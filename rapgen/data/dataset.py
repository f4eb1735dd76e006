"""Training data: read lyrics, encode them once (cached), split off validation songs, draw windows.

Token layout: every song is preceded and followed by 50256, `[EOT] song1 [EOT] song2 [EOT]`,
so the model learns both to start a song after `<|endoftext|>` (which `sample` puts before
an `<<Artist` prompt) and to end one with it.

Windows are drawn by a generator seeded with (seed, step, micro-batch): the data position
is a pure function of the step, so a resumed run reads exactly the windows it would have.

>>> data = load_dataset("data/sample_lyrics.txt", encoder)     # doctest: +SKIP
>>> batch = training_batch(data.train, step=0, batch_size=2, length=128, seed=0)   # doctest: +SKIP
>>> batch.shape                                                # doctest: +SKIP
(2, 129)
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import io
import os
import sys
import zipfile
import zlib
from typing import Dict, Iterable, List, Optional

import numpy as np

from rapgen.checks import between, check_output_file
from rapgen.data.lyrics import SEPARATOR, missing_separators, parse_header, split_songs
from rapgen.errors import RapgenError
from rapgen.fileio import atomic_write_bytes
from rapgen.model.encoder import load_encoder
from rapgen.model.folders import find_vocab_dir, resolve_model_dir
from rapgen.model.hparams import EOT_ID

CACHE_SUFFIX = ".tokens.npz"
TEXT_SUFFIXES = (".txt", ".lyrics", ".text")


# -- reading ---------------------------------------------------------------------------


def read_text(path: str, encoding: str = "utf-8") -> str:
    """The text of a file, or a one-line error naming the file and the first bad byte."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise RapgenError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise RapgenError(f"{path} is a folder, not a text file") from None
    nul = raw.find(b"\0")
    if nul >= 0 and not encoding.lower().startswith("utf-16"):
        raise RapgenError(f"{path} looks binary (a NUL byte at offset {nul}): give a lyrics text file")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise RapgenError(
            f"{path} is not valid {encoding}: byte offset {e.start} ({raw[e.start : e.start + 1]!r}); "
            f"pass --encoding (e.g. latin-1 or cp1252) if the file uses another"
        ) from None
    except LookupError:
        raise RapgenError(f"unknown --encoding {encoding!r}") from None
    # A byte-order mark (Windows editors) would hide a first separator line or header.
    return text[1:] if text.startswith("\ufeff") else text


def expand_paths(dataset: str) -> List[str]:
    """A file, a folder (its text files, recursively) or a glob -> sorted list of files."""
    dataset = str(dataset)
    if os.path.isfile(dataset):
        return [dataset]
    if os.path.isdir(dataset):
        files = [
            os.path.join(root, name)
            for root, _, names in os.walk(dataset)
            for name in names
            if name.lower().endswith(TEXT_SUFFIXES + (".npz",)) and not name.endswith(CACHE_SUFFIX)
        ]
        if not files:
            raise RapgenError(f"folder {dataset} holds no .txt or .npz files")
        return sorted(files)
    if glob.has_magic(dataset):
        files = sorted(
            f for f in glob.glob(dataset, recursive=True) if os.path.isfile(f) and not f.endswith(CACHE_SUFFIX)
        )
        if not files:
            raise RapgenError(f"the pattern {dataset} matches no files")
        return files
    raise RapgenError(f"dataset {dataset} does not exist: give a lyrics .txt, a folder, a glob or an .npz")


def song_layout(songs: Iterable, open_end: bool = False) -> np.ndarray:
    """uint16 tokens `[EOT] song [EOT] song … [EOT]` of songs given as token ids (lists or arrays).

    The one place the layout is written: training data, scoring, sampling's context and
    best-of all use it. `open_end=True` leaves the last song without its closing 50256: a
    prompt the model continues (`[EOT] <<Artist`, or `[EOT]` alone for a song of its own).

    >>> song_layout([[1, 2], [3]]).tolist(), song_layout([[7]], open_end=True).tolist()
    ([50256, 1, 2, 50256, 3, 50256], [50256, 7])
    """
    eot = np.array([EOT_ID], np.uint16)
    parts = [eot]
    for song in songs:
        parts += [np.asarray(song, np.int64).ravel().astype(np.uint16), eot]
    if open_end and len(parts) > 1:
        parts.pop()
    return np.concatenate(parts)


def encode_lyrics(text: str, encoder) -> np.ndarray:
    """uint16 tokens `[EOT] song [EOT] song … [EOT]` of a lyrics text."""
    return song_layout(encoder.encode(song) for song in split_songs(text))


def _vocab_key(encoder) -> str:
    """Identifies the vocabulary, so a cache made with another one is not reused.

    The hash of every token followed by a NUL, in id order; computed on each call (about
    60 ms for GPT-2's 50257 tokens, once per dataset read) rather than stored on the encoder.
    """
    tokens = sorted(encoder.encoder, key=encoder.encoder.__getitem__)  # in id order
    return hashlib.sha256(("\0".join(tokens) + "\0").encode("utf-8")).hexdigest()[:16]


def _load_npz(path: str) -> np.ndarray:
    """Tokens of an .npz from `rapgen encode` (`tokens`) or from nshepperd/gpt-2-simple (arr_0, …)."""
    try:
        with np.load(path) as data:
            if "tokens" in data.files:
                return data["tokens"].astype(np.uint16)
            chunks = [data[k] for k in data.files]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RapgenError(f"{path} is not a readable .npz file ({e})") from None
    if not chunks:
        return np.zeros(0, np.uint16)
    # Their chunks are separate documents: keep them apart with 50256.
    return song_layout(chunks)


def _cache_path(source: str) -> str:
    return source.rstrip("/\\") + CACHE_SUFFIX


def encode_files(
    files: List[str], encoder, encoding: str = "utf-8", cache: Optional[str] = None, quiet: bool = False
) -> np.ndarray:
    """Tokens of several files; text files are encoded once and cached by a hash of their text."""
    texts, arrays, unseparated = [], [], []
    for path in files:
        if path.endswith(".npz"):
            arrays.append(_load_npz(path))
        else:
            texts.append(read_text(path, encoding))
            if missing_separators(texts[-1]):
                unseparated.append(path)
    if unseparated and not quiet:
        n = len(unseparated) - 1
        more = f" (and {n} more file{'s' if n > 1 else ''})" if n else ""
        # Still trained: a file of one long text is a choice a user may make.
        print(
            f"warning: {unseparated[0]}{more} has no line holding only {SEPARATOR}, so it trains as one song: "
            f"end each song with such a line (rapgen collect writes them)",
            file=sys.stderr,
        )
    if texts:
        digest = hashlib.sha256()
        for t in texts:
            digest.update(hashlib.sha256(t.encode("utf-8")).digest())
        key = f"{digest.hexdigest()}:{_vocab_key(encoder)}"
        tokens = _read_cache(cache, key) if cache else None
        if tokens is None:
            tokens = _encode_with_progress(texts, encoder, quiet)
            if cache and any(t.strip() for t in texts):  # an empty dataset is refused, and leaves nothing behind
                _write_cache(cache, key, tokens)
        arrays.insert(0, tokens)
    joined = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
    # Adjacent files each start and end with 50256: keep one.
    keep = np.ones(len(joined), bool)
    keep[1:] = ~((joined[1:] == EOT_ID) & (joined[:-1] == EOT_ID))
    return joined[keep]


def _encode_with_progress(texts: List[str], encoder, quiet: bool) -> np.ndarray:
    from tqdm.auto import tqdm  # tqdm: off the CLI's fast path (a test keeps it so)

    total = sum(len(t) for t in texts)
    parts = []
    with tqdm(total=total, unit="char", unit_scale=True, desc="encoding", disable=quiet or total < 200_000) as bar:

        def encoded(songs):
            for song in songs:  # one at a time, so the bar moves on big files
                ids = encoder.encode(song)
                bar.update(len(song))
                yield ids

        for text in texts:
            parts.append(song_layout(encoded(split_songs(text))))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def _read_cache(path: str, key: str) -> Optional[np.ndarray]:
    try:
        with np.load(path) as data:
            if str(data["key"]) == key:
                return data["tokens"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # no cache, or an unreadable one: encode again
    return None


def _write_cache(path: str, key: str, tokens: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, tokens=tokens, key=np.array(key))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # a read-only source folder: the cache is an optimisation only


# -- the dataset ----------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    """Training and validation tokens (uint16), each `[EOT] song [EOT] …`."""

    train: np.ndarray
    val: Optional[np.ndarray]
    n_songs: int


def song_slices(tokens: np.ndarray) -> List[slice]:
    """Each song's span in a token array (separators excluded)."""
    ends = np.flatnonzero(tokens == EOT_ID).tolist()
    bounds = [-1] + ends + [len(tokens)]
    return [slice(a + 1, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a + 1]


def _join(tokens: np.ndarray, spans: List[slice]) -> np.ndarray:
    return song_layout(tokens[s] for s in spans)


def split_validation(tokens: np.ndarray, val_fraction: float):
    """(train, val) by whole songs; a song's side depends only on its own tokens (a CRC), so
    adding songs never moves the others. At least one song stays on each side."""
    spans = song_slices(tokens)
    if val_fraction <= 0 or len(spans) < 2:
        return tokens, None
    scores = [zlib.crc32(tokens[s].tobytes()) / 2**32 for s in spans]
    val = [i for i, x in enumerate(scores) if x < val_fraction]
    if not val:
        val = [int(np.argmin(scores))]
    if len(val) == len(spans):
        val.remove(int(np.argmax(scores)))
    val_set = set(val)
    train = [s for i, s in enumerate(spans) if i not in val_set]
    return _join(tokens, train), _join(tokens, [spans[i] for i in sorted(val_set)])


def load_tokens(dataset: str, encoder, encoding: str = "utf-8", quiet: bool = False) -> np.ndarray:
    """Encoded tokens of a file, folder, glob or .npz (cached beside a file or folder)."""
    files = expand_paths(dataset)
    cache = None
    if os.path.isfile(str(dataset)) and not str(dataset).endswith(".npz"):
        cache = _cache_path(str(dataset))
    elif os.path.isdir(str(dataset)):
        cache = _cache_path(os.path.abspath(str(dataset)))
    tokens = encode_files(files, encoder, encoding=encoding, cache=cache, quiet=quiet)
    if not np.any(tokens != EOT_ID):
        raise RapgenError(f"dataset {dataset} holds no text (empty, or only <|endoftext|> separators)")
    return tokens


def load_dataset(
    dataset: str,
    encoder,
    val_fraction: float = 0.0,
    val_dataset: Optional[str] = None,
    encoding: str = "utf-8",
    quiet: bool = False,
) -> Dataset:
    tokens = load_tokens(dataset, encoder, encoding, quiet)
    n_songs = len(song_slices(tokens))
    if val_dataset:
        return Dataset(tokens, load_tokens(val_dataset, encoder, encoding, quiet), n_songs)
    between("--val_fraction", val_fraction, 0, 1, hi_included=False)
    train, val = split_validation(tokens, val_fraction)
    return Dataset(train, val, n_songs)


def _fill_window(tokens: np.ndarray, length: int) -> np.ndarray:
    """Tokens repeated until they fill one window of length + 1; the copies share their
    50256 ends, so the layout stays `[EOT] song [EOT] song …` with no doubled separator."""
    if len(tokens) >= length + 1:
        return tokens
    body = tokens[1:] if len(tokens) > 1 and tokens[0] == EOT_ID and tokens[-1] == EOT_ID else tokens
    return np.concatenate([tokens[: len(tokens) - len(body)], np.tile(body, (length + 1) // len(body) + 1)])


def training_batch(
    tokens: np.ndarray, step: int, batch_size: int, length: int, seed: int, micro: int = 0
) -> np.ndarray:
    """int32 [batch_size, length + 1] windows at random offsets, a pure function of (seed, step, micro).

    A dataset shorter than one window is repeated until it fills one.
    """
    tokens = _fill_window(tokens, length)
    n = len(tokens)
    rng = np.random.default_rng([seed, step, micro])
    starts = rng.integers(0, n - length, size=batch_size)  # offsets 0 .. n - length - 1
    return np.stack([tokens[s : s + length + 1] for s in starts]).astype(np.int32)


def validation_windows(tokens: np.ndarray, length: int, max_windows: int) -> np.ndarray:
    """int32 [k, length + 1]: consecutive windows from the start of the validation tokens."""
    tokens = _fill_window(tokens, length)
    n = len(tokens)
    k = max(1, min(max_windows, (n - 1) // length))
    return np.stack([tokens[i * length : i * length + length + 1] for i in range(k)]).astype(np.int32)


# -- artists, info and the `encode` command -------------------------------------------


def song_artists(tokens: np.ndarray, encoder) -> List[str]:
    """Artist of each song, read back from its `<<Artist - Title>>` header ('' when none)."""
    artists = []
    for s in song_slices(tokens):
        head = encoder.decode(tokens[s][:64].tolist()).split("\n", 1)[0]
        parsed = parse_header(head)
        artists.append(parsed[0] if parsed else "")
    return artists


@dataclasses.dataclass
class DatasetInfo:
    songs: int
    tokens: int
    artists: Dict[str, int]  # artist -> number of songs, most songs first

    def table(self) -> str:
        lines = [f"{self.songs} songs, {self.tokens} tokens, {len(self.artists)} artists", "songs  artist"]
        lines += [f"{n:5d}  {a or '(no header)'}" for a, n in self.artists.items()]
        return "\n".join(lines)


def encoder_for(model: Optional[str], models_dir: str):
    """The GPT-2 encoder of `model` (a name or folder), else of any vocabulary found (find_vocab_dir)."""
    folder = resolve_model_dir(model, models_dir) if model else find_vocab_dir(None, models_dir)
    return load_encoder(folder)


def dataset_info(
    dataset: str, model: Optional[str] = None, models_dir: str = "models", encoding: str = "utf-8", quiet: bool = False
) -> DatasetInfo:
    """Songs, tokens and the artists with their song counts; prints a table unless quiet.

    >>> dataset_info("data/sample_lyrics.txt").artists     # doctest: +SKIP
    {'Lil Tofu': 6, ...}
    """
    encoder = encoder_for(model, models_dir)
    tokens = load_tokens(dataset, encoder, encoding, quiet)
    counts = collections.Counter(song_artists(tokens, encoder))
    info = DatasetInfo(len(song_slices(tokens)), int(np.sum(tokens != EOT_ID)), dict(counts.most_common()))
    if not quiet:
        print(info.table())
    return info


def encode(
    in_path: str,
    out_path: str,
    model: Optional[str] = None,
    models_dir: str = "models",
    encoding: str = "utf-8",
    quiet: bool = False,
) -> str:
    """Pre-encode a lyrics file, folder or glob into an .npz of uint16 tokens (`tokens`).

    `rapgen encode data/rap.txt data/rap.npz`; `rapgen train --dataset data/rap.npz` reads it.
    """
    out_path = str(out_path)
    if not out_path.endswith(".npz"):
        raise RapgenError(f"the output {out_path} should end in .npz")
    check_output_file(out_path, "OUT_PATH")
    tokens = load_tokens(in_path, encoder_for(model, models_dir), encoding, quiet)
    buf = io.BytesIO()
    np.savez(buf, tokens=tokens)
    atomic_write_bytes(out_path, buf.getvalue())
    if not quiet:
        print(f"{len(song_slices(tokens))} songs, {len(tokens)} tokens -> {out_path}")
    return out_path
