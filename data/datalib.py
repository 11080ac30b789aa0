"""Shared helpers of the data tools (download, tokenizer, export, verify, sample).

The shard format, the byte rule, the token-id range check and the standalone "▁" check live in train_gpt.py (DATA and
METRIC sections), the user-error type, the CLI runner and the shard writer in toolkit.py; this module only adds what
the offline tools need around them: document readers, tokenizer loading and proof by content, document hashes, the
export manifest and progress lines.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import toolkit  # noqa: E402
import train_gpt as tg  # noqa: E402
from toolkit import TRAIN_GLOB, VAL_GLOB, sha256_file, shard_name  # noqa: E402, F401 (the data tools use them as dl.*)

# The official SentencePiece BPE settings (SPEC section 2); only vocab_size varies.
OFFICIAL_SP_SETTINGS: dict[str, object] = dict(
    model_type="bpe", character_coverage=0.999, byte_fallback=True, split_digits=True,
    normalization_rule_name="nmt_nfkc", add_dummy_prefix=False, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
    hard_vocab_limit=False,
)  # fmt: skip
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "parameter-golf-shards"
MANIFEST_VERSION = 1
SPLITS = ("val", "train")
DOC_DIGEST_BYTES = 16
PROGRESS_EVERY_S = 2.0
MB = 1_000_000

DataError = toolkit.UserError  # the project's one user-error type (one line, exit 2 through toolkit.run_cli)


def split_files(folder: Path, split: str) -> list[Path]:
    """A split's token shards (CaseOps byte sidecars, which the val glob also matches, left out)."""
    return sorted(p for p in folder.glob(VAL_GLOB if split == "val" else TRAIN_GLOB) if tg.VAL_BYTES_MARK not in p.name)


# ---------------------------------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------------------------------


def tool_parser(doc: str) -> argparse.ArgumentParser:
    """A tool's parser: the first line of its docstring as description, the rest (usage examples) as epilog."""
    first, _, rest = doc.partition("\n")
    return argparse.ArgumentParser(description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_docs_args(p: argparse.ArgumentParser, required: bool) -> None:
    """--docs, --format, --blocks, --on-bad-line: how tokenizer.py, export.py and sample.py read documents."""
    p.add_argument(
        "--docs",
        nargs="+",
        required=required,
        default=[],
        help="documents: .jsonl files (a `text` "
        "field per line), text files (one document per file, or per blank-line block with --blocks), "
        "folders or globs",
    )
    p.add_argument(
        "--format",
        choices=("auto", "jsonl", "text"),
        default="auto",
        help="input format (auto: by extension, .jsonl/.json are JSON lines)",
    )
    p.add_argument("--blocks", action="store_true", help="text files hold one document per blank-line block")
    p.add_argument(
        "--on-bad-line",
        choices=("stop", "skip"),
        default="stop",
        help="a malformed JSON line: stop with its line number (default) or skip it with a warning",
    )


def check_counts(**flags: int) -> None:
    """Refuse a negative count flag (--max-docs=-1 ...), naming it; 0 means 'all' / 'default' everywhere."""
    for name, value in flags.items():
        if value < 0:
            raise DataError(f"--{name.replace('_', '-')} {value} must be >= 0 (0 = all)")


def check_replaceable(path: Path, flag: str) -> None:
    """A data tool replaces only files of the kinds it writes, recognised by content: a shard (*.bin opening with
    the shard magic), a JSON object (manifest.json, a sidecar), a SentencePiece model (*.model) or its vocabulary
    (*.vocab, piece<TAB>score lines); documents (*.jsonl) come only from a download. Anything else is refused."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        if path.is_dir():
            ours = False
        elif path.suffix == ".bin":
            ours = np.fromfile(path, "<i4", 1).tolist() == [tg.SHARD_MAGIC]
        elif path.suffix == ".json":
            ours = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
        elif path.suffix == ".model":
            import sentencepiece as spm

            ours = spm.SentencePieceProcessor(model_file=str(path)).vocab_size() > 0
        elif path.suffix == ".vocab":
            ours = "\t" in path.open(encoding="utf-8").readline()
        else:
            ours = path.suffix == ".jsonl"
    except (OSError, ValueError, RuntimeError):
        ours = False
    if not ours:
        raise DataError(
            f"{flag}: {path} exists and is not a file the data tools write ({path.suffix or 'no suffix'}); refusing "
            "to replace it (move it, or choose another path)"
        )


# ---------------------------------------------------------------------------------------------------------------------
# tokenizers
# ---------------------------------------------------------------------------------------------------------------------


def load_tokenizer(path: str | os.PathLike, label: str | None = None):
    """Load a SentencePiece model; refuse a missing file, a non-model file, a BOS id other than the shards' and
    (through train_gpt.build_byte_tables, the byte rule's own check) a model without a standalone "▁". Messages
    name `label` (default: the path)."""
    import sentencepiece as spm

    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise DataError(f"{label}: no such tokenizer file (give the path of a SentencePiece .model)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (RuntimeError, OSError) as e:
        raise DataError(f"{label}: not a SentencePiece model ({str(e).splitlines()[0][:120]})") from None
    try:
        tg.build_byte_tables(sp, sp.vocab_size())
    except (ValueError, tg.UserError) as e:  # the only refusal possible here: no standalone "▁" piece
        raise DataError(f"{label}: {e}") from None
    if sp.bos_id() != tg.BOS_ID:
        raise DataError(
            f"{label}: BOS id is {sp.bos_id()}, the shard format needs {tg.BOS_ID}; retrain with "
            "data/tokenizer.py (official settings)"
        )
    return sp


# The proof of a tokenizer by content lives in train_gpt.py (a run proves its tokenizer when no manifest records it).
proof_documents = tg.proof_documents
prove_tokenizer = tg.prove_tokenizer


# ---------------------------------------------------------------------------------------------------------------------
# documents
# ---------------------------------------------------------------------------------------------------------------------


class DocStats:
    """Counts kept while reading documents (bad lines skipped, empty documents dropped)."""

    def __init__(self) -> None:
        self.bad_lines = 0
        self.empty_docs = 0
        self.text_bytes = 0


def resolve_inputs(patterns: Sequence[str]) -> list[Path]:
    """Expand files, folders (every regular file inside, sorted) and globs; each must match something."""
    out: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                raise DataError(f"{p}: folder holds no files")
        elif p.is_file():
            files = [p]
        else:
            files = sorted(Path(x) for x in glob.glob(pat) if Path(x).is_file())
            if not files:
                raise DataError(f"{pat}: no such file, and no file matches it as a pattern")
        out.extend(files)
    return out


def _decode_utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); convert the file to UTF-8"
        ) from None


def _jsonl_docs(path: Path, on_bad_line: str, stats: DocStats) -> Iterator[str]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode_utf8(raw, f"{path}:{lineno}")
            if not line.strip():
                continue
            problem = ""
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"malformed JSON ({e.msg} at column {e.colno})"
            else:
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    problem = 'not a JSON object with a string "text" field'
            if problem:
                if on_bad_line == "stop":
                    raise DataError(f"{path}:{lineno}: {problem}; fix the line or pass --on-bad-line skip")
                print(f"warning: {path}:{lineno}: {problem}; line skipped", file=sys.stderr)
                stats.bad_lines += 1
                continue
            yield obj["text"]


def _block_docs(path: Path) -> Iterator[str]:
    block: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode_utf8(raw, f"{path}:{lineno}")
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block)
                block = []
    if block:
        yield "".join(block)


def iter_documents(
    paths: Sequence[Path],
    fmt: str = "auto",
    blocks: bool = False,
    on_bad_line: str = "stop",
    stats: DocStats | None = None,
    keep_empty: bool = False,
) -> Iterator[str]:
    """Yield document texts, streaming. fmt: jsonl (a `text` field per line), text (one document per file, or per
    blank-line block with blocks=True) or auto (by extension). Documents that are empty or only whitespace are
    dropped and counted (every document must carry tokens so that document hashes identify it), unless keep_empty
    (the official export keeps them: a lone BOS)."""
    stats = stats if stats is not None else DocStats()
    for path in paths:
        kind = fmt if fmt != "auto" else ("jsonl" if path.suffix.lower() in (".jsonl", ".json") else "text")
        if kind == "jsonl":
            docs: Iterable[str] = _jsonl_docs(path, on_bad_line, stats)
        elif blocks:
            docs = _block_docs(path)
        else:
            docs = [_decode_utf8(path.read_bytes(), str(path))]
        for text in docs:
            if not text.strip():
                stats.empty_docs += 1
                if not keep_empty:
                    continue
            yield text


def batched(items: Iterable[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    """Group documents into batches bounded in count and in characters (bounded memory)."""
    batch: list[str] = []
    chars = 0
    for item in items:
        batch.append(item)
        chars += len(item)
        if len(batch) >= max_docs or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------------------------------
# document hashes over token streams
# ---------------------------------------------------------------------------------------------------------------------


def doc_digest(doc_tokens: np.ndarray | bytes) -> bytes:
    """Identity of a document: BLAKE2b-128 of its token ids (uint16 little-endian, BOS excluded)."""
    data = doc_tokens if isinstance(doc_tokens, bytes) else np.asarray(doc_tokens, dtype="<u2").tobytes()
    return hashlib.blake2b(data, digest_size=DOC_DIGEST_BYTES).digest()


def iter_stream_docs(files: Sequence[Path], what: str) -> Iterator[np.ndarray]:
    """Yield each document's tokens (BOS excluded) of a split stored across `files` (documents run on across shard
    boundaries). The stream must start with BOS."""
    carry: list[np.ndarray] = []
    started = False
    for path in files:
        toks = tg.load_shard(path)
        if toks.size == 0:
            continue
        bos = np.flatnonzero(toks == tg.BOS_ID)
        if not started:
            if bos.size == 0 or bos[0] != 0:
                raise DataError(
                    f"{path}: the {what} split does not start with BOS (id {tg.BOS_ID}); the first token "
                    f"is {int(toks[0])} (every document must be BOS + tokens; re-export it)"
                )
            started = True
        first = int(bos[0]) if bos.size else toks.size
        if first:
            carry.append(toks[:first])
        if bos.size:
            if carry:
                yield np.concatenate(carry) if len(carry) > 1 else carry[0]
            for a, b in zip(bos[:-1].tolist(), bos[1:].tolist()):
                yield toks[a + 1 : b]
            carry = [toks[int(bos[-1]) + 1 :]]
    if carry:
        yield np.concatenate(carry) if len(carry) > 1 else carry[0]


# ---------------------------------------------------------------------------------------------------------------------
# manifest and progress
# ---------------------------------------------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict | None:
    return read_json(folder / MANIFEST_NAME)


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when there is no such file; anything else is refused, naming the file."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); fix or replace the file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def write_json(path: Path, data: dict) -> None:
    tg.atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))


class Progress:
    """Prints a progress line to stderr at most every PROGRESS_EVERY_S seconds (and always when forced)."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled
        self.t0 = self.last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.enabled and (force or now - self.last >= PROGRESS_EVERY_S):
            self.last = now
            print(f"{self.label}: {msg} [{now - self.t0:.1f}s]", file=sys.stderr, flush=True)
