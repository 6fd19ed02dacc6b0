"""Instruction tokenizer that needs no downloads: lower-cased words hashed into a fixed vocabulary.

Any word gets an id (a new skill's new noun included), the mapping is stable across processes
and machines (crc32, not Python's salted `hash`), and there is no vocabulary file to ship or
keep in sync with a checkpoint: the vocabulary size lives in the policy config.
Ids 0 and 1 are reserved for padding and for "no instruction".
"""
from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

PAD_ID = 0
EMPTY_ID = 1
_RESERVED = 2
_WORD = re.compile(r"[a-z0-9]+")


def words(instruction: str) -> list[str]:
    """The instruction's words: lower case, letters and digits only ("Put the RED cube." -> put, the, red, cube)."""
    return _WORD.findall(instruction.lower())


def word_id(word: str, vocab_size: int) -> int:
    return _RESERVED + zlib.crc32(word.encode()) % (vocab_size - _RESERVED)


def tokenize(instructions: Sequence[str], vocab_size: int, max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n, max_words) int64, padded with PAD_ID, and a mask (n, max_words) bool of real tokens.

    Instructions longer than `max_words` words are truncated; an empty one becomes [EMPTY_ID]
    so attention always has a key to look at.
    """
    ids = np.full((len(instructions), max_words), PAD_ID, dtype=np.int64)
    for i, text in enumerate(instructions):
        toks = [word_id(w, vocab_size) for w in words(text)][:max_words] or [EMPTY_ID]
        ids[i, : len(toks)] = toks
    return ids, ids != PAD_ID
