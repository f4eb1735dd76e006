"""GPT-2's byte-level BPE tokenizer, read from a model directory's `encoder.json` and `vocab.bpe`.

Text is split into words by GPT-2's regular expression, each word's UTF-8 bytes are
spelled with 256 printable stand-in characters, and the merge rules of `vocab.bpe` are
applied lowest rank first. Every string round-trips exactly, since any byte has a token.

>>> enc = load_encoder("../shared/gpt2")          # doctest: +SKIP
>>> enc.encode("Hello world")                      # doctest: +SKIP
[15496, 995]
>>> enc.decode([15496, 995])                       # doctest: +SKIP
'Hello world'
>>> enc.encode("<|endoftext|>", allowed_special="all")   # doctest: +SKIP
[50256]
"""

from __future__ import annotations

import functools
import json
import os
from typing import Collection, Dict, Iterable, List, Tuple, Union

import regex

from rapgen.errors import RapgenError

EOT = "<|endoftext|>"

# GPT-2's pre-tokenizer: contractions, letters, digits, other symbols, each optionally after
# one space; runs of whitespace keep their last space for the next word (`\s+(?!\S)`).
WORD_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> Dict[int, str]:
    """Byte value -> the printable character `vocab.bpe` uses for it.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, soft
    hyphen…) are moved to code points 256 and up, so no merge rule holds whitespace.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


class Encoder:
    """Encodes text to GPT-2 token ids and back. Build one with `load_encoder`."""

    def __init__(self, encoder: Dict[str, int], merges: List[Tuple[str, str]]):
        self.encoder = encoder
        self.decoder = {i: s for s, i in encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        byte_encoder = bytes_to_unicode()
        byte_decoder = {c: b for b, c in byte_encoder.items()}
        # One translation table turns a word's UTF-8 bytes (read as Latin-1) into BPE symbols.
        self._byte_table = str.maketrans({chr(b): c for b, c in byte_encoder.items()})
        self._token_bytes = {i: bytes(byte_decoder[c] for c in s) for i, s in self.decoder.items()}
        self.eot_id = encoder[EOT]
        self.special = {EOT: self.eot_id}
        self._cache: Dict[str, Tuple[int, ...]] = {}

    @property
    def n_vocab(self) -> int:
        return len(self.encoder)

    def _bpe(self, symbols: str) -> List[str]:
        """Apply merges to one word's byte symbols, lowest rank first.

        `pair_ranks[i]` is the rank of (parts[i], parts[i + 1]); a merge only changes the two
        entries beside it, so they are all that is looked up again.
        """
        ranks, none = self.ranks, len(self.ranks)  # `none`: ranks above every merge
        parts = list(symbols)
        pair_ranks = [ranks.get(pair, none) for pair in zip(parts, parts[1:])]
        while pair_ranks:
            rank = min(pair_ranks)
            if rank == none:
                break
            i = pair_ranks.index(rank)
            while True:
                # Merge every occurrence of this pair, left to right, as GPT-2 does. The pairs
                # a merge creates contain the merged symbol, so none of them is this pair.
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
                del pair_ranks[i]
                if i > 0:
                    pair_ranks[i - 1] = ranks.get((parts[i - 1], parts[i]), none)
                if i < len(pair_ranks):
                    pair_ranks[i] = ranks.get((parts[i], parts[i + 1]), none)
                try:
                    i = pair_ranks.index(rank, i + 1)
                except ValueError:
                    break
        return parts

    def _encode_word(self, word: str) -> Tuple[int, ...]:
        ids = self._cache.get(word)
        if ids is None:
            symbols = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
            whole = self.encoder.get(symbols)
            # Most words are a token of their own: take it without merging, as tiktoken
            # (OpenAI's tokenizer, which the tests compare ids with) does.
            ids = (whole,) if whole is not None else tuple(self.encoder[p] for p in self._bpe(symbols))
            if len(self._cache) < 500_000:  # bound memory on pathological inputs
                self._cache[word] = ids
        return ids

    def _encode_ordinary(self, text: str, out: List[int]) -> None:
        cache, encode_word, extend = self._cache, self._encode_word, out.extend
        for word in WORD_PATTERN.findall(text):
            ids = cache.get(word)
            extend(ids if ids is not None else encode_word(word))

    def encode(self, text: str, allowed_special: Union[str, Collection[str]] = ()) -> List[int]:
        """Token ids of `text`.

        `<|endoftext|>` becomes the single id 50256 only if `allowed_special` is `"all"` or
        contains it (rapgen allows it for song separators); otherwise it is ordinary text
        and encodes as seven tokens, exactly as GPT-2's own encoder does.

        >>> enc.encode("yeah yeah")                # doctest: +SKIP
        [43669, 10194]
        """
        allowed = set(self.special) if allowed_special == "all" else set(allowed_special)
        out: List[int] = []
        if EOT in allowed and EOT in text:
            pieces = text.split(EOT)
            for i, piece in enumerate(pieces):
                if i:
                    out.append(self.eot_id)
                self._encode_ordinary(piece, out)
        else:
            self._encode_ordinary(text, out)
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self._token_bytes[int(i)] for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of token ids; bytes that are not valid UTF-8 become U+FFFD by default.

        >>> enc.decode(enc.encode("Dödsdans i Stockholm 🔥"))   # doctest: +SKIP
        'Dödsdans i Stockholm 🔥'
        """
        try:
            return self.decode_bytes(ids).decode("utf-8", errors=errors)
        except KeyError as e:
            raise RapgenError(f"token id {e.args[0]} is outside the vocabulary (0..{self.n_vocab - 1})") from None


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise RapgenError(f"{path} is missing: {what} comes with every model (rapgen download 124M)") from None


@functools.lru_cache(maxsize=4)
def _load(encoder_path: str, vocab_path: str) -> Encoder:
    try:
        encoder = json.loads(_read(encoder_path, "the vocabulary"))
    except ValueError as e:
        raise RapgenError(f"{encoder_path} is not valid JSON ({e})") from None
    lines = _read(vocab_path, "the merge list").split("\n")
    # The first line is `#version: 0.2`; the file ends with a newline.
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    if any(len(m) != 2 for m in merges):
        raise RapgenError(f"{vocab_path} is not a BPE merge list (each line should hold two symbols)")
    if EOT not in encoder:
        raise RapgenError(f"{encoder_path} has no {EOT} token: is it a GPT-2 vocabulary?")
    return Encoder(encoder, merges)


def load_encoder(model_dir: str) -> Encoder:
    """The tokenizer of a model directory (or any folder holding encoder.json and vocab.bpe).

    Loaded once per folder and cached.
    """
    model_dir = os.path.abspath(model_dir)
    return _load(os.path.join(model_dir, "encoder.json"), os.path.join(model_dir, "vocab.bpe"))
