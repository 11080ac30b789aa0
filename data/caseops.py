"""CaseOps: the lossless case transform of the records from 2026-04-18 on, and the byte counts that keep bpb exact.

The transform rewrites ASCII capitals as lowercase letters behind operator characters, so the tokenizer can share
pieces between "the", "The" and "THE": over each maximal run of ASCII letters, a lowercase word stays as it is, an
all-capitals word of two or more letters becomes ALLCAPS + the word in lowercase, a capitalised word TITLE + the
word in lowercase, and any other word TITLE (if its first letter is a capital) + its first letter, then CAPNEXT
before each later capital, all in lowercase. An operator character that occurs in the text itself is written ESC +
itself. Nothing else changes, so decode(encode(text)) == text for every string.

Scoring stays in bytes of the original text: a case operator carries no byte of it (an escaped literal keeps its
own), every other piece the official byte rule's count (case does not change an ASCII letter's length). Those
counts go into per-position byte sidecars beside the val shards (fineweb_val_bytes_*.bin), which train_gpt.py reads
with CASEOPS=1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402

TITLE, ALLCAPS, CAPNEXT, ESC = tg.CASEOPS_OPERATORS
OPERATORS = frozenset(tg.CASEOPS_OPERATORS)


def _is_letter(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def _encode_word(word: str) -> str:
    low = word.lower()
    if word == low:
        return word
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + low
    if word[0].isupper() and word[1:].islower():
        return TITLE + low
    out = [TITLE] if word[0].isupper() else []
    out.append(low[0])
    for ch, lc in zip(word[1:], low[1:]):
        out += [CAPNEXT, lc] if ch.isupper() else [lc]
    return "".join(out)


def encode(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        if _is_letter(text[i]):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
            out.append(_encode_word(text[i:j]))
            i = j
        else:
            out.append(ESC + text[i] if text[i] in OPERATORS else text[i])
            i += 1
    return "".join(out)


def decode(text: str) -> str:
    """The inverse of encode; a string encode could not have produced raises ValueError."""
    out: list[str] = []
    escaped = capnext = caps_run = False
    pending = None  # TITLE or ALLCAPS, waiting for the first letter of its word
    for ch in text:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == ESC:
            escaped, caps_run = True, False
        elif ch in (TITLE, ALLCAPS):
            pending = ch
        elif ch == CAPNEXT:
            capnext = True
        elif _is_letter(ch):
            if ch.isupper():
                raise ValueError(f"a capital {ch!r} in CaseOps text (capitals are written with operators)")
            caps_run = caps_run or pending == ALLCAPS
            out.append(ch.upper() if caps_run or capnext or pending == TITLE else ch)
            pending, capnext = None, False
        else:
            if pending or capnext:
                raise ValueError(f"a case operator before {ch!r}, which is not an ASCII letter")
            out.append(ch)
            caps_run = False
    if escaped or pending or capnext:
        raise ValueError("CaseOps text ends with an operator that applies to nothing")
    return "".join(out)


def operator_ids(sp) -> tuple[np.ndarray, int]:
    """The piece ids of the four operators (TITLE, ALLCAPS, CAPNEXT, ESC) and ESC's; refused for a tokenizer that
    does not hold them as pieces (train one with data/tokenizer.py --caseops)."""
    if not tg.is_caseops_tokenizer(sp):
        raise ValueError("the tokenizer has no case operator pieces: train it with data/tokenizer.py --caseops")
    ids = np.array([sp.piece_to_id(op) for op in tg.CASEOPS_OPERATORS], dtype=np.int64)
    return ids, int(ids[3])


def position_bytes(tokens: np.ndarray, tables, ops: np.ndarray, esc: int) -> np.ndarray:
    """For a stream of tokens (each document BOS + its pieces), the original text's bytes carried by each position
    as a target: the official rule (base bytes, plus a leading space unless the previous token is a boundary), but 0
    for an operator, except a literal one right after an ESC that is not itself a literal. Position 0: 0."""
    base, space, boundary = tables.base, tables.space, tables.boundary  # train_gpt.ByteTables
    x, y = tokens[:-1].astype(np.int64), tokens[1:].astype(np.int64)
    counts = base[y].astype(np.int64) + (space[y] & ~boundary[x])
    literal = np.zeros(len(y), dtype=bool)
    for p in np.flatnonzero(y == esc).tolist():  # left to right: an escaped ESC escapes nothing
        if not literal[p] and p + 1 < len(y):
            literal[p + 1] = True
    counts[np.isin(y, ops) & ~literal] = 0
    return np.concatenate(([0], counts)).astype(np.uint16)
