"""Export documents to shards in the official format, with a manifest beside them.

    python data/export.py --docs ../shared/data/text/fineweb_docs_200.jsonl --tokenizer fineweb_1024_bpe.model \\
        --out data/datasets/my_sp1024 --val-docs 50 --shard-tokens 100000000
    python data/export.py --docs data/docs_selected.jsonl --official --tokenizer data/tokenizers/my_4096.model \\
        --out data/datasets/fineweb10B_sp4096     # the official rebuild route, with any tokenizer

Each document becomes BOS (id 1) + its tokens, no EOS; documents run on across shard boundaries. The first
--val-docs documents go to fineweb_val_*.bin, the rest to fineweb_train_*.bin. Documents that are empty or only
whitespace are dropped (counted in the manifest); a training document whose tokens equal a validation document's
is dropped too (counted), so train and val share no document.

Streaming with bounded memory: documents are read and encoded in batches (SentencePiece's multi-threaded batch
encode), and at most one shard buffer is held. Everything is written into a staging folder inside --out and moved
into place only when the whole export succeeded; manifest.json is written last.

--official rebuilds shards as the challenge's data/download_hf_docs_and_tokenize.py does from docs_selected.jsonl:
every document is kept (an empty one is a lone BOS, a train copy of a val document stays), --val-docs defaults to
the sidecar's docs_val (docs_selected.source_manifest.json beside the input, else 50,000), and the number of
documents read must equal the sidecar's num_docs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caseops  # noqa: E402
import datalib as dl  # noqa: E402

import toolkit  # noqa: E402  (datalib put the repository root on sys.path)

DEFAULT_VAL_DOCS = 50_000
DEFAULT_SHARD_TOKENS = 10**8
BATCH_DOCS = 512
BATCH_CHARS = 2_000_000
STAGING_PREFIX = ".export-staging-"
TOKENIZER_COPY_NAME = "tokenizer.model"
SIDECAR_SUFFIX = ".source_manifest.json"  # docs_selected.jsonl -> docs_selected.source_manifest.json


class ShardWriter:
    """Fills fixed-size shards of one split; a shard is written (atomically) as soon as it is full."""

    def __init__(self, folder: Path, split: str, shard_tokens: int):
        self.folder, self.split, self.shard_tokens = folder, split, shard_tokens
        self.buf = np.empty(shard_tokens, dtype=dl.tg.SHARD_TOKEN_DTYPE)
        self.fill = 0
        self.files: list[str] = []

    def add(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < tokens.size:
            take = min(self.shard_tokens - self.fill, tokens.size - pos)
            self.buf[self.fill : self.fill + take] = tokens[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if self.fill:
            name = dl.shard_name(self.split, len(self.files))
            toolkit.write_shard(self.folder / name, self.buf[: self.fill])
            self.files.append(name)
            self.fill = 0


class SplitStats:
    def __init__(self) -> None:
        self.docs = 0
        self.tokens = 0
        self.hash = hashlib.sha256()  # over the split's document digests, in order

    def as_dict(self, files: list[str]) -> dict[str, object]:
        return {"docs": self.docs, "tokens": self.tokens, "files": files, "docs_sha256": self.hash.hexdigest()}


def encode_batch(sp, texts: list[str], threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch; return the flat stream (BOS + tokens per document) and each document's end offset."""
    encoded = sp.encode(texts, num_threads=threads)
    flat: list[int] = []
    for ids in encoded:
        flat.append(dl.tg.BOS_ID)
        flat.extend(ids)
    ends = np.cumsum(np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded)))
    return np.array(flat, dtype=dl.tg.SHARD_TOKEN_DTYPE), ends


def export_documents(
    docs: Iterable[str],
    sp,
    out: Path,
    val_docs: int,
    shard_tokens: int,
    threads: int,
    stats: dl.DocStats | None = None,
    progress: dl.Progress | None = None,
    keep_val_copies: bool = False,
    expected_docs: tuple[Path, int] | None = None,
    val_bytes: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, object]:
    """Encode and write the shards of `docs` (and val_bytes' CaseOps sidecars) into `out`, an empty staging folder;
    return the split summaries for the manifest. A train document equal to a val document is dropped unless
    keep_val_copies. DataError: no documents, not expected_docs' (sidecar, count), or nothing for training."""
    stats, progress = stats if stats is not None else dl.DocStats(), progress or dl.Progress("export", enabled=False)
    writers = {s: ShardWriter(out, s, shard_tokens) for s in (*dl.SPLITS, "val_bytes")}  # CaseOps byte sidecars
    split_stats = {s: SplitStats() for s in dl.SPLITS}
    val_digests: set[bytes] = set()
    dropped_duplicates = text_bytes = 0
    for texts in dl.batched(docs, BATCH_DOCS, BATCH_CHARS):
        text_bytes += sum(len(t.encode("utf-8")) for t in texts)
        flat, ends = encode_batch(sp, texts, threads)
        raw = flat.tobytes()
        start = 0
        for end in ends.tolist():
            digest = dl.doc_digest(raw[2 * (start + 1) : 2 * end])
            split = "val" if split_stats["val"].docs < val_docs else "train"
            if split == "val":
                val_digests.add(digest)
            elif digest in val_digests and not keep_val_copies:
                dropped_duplicates += 1
                start = end
                continue
            st = split_stats[split]
            st.docs += 1
            st.tokens += end - start
            st.hash.update(digest)
            writers[split].add(flat[start:end])
            if split == "val" and val_bytes is not None:  # a count per val token, shard for shard
                writers["val_bytes"].add(val_bytes(flat[start:end]))
            start = end
        done = split_stats["val"].docs + split_stats["train"].docs
        progress(
            f"{done:,} docs ({split_stats['val'].docs:,} val), "
            f"{split_stats['val'].tokens + split_stats['train'].tokens:,} tokens, "
            f"{text_bytes / dl.MB / max(progress.elapsed(), 1e-9):.2f} MB/s of text"
        )
    for w in writers.values():
        w.flush()
    total = split_stats["val"].docs + split_stats["train"].docs + dropped_duplicates
    if expected_docs is not None and total != expected_docs[1]:
        raise dl.DataError(
            f"{expected_docs[0]}: says num_docs {expected_docs[1]:,} but the input holds {total:,} "
            "documents (a truncated or different docs file; pass the docs file it describes)"
        )
    if total == 0:
        raise dl.DataError("the input holds no documents (every file empty, or only blank documents)")
    if split_stats["train"].docs == 0 and dropped_duplicates:
        raise dl.DataError(
            f"all {dropped_duplicates} documents after the first --val-docs {val_docs} equal a val "
            "document and were dropped: nothing is left for training"
        )
    if split_stats["train"].docs == 0:
        raise dl.DataError(
            f"only {split_stats['val'].docs} documents, all taken by --val-docs {val_docs}: nothing is "
            "left for training; lower --val-docs or add documents"
        )
    stats.text_bytes = text_bytes
    return {
        "splits": {s: split_stats[s].as_dict(writers[s].files) for s in dl.SPLITS},
        "dropped": {
            "empty_docs": stats.empty_docs,
            "bad_lines": stats.bad_lines,
            "train_docs_equal_to_a_val_doc": dropped_duplicates,
        },
        "text_bytes": text_bytes,
        **({"caseops": {"val_bytes_files": writers["val_bytes"].files}} if val_bytes is not None else {}),
    }


def existing_outputs(out: Path) -> list[Path]:
    return sorted([*out.glob(dl.VAL_GLOB), *out.glob(dl.TRAIN_GLOB), *out.glob(dl.MANIFEST_NAME)])  # sidecars too


def check_settings(val_docs: int | None, shard_tokens: int, threads: int, out: Path) -> None:
    """Refuse bad --val-docs / --shard-tokens / --threads / --out before any work."""
    if val_docs is not None and val_docs < 1:
        raise dl.DataError(
            f"--val-docs {val_docs}: the val split would be empty (train_gpt.py scores on it and "
            f"verify checks it); pass at least 1 (default {DEFAULT_VAL_DOCS:,})"
        )
    if not 0 < shard_tokens < 2**31:
        raise dl.DataError(f"--shard-tokens {shard_tokens} must be in [1, 2^31 - 1]")
    dl.check_counts(threads=threads)
    if out.exists() and not out.is_dir():
        raise dl.DataError(f"--out {out}: is a file, not a folder")


def read_sidecar(paths: Sequence[Path]) -> tuple[Path, dict] | None:
    """The official docs sidecar beside a single input (docs_selected.jsonl -> docs_selected.source_manifest.json)."""
    if len(paths) != 1:
        return None
    path = paths[0].with_name(paths[0].stem + SIDECAR_SUFFIX)
    data = dl.read_json(path)
    return None if data is None else (path, data)


def split_counts(sidecar: tuple[Path, dict] | None, val_docs: int | None) -> tuple[int, tuple[Path, int] | None]:
    """(val documents, (sidecar path, total documents expected) or None): --val-docs, else the sidecar's docs_val,
    else DEFAULT_VAL_DOCS; the sidecar's counts must be positive integers."""
    if sidecar is None:
        return (DEFAULT_VAL_DOCS if val_docs is None else val_docs), None
    for key in ("num_docs", "docs_val"):
        if not isinstance(sidecar[1].get(key), int) or sidecar[1][key] < 1:
            raise dl.DataError(f"{sidecar[0]}: {key} is {sidecar[1].get(key)!r}, expected a positive integer")
    return (sidecar[1]["docs_val"] if val_docs is None else val_docs), (sidecar[0], sidecar[1]["num_docs"])


def make_manifest(tokenizer: Path, sp, val_docs: int, shard_tokens: int, official: bool, sidecar, paths, summary):
    """The manifest.json written beside the shards (train_gpt.py checks the tokenizer's sha256 against it)."""
    return {
        "format": dl.MANIFEST_FORMAT,
        "format_version": dl.MANIFEST_VERSION,
        "tokenizer": {
            "path": str(tokenizer.resolve()),
            "sha256": dl.sha256_file(tokenizer),
            "vocab_size": sp.vocab_size(),
        },
        "bos_id": dl.tg.BOS_ID,
        "append_eos": False,
        "val_docs_requested": val_docs,
        "shard_tokens": shard_tokens,
        "official": official,
        "sidecar": None if sidecar is None else {"path": str(sidecar[0].resolve()), **sidecar[1]},
        "doc_hash": f"blake2b-{8 * dl.DOC_DIGEST_BYTES} of each document's uint16 LE token ids (BOS excluded); "
        "a split's docs_sha256 is the sha256 of its digests in order",
        "inputs": [str(p) for p in paths],
        **summary,
    }


def caseops_counter(sp, tokenizer: Path, caseops_text: bool) -> Callable[[np.ndarray], np.ndarray] | None:
    """With --caseops, the function giving a document's per-position original-text bytes; None without. A CaseOps
    tokenizer without --caseops, or --caseops with another tokenizer, is refused."""
    if not caseops_text and not dl.tg.is_caseops_tokenizer(sp):
        return None
    if not caseops_text:
        raise dl.DataError(f"{tokenizer} is a CaseOps tokenizer (case operator pieces): pass --caseops")
    try:
        ops, esc = caseops.operator_ids(sp)
    except ValueError as e:
        raise dl.DataError(f"--caseops: {tokenizer}: {e}") from None
    tables = dl.tg.build_byte_tables(sp, sp.vocab_size())
    return lambda doc: caseops.position_bytes(doc, tables, ops, esc)


def export(
    inputs: Sequence[str],
    tokenizer: Path,
    out: Path,
    val_docs: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    fmt: str = "auto",
    blocks: bool = False,
    on_bad_line: str = "stop",
    threads: int = 0,
    overwrite: bool = False,
    copy_tokenizer: bool = False,
    quiet: bool = False,
    official: bool = False,
    caseops_text: bool = False,
) -> dict[str, object]:
    """The whole export: check arguments, write shards via a staging folder, then the manifest. Returns it.
    val_docs None: 50,000, or with `official` the sidecar's docs_val. `official`: keep every document and check the
    count against the sidecar (see the module docstring)."""
    check_settings(val_docs, shard_tokens, threads, out)
    paths = dl.resolve_inputs(inputs)
    sp = dl.load_tokenizer(tokenizer)
    if sp.vocab_size() > 1 << 16:
        raise dl.DataError(f"{tokenizer}: vocab {sp.vocab_size()} does not fit the uint16 shard format")
    sidecar = read_sidecar(paths) if official else None
    val_bytes = caseops_counter(sp, tokenizer, caseops_text)
    val_docs, expected_docs = split_counts(sidecar, val_docs)
    old = existing_outputs(out) if out.is_dir() else []
    if old and not overwrite:
        raise dl.DataError(
            f"{out} already holds a dataset ({old[0].name}, {len(old)} file(s)); pass --overwrite "
            "to replace it or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise dl.DataError(f"--out {out}: is a file, not a folder")
    for path in old + ([out / TOKENIZER_COPY_NAME] if copy_tokenizer else []):
        dl.check_replaceable(path, "--out")
    threads = threads or os.cpu_count() or 1
    progress = dl.Progress("export", enabled=not quiet)
    stats = dl.DocStats()
    created = not out.exists()
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir(parents=True)
    done = False
    try:
        docs = dl.iter_documents(paths, fmt, blocks, on_bad_line, stats, keep_empty=official)
        docs = map(caseops.encode, docs) if caseops_text else docs
        summary = export_documents(
            docs,
            sp,
            staging,
            val_docs,
            shard_tokens,
            threads,
            stats,
            progress,
            keep_val_copies=official,
            expected_docs=expected_docs,
            val_bytes=val_bytes,
        )
        if copy_tokenizer and tokenizer.resolve() != (out / TOKENIZER_COPY_NAME).resolve():
            shutil.copyfile(tokenizer, staging / TOKENIZER_COPY_NAME)
        manifest = make_manifest(tokenizer, sp, val_docs, shard_tokens, official, sidecar, paths, summary)
        dl.write_json(staging / dl.MANIFEST_NAME, manifest)
        for path in old:
            path.unlink()
        for item in sorted(staging.iterdir(), key=lambda f: f.name == dl.MANIFEST_NAME):  # manifest last
            os.replace(item, out / item.name)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done and not any(out.iterdir()):
            out.rmdir()  # a failed export into a new folder leaves nothing behind
    sv, st = manifest["splits"]["val"], manifest["splits"]["train"]
    progress(
        f"wrote {len(sv['files'])} val + {len(st['files'])} train shards to {out}: val {sv['docs']:,} docs / "
        f"{sv['tokens']:,} tokens, train {st['docs']:,} docs / {st['tokens']:,} tokens, "
        f"{summary['text_bytes'] / dl.MB / max(progress.elapsed(), 1e-9):.2f} MB/s of text",
        force=True,
    )
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = dl.tool_parser(__doc__)
    dl.add_docs_args(p, required=False)
    p.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)  # the older spelling of --docs
    p.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece .model file")
    p.add_argument("--out", type=Path, required=True, help="output folder for the shards and manifest.json")
    p.add_argument(
        "--val-docs",
        type=int,
        help=f"first N documents form the val split (default {DEFAULT_VAL_DOCS:,}, "
        "the official value; with --official, the sidecar's docs_val)",
    )
    p.add_argument(
        "--official",
        action="store_true",
        help="rebuild as the official export does from "
        "docs_selected.jsonl: keep every document, follow and check its sidecar",
    )
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard (default 10^8)")
    p.add_argument("--threads", type=int, default=0, help="encoder threads (0 = all cores)")
    p.add_argument(
        "--copy-tokenizer", action="store_true", help=f"also copy the tokenizer to <out>/{TOKENIZER_COPY_NAME}"
    )
    p.add_argument(
        "--caseops",
        action="store_true",
        help="CaseOps: transform the text's case into operators (a tokenizer from data/tokenizer.py --caseops) "
        "and write the val byte sidecars fineweb_val_bytes_*.bin (train_gpt.py CASEOPS=1)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the dataset already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    docs = [*a.docs, *a.inputs]
    if not docs:
        raise dl.DataError("--docs is required: the documents to export (.jsonl, text files, folders or globs)")
    export(
        docs,
        a.tokenizer,
        a.out,
        a.val_docs,
        a.shard_tokens,
        a.format,
        a.blocks,
        a.on_bad_line,
        a.threads,
        a.overwrite,
        a.copy_tokenizer,
        a.quiet,
        a.official,
        a.caseops,
    )
    return 0


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
