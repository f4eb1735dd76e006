"""Originality against the training data: the longest copied span, 8-gram overlap, GhostWriter's score.

The index over a dataset's uint16 tokens is built once and cached beside its token cache
(`rap.txt.index/`): every token 8-gram gets a 64-bit polynomial hash; the positions are sorted by
the top 32 bits of their hash and stored with them (8 bytes a token). A query looks all of a
sample's 8-grams up at once (`searchsorted` on the memory-mapped keys), checks the candidates
against the tokens themselves (so a hash collision never counts), and extends every true match
forward to find the longest span. Spans shorter than 8 tokens are not copies: common words and
phrases share those with any text, so the longest span is reported as 0 below that.

Why hashed 8-grams rather than a full suffix array: one sort of 64-bit keys builds it
(`bench/bench_analyze.py` measures both builds), and exact spans still come out by extension.

GhostWriter's measure (Potash et al., EMNLP 2015): the highest tf-idf cosine similarity between
the sample and any one training song by the same artist.

>>> index = load_index("data/sample_lyrics.txt", encoder)         # doctest: +SKIP
>>> copied(index, encoder.encode("Oat milk money, oat milk money")).longest_tokens  # doctest: +SKIP
10
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from rapgen.data.dataset import load_tokens
from rapgen.data.lyrics import parse_header
from rapgen.model.hparams import EOT_ID

N = 8  # n-gram length: the shortest span that counts as copied
VERSION = 1
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the rolling hash
MAX_CANDIDATES = 64  # occurrences of one 8-gram checked (a hook repeated 1000 times needs only a few)


def ngram_hashes(tokens: np.ndarray, n: int = N) -> np.ndarray:
    """uint64 hash of each n-gram: h = (…(t0·M + t1)·M + …)·M + t(n-1), wrapping mod 2^64. [len - n + 1]"""
    t = np.asarray(tokens, np.uint64)
    count = len(t) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _MULT + t[k : k + count] + np.uint64(1)  # +1: a token 0 still changes the hash
    return h


@dataclasses.dataclass
class Index:
    tokens: np.ndarray  # uint16 [T] `[EOT] song [EOT] …`
    keys: np.ndarray  # uint32 [T - N + 1] top 32 bits of each n-gram hash, sorted
    positions: np.ndarray  # uint32/uint64 [T - N + 1] where each key's n-gram starts
    song_starts: np.ndarray  # int64 [S] first token of each song
    songs: List[List[str]]  # [artist, title] of each song

    def song_of(self, position: int) -> int:
        return int(np.searchsorted(self.song_starts, position, side="right")) - 1


def _songs(tokens: np.ndarray, encoder):
    ends = np.flatnonzero(tokens == EOT_ID)
    starts = ends + 1
    starts = starts[starts < len(tokens)]
    if len(tokens) and tokens[0] != EOT_ID:
        starts = np.concatenate([[0], starts])
    songs = []
    for s in starts.tolist():
        head = encoder.decode(tokens[s : s + 64].tolist()).split("\n", 1)[0]
        parsed = parse_header(head)
        songs.append(list(parsed) if parsed else ["", ""])
    return starts.astype(np.int64), songs


def ngram_keys(tokens: np.ndarray, chunk: int = 1 << 24) -> np.ndarray:
    """uint32 top bits of every n-gram hash, computed a chunk at a time. [len - N + 1]

    Only these 32 bits are sorted and searched (a query checks its candidates against the
    tokens anyway), and chunks keep the 64-bit hashes of a 1 GB dataset out of memory.
    """
    count = max(len(tokens) - N + 1, 0)
    keys = np.empty(count, np.uint32)
    for a in range(0, count, chunk):
        b = min(a + chunk, count)
        keys[a:b] = ngram_hashes(tokens[a : b + N - 1]) >> np.uint64(32)
    return keys


def build_index(tokens: np.ndarray, encoder) -> Index:
    """An index held in memory (`load_index` caches one on disk)."""
    tokens = np.asarray(tokens, np.uint16)
    keys = ngram_keys(tokens)
    order = np.argsort(keys)  # [T - N + 1]
    keys = keys[order]
    positions = order.astype(np.uint32 if len(tokens) < 2**32 else np.uint64)
    del order
    starts, songs = _songs(tokens, encoder)
    return Index(tokens, keys, positions, starts, songs)


def _digest(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens, np.uint16).tobytes()).hexdigest()[:32]


def index_path(dataset: str) -> str:
    """The cache folder of a dataset's index: beside its token cache (`rap.txt.index/`)."""
    return str(dataset).rstrip("/\\") + ".index"


def _read(folder: str, digest: str) -> Optional[Index]:
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("version") != VERSION or meta.get("digest") != digest:
            return None
        with open(os.path.join(folder, "songs.json"), encoding="utf-8") as f:
            songs = json.load(f)
        arrays = {
            name: np.load(os.path.join(folder, name + ".npy"), mmap_mode="r")
            for name in ("tokens", "keys", "positions", "song_starts")
        }
    except (OSError, ValueError, KeyError):
        return None  # absent or damaged: built again
    return Index(arrays["tokens"], arrays["keys"], arrays["positions"], np.asarray(arrays["song_starts"]), songs)


def _write(folder: str, index: Index, digest: str) -> None:
    """Write into a temp folder beside the target, then rename it into place (atomic)."""
    parent = os.path.dirname(os.path.abspath(folder))
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(folder) + ".", suffix=".tmp")
    try:
        for name in ("tokens", "keys", "positions", "song_starts"):
            np.save(os.path.join(tmp, name + ".npy"), getattr(index, name))
        with open(os.path.join(tmp, "songs.json"), "w", encoding="utf-8") as f:
            json.dump(index.songs, f)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"version": VERSION, "digest": digest, "n": N, "tokens": int(len(index.tokens))}, f)
        if os.path.isdir(folder):
            shutil.rmtree(folder)  # an outdated index of an older dataset
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_index(dataset: str, encoder, encoding: str = "utf-8", quiet: bool = True) -> Index:
    """The index of a dataset (file, folder, glob or .npz), from its cache or built and cached."""
    tokens = load_tokens(dataset, encoder, encoding=encoding, quiet=quiet)
    digest = _digest(tokens)
    cacheable = os.path.exists(str(dataset))
    folder = index_path(dataset)
    if cacheable:
        found = _read(folder, digest)
        if found is not None:
            return found
    index = build_index(tokens, encoder)
    if cacheable:
        try:
            _write(folder, index, digest)
        except OSError:
            pass  # a read-only dataset folder: the index is an optimisation only
    return index


_MEMO: Dict[str, Index] = {}


def index_for_tokens(tokens: np.ndarray, encoder) -> Index:
    """An in-memory index of `tokens`, kept for the next call with the same tokens (training samples)."""
    digest = _digest(tokens)
    if digest not in _MEMO:
        _MEMO.clear()
        _MEMO[digest] = build_index(tokens, encoder)
    return _MEMO[digest]


# -- queries ---------------------------------------------------------------------------


@dataclasses.dataclass
class Copied:
    longest_tokens: int  # longest span found verbatim in the training tokens (0 below N)
    longest_words: int
    span: str  # its text
    artist: str  # where it comes from
    title: str
    ngram_share: float  # share of the sample's token 8-grams found in the training data


def _occurrences(index: Index, sample: np.ndarray) -> List[np.ndarray]:
    """For each n-gram of `sample`, the training positions holding exactly those tokens."""
    keys = ngram_keys(sample)
    lo = np.searchsorted(index.keys, keys, side="left")
    hi = np.searchsorted(index.keys, keys, side="right")
    found = []
    tokens = index.tokens
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        hits = []
        want = sample[i : i + N]
        for pos in np.asarray(index.positions[a : min(b, a + MAX_CANDIDATES * 4)]).tolist():
            if np.array_equal(tokens[pos : pos + N], want):
                hits.append(pos)
                if len(hits) >= MAX_CANDIDATES:
                    break
        found.append(np.asarray(hits, np.int64))
    return found


def copied(index: Index, sample_tokens: Sequence[int], encoder=None) -> Copied:
    """Longest verbatim span and 8-gram share of a sample's tokens (lyrics only, no header).

    >>> copied(index, encoder.encode(text), encoder).longest_words   # doctest: +SKIP
    12
    """
    sample = np.asarray(list(sample_tokens), np.uint16)
    if len(sample) < N:
        return Copied(0, 0, "", "", "", 0.0)
    hits = _occurrences(index, sample)
    best_len, best_at, best_pos = 0, 0, 0
    for i, positions in enumerate(hits):
        for pos in positions.tolist():
            limit = min(len(sample) - i, len(index.tokens) - pos)
            same = np.asarray(index.tokens[pos : pos + limit]) == sample[i : i + limit]
            length = limit if same.all() else int(np.argmin(same))
            if length > best_len:
                best_len, best_at, best_pos = length, i, pos
    share = sum(1 for h in hits if len(h)) / len(hits)
    if best_len < N:
        return Copied(0, 0, "", "", "", round(share, 4))
    song = index.songs[index.song_of(best_pos)] if index.songs else ["", ""]
    text = encoder.decode(sample[best_at : best_at + best_len].tolist()) if encoder is not None else ""
    return Copied(best_len, len(text.split()), text.strip(), song[0], song[1], round(share, 4))


# -- GhostWriter's similarity ------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9']+")


def _tfidf(counts: collections.Counter, idf: Dict[str, float]) -> Dict[str, float]:
    return {w: c * idf[w] for w, c in counts.items()}


def max_tfidf_similarity(sample: str, songs: Sequence[str]) -> float:
    """The highest cosine similarity of tf-idf vectors between `sample` and any one of `songs`.

    idf is taken over those songs and the sample (smoothed: log((1 + n) / (1 + df)) + 1).

    >>> round(max_tfidf_similarity("a b c", ["a b c", "x y z"]), 3)
    1.0
    """
    if not songs:
        return 0.0
    docs = [collections.Counter(_WORD.findall(t.lower())) for t in [sample, *songs]]
    df = collections.Counter(w for d in docs for w in d)
    idf = {w: math.log((1 + len(docs)) / (1 + n)) + 1 for w, n in df.items()}
    vectors = [_tfidf(d, idf) for d in docs]
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vectors]
    best = 0.0
    for vec, norm in zip(vectors[1:], norms[1:]):
        if norm and norms[0]:
            dot = sum(x * vec.get(w, 0.0) for w, x in vectors[0].items())
            best = max(best, dot / (norm * norms[0]))
    return best


def artist_songs(index: Index, artist: str, encoder) -> List[str]:
    """The training songs by `artist` (case aside), decoded, without their header line."""
    wanted = artist.strip().casefold()
    out = []
    bounds = np.concatenate([index.song_starts, [len(index.tokens) + 1]])
    for k, (name, _) in enumerate(index.songs):
        if name.casefold() == wanted:
            text = encoder.decode(np.asarray(index.tokens[bounds[k] : bounds[k + 1] - 1]).tolist())
            out.append(text.split("\n", 1)[1] if "\n" in text else "")
    return out
