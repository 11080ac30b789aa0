"""Check a dataset folder (fineweb_{val,train}_*.bin) and say exactly what is wrong.

    python data/verify.py data/sample
    python data/verify.py data/datasets/fineweb10B_sp1024 --tokenizer data/tokenizers/fineweb_1024_bpe.model

Checks: every shard's header (magic, version) and size (1024 + 2N); every token id below the vocab size; each split
starts with BOS; BOS (document) and token counts, shard files and document hashes against the manifest (ours from
data/export.py beside the shards, or the official one where the official scripts keep it: data/manifest.json for
data/datasets/<name>/); the tokenizer file against the one the shards were made with (sha256); train and val share
no document; on val, the byte rule's count equals the UTF-8 length of the normalised decoded text, and decoding then
re-encoding gives back the shard tokens (datalib.prove_tokenizer: this catches a wrong tokenizer even without a
manifest). One line per check; exit 0 when all pass, 1 when any fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caseops  # noqa: E402
import datalib as dl  # noqa: E402

import toolkit  # noqa: E402  (datalib put the repository root on sys.path)

DECODE_BATCH_DOCS = 256


@dataclass
class Report:
    lines: list[tuple[bool, str, str]] = field(default_factory=list)
    echo: bool = True

    def add(self, ok: bool, check: str, msg: str) -> None:
        self.lines.append((ok, check, msg))
        if self.echo:
            print(f"{'ok  ' if ok else 'FAIL'} {check}: {msg}", flush=True)

    @property
    def failures(self) -> list[str]:
        return [f"{check}: {msg}" for ok, check, msg in self.lines if not ok]


@dataclass
class Expected:
    """What the manifest promises: per split docs / tokens / files / docs_sha256 (any may be None)."""

    source: str = ""
    tokenizer_sha256: str | None = None
    tokenizer_path: Path | None = None
    vocab_size: int | None = None
    splits: dict[str, dict] = field(default_factory=lambda: {s: {} for s in dl.SPLITS})


# The types of the manifest fields verify reads (a field may be absent or null): a dict of field -> schema, a list
# of one schema, or a type. A field of another type is one failed check, not a traceback.
_SPLIT = {"docs": int, "tokens": int, "files": [str], "n_files": int, "docs_sha256": str}
OURS_SCHEMA = {"tokenizer": {"path": str, "sha256": str, "vocab_size": int}, "splits": {s: _SPLIT for s in dl.SPLITS}}
_STATS = {f"{k}_{s}": int for k in ("docs", "tokens", "files") for s in dl.SPLITS}
OFFICIAL_SCHEMA = {
    "datasets": [{"name": str, "vocab_size": int, "tokenizer_name": str, "stats": _STATS}],
    "tokenizers": [{"name": str, "model_path": str, "sha256": str}],
}


def wrong_type(value: object, schema: object, where: str = "") -> str | None:
    """The first field of `value` whose type differs from `schema` (None when all agree)."""
    if value is None:
        return None
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return f"{where or 'the manifest'} is a {type(value).__name__}, expected an object"
        found = (wrong_type(value.get(k), sub, f"{where}.{k}".lstrip(".")) for k, sub in schema.items())
        return next((f for f in found if f), None)
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"{where} is a {type(value).__name__}, expected a list"
        return next((f for i, v in enumerate(value) if (f := wrong_type(v, schema[0], f"{where}[{i}]"))), None)
    if type(value) is not schema:  # bool is not an int here
        return f"{where} = {value!r} ({type(value).__name__}), expected {schema.__name__}"
    return None


def expected_from_manifests(folder: Path, report: Report) -> Expected:
    """Our export manifest beside the shards, else the official one two folders up (<root>/manifest.json for
    <root>/datasets/<name>/, as data/cached_challenge_fineweb.py and download_hf_docs_and_tokenize.py lay it out)."""
    ours = dl.read_manifest(folder)
    if ours is not None:
        exp = Expected(source=str(folder / dl.MANIFEST_NAME))
        if ours.get("format") != dl.MANIFEST_FORMAT:
            report.add(False, "manifest", f"{exp.source}: format {ours.get('format')!r} is not {dl.MANIFEST_FORMAT!r}")
            return Expected()
        if bad := wrong_type(ours, OURS_SCHEMA):
            report.add(False, "manifest", f"{exp.source}: {bad}; not compared against it (rewrite it with export.py)")
            return Expected()
        tok = ours.get("tokenizer") or {}
        exp.tokenizer_sha256, exp.vocab_size = tok.get("sha256"), tok.get("vocab_size")
        exp.tokenizer_path = Path(tok["path"]) if tok.get("path") else None
        for s in dl.SPLITS:
            exp.splits[s] = dict((ours.get("splits") or {}).get(s) or {})
        report.add(True, "manifest", f"{exp.source} (export manifest)")
        return exp
    root = folder.resolve().parent.parent
    official = root / dl.MANIFEST_NAME
    data = dl.read_manifest(root)
    if data is not None and (bad := wrong_type(data, OFFICIAL_SCHEMA)):
        report.add(False, "manifest", f"{official}: {bad}; not compared against it (fetch it again with download.py)")
        return Expected()
    entry = None if data is None else next((d for d in data.get("datasets", []) if d.get("name") == folder.name), None)
    if entry is None:
        report.add(
            True,
            "manifest",
            "none beside the shards: counts are not compared, the tokenizer is checked by decoding val",
        )
        return Expected()
    exp = Expected(source=f"{official} (official, dataset {folder.name})", vocab_size=entry.get("vocab_size"))
    stats = entry.get("stats") or {}
    local_train = len(dl.split_files(folder, "train"))
    for s in dl.SPLITS:
        if s == "train" and local_train != stats.get("files_train"):
            continue  # a partial download: only the val split can be compared
        exp.splits[s] = {
            "docs": stats.get(f"docs_{s}"),
            "tokens": stats.get(f"tokens_{s}"),
            "n_files": stats.get(f"files_{s}"),
        }
    tok = next((t for t in data.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), None)
    if tok and tok.get("model_path"):
        exp.tokenizer_path = root / tok["model_path"]
        exp.tokenizer_sha256 = tok.get("sha256")
    note = (
        ""
        if exp.splits["train"]
        else f"; train counts not compared ({local_train} of {stats.get('files_train')} train shards present)"
    )
    report.add(True, "manifest", exp.source + note)
    return exp


def check_shards(folder: Path, report: Report) -> dict[str, list[Path]]:
    good: dict[str, list[Path]] = {}
    for s in dl.SPLITS:
        files = dl.split_files(folder, s)
        if not files:
            pattern = folder / (dl.VAL_GLOB if s == "val" else dl.TRAIN_GLOB)
            report.add(False, f"{s} shards", f"no files match {pattern}")
            continue
        bad = 0
        for f in files:
            try:
                dl.tg.read_shard_header(f)
            except dl.tg.ShardError as e:
                report.add(False, f"{s} shards", str(e))
                bad += 1
        if not bad:
            report.add(True, f"{s} shards", f"{len(files)} file(s), headers and sizes valid")
            good[s] = files
    return good


def resolve_tokenizer(folder: Path, given: Path | None, exp: Expected, report: Report) -> tuple:
    """The tokenizer to check with and its path, or (None, None) after reporting why not."""
    candidates = [given] if given else [folder / "tokenizer.model", exp.tokenizer_path]
    path = next((p for p in candidates if p is not None and (given or p.is_file())), None)
    if path is None:
        report.add(
            False,
            "tokenizer",
            f"none given and none found ({folder / 'tokenizer.model'} is absent); pass --tokenizer PATH",
        )
        return None, None
    try:
        sp = dl.load_tokenizer(path)
    except dl.DataError as e:
        report.add(False, "tokenizer", str(e))
        return None, None
    digest = dl.sha256_file(path)
    if exp.tokenizer_sha256 and digest != exp.tokenizer_sha256:
        report.add(
            False,
            "tokenizer",
            f"{path} (sha256 {digest[:16]}...) is not the tokenizer the shards were made "
            f"with (sha256 {exp.tokenizer_sha256[:16]}... in {exp.source}); use that one",
        )
        return None, None
    if exp.vocab_size and sp.vocab_size() != exp.vocab_size:
        report.add(False, "tokenizer", f"{path} has vocab {sp.vocab_size()} but {exp.source} says {exp.vocab_size}")
        return None, None
    how = "sha256 matches the manifest" if exp.tokenizer_sha256 else "no recorded hash to compare"
    report.add(True, "tokenizer", f"{path}, vocab {sp.vocab_size()}, {how}")
    return sp, path


def check_token_ids(files: list[Path], vocab: int, split: str, report: Report) -> bool:
    """train_gpt.load_token_split's id check, one shard at a time (bounded memory, and the message names the file)."""
    for f in files:
        try:
            dl.tg.load_token_split(glob.escape(str(f)), vocab)
        except dl.tg.ShardError as e:
            report.add(False, f"{split} token ids", f"{e} (wrong tokenizer or corrupt shard)")
            return False
    report.add(True, f"{split} token ids", f"all below {vocab}")
    return True


def compare(report: Report, check: str, what: str, got: object, want: object, source: str) -> bool:
    if want is None:
        return True
    if got != want:
        report.add(False, check, f"{what} is {got} but {source} says {want}")
        return False
    return True


def scan_split(
    files: list[Path], split: str, exp: Expected, report: Report, val_digests: set[bytes] | None, progress: dl.Progress
) -> set[bytes] | None:
    """Count documents (BOS) and tokens, hash documents, compare with the manifest; for train, look for val docs.
    Returns the val digests when split == "val"."""
    want = exp.splits[split]
    digests: set[bytes] = set()
    h = hashlib.sha256()
    docs = tokens = 0
    overlap_first, overlaps = -1, 0
    try:
        for i, doc in enumerate(dl.iter_stream_docs(files, split)):
            d = dl.doc_digest(doc)
            h.update(d)
            docs += 1
            tokens += doc.size + 1
            if val_digests is None:
                digests.add(d)
            elif d in val_digests:
                overlaps += 1
                overlap_first = i if overlap_first < 0 else overlap_first
            if docs % 10_000 == 0:
                progress(f"{split}: {docs:,} documents scanned")
    except dl.DataError as e:
        report.add(False, f"{split} documents", str(e))
        return None
    ok = compare(report, f"{split} documents", "the BOS (document) count", docs, want.get("docs"), exp.source)
    ok &= compare(report, f"{split} documents", "the token count", tokens, want.get("tokens"), exp.source)
    if want.get("files") is not None:
        ok &= compare(
            report, f"{split} documents", "the shard file list", [f.name for f in files], want["files"], exp.source
        )
    ok &= compare(report, f"{split} documents", "the shard count", len(files), want.get("n_files"), exp.source)
    ok &= compare(
        report, f"{split} documents", "the documents' sha256", h.hexdigest(), want.get("docs_sha256"), exp.source
    )
    if ok:
        report.add(
            True,
            f"{split} documents",
            f"{docs:,} documents, {tokens:,} tokens"
            + (", match the manifest" if any(v is not None for v in want.values()) else ""),
        )
    if val_digests is not None:
        if overlaps:
            report.add(
                False,
                "train/val disjoint",
                f"{overlaps} train document(s) equal a val document (first: train "
                f"document {overlap_first}); val text leaked into training, re-export the dataset",
            )
        else:
            report.add(
                True,
                "train/val disjoint",
                f"none of {docs:,} train documents equals one of {len(val_digests):,} val documents",
            )
    return digests


def check_val_text(
    files: list[Path], sp, tokenizer: str, max_docs: int, threads: int, report: Report, progress: dl.Progress
) -> None:
    """Byte rule vs decoded UTF-8 length, document by document; then datalib.prove_tokenizer (decode -> encode)."""
    tables = dl.tg.build_byte_tables(sp, sp.vocab_size())
    rule_total = n = 0
    byte_bad: list[tuple[int, int, int]] = []
    for i, doc in enumerate(dl.iter_stream_docs(files, "val")):
        if max_docs and i >= max_docs:
            break
        x = np.concatenate(([dl.tg.BOS_ID], doc[:-1])).astype(np.int64)
        rule = dl.tg.count_target_bytes(x, doc.astype(np.int64), tables)
        size = len(sp.decode(doc.tolist()).encode("utf-8"))
        rule_total += rule
        n += 1
        if rule != size:
            byte_bad.append((i, rule, size))
        if n % 10_000 == 0:
            progress(f"val: {n:,} documents decoded")
    scope = f"{n:,} val documents" + (f" (the first {max_docs:,})" if max_docs else "")
    if byte_bad:
        i, rule, size = byte_bad[0]
        report.add(
            False,
            "val byte rule",
            f"{len(byte_bad)} of {scope}: the byte rule's count differs from the "
            f"decoded text's UTF-8 length (first: document {i}, {rule} vs {size} bytes)",
        )
    else:
        report.add(
            True,
            "val byte rule",
            f"{rule_total:,} bytes by the byte rule = UTF-8 length of the decoded text over {scope}",
        )
    val = np.concatenate([dl.tg.load_shard(f) for f in files])
    try:
        dl.prove_tokenizer(
            sp,
            val,
            tokenizer=tokenizer,
            source=f"the val shards of {files[0].parent}",
            max_docs=max_docs,
            threads=threads,
        )
    except dl.DataError as e:
        report.add(False, "val round trip", str(e))
    else:
        proved = len(dl.proof_documents(val, max_docs)[0])
        report.add(
            True,
            "val round trip",
            f"decode -> encode gives back the shard tokens for {proved:,} val "
            "documents (all but the last, which a shard prefix may cut)"
            if proved < n
            else f"decode -> encode gives back the shard tokens for {scope}",
        )


def verify(
    folder: Path, tokenizer: Path | None = None, max_docs: int = 0, threads: int = 0, echo: bool = True
) -> Report:
    if tokenizer is not None and not tokenizer.is_file():
        raise dl.DataError(
            f"--tokenizer {tokenizer}: no such file (give the SentencePiece .model the shards were made "
            "with, or leave it out to use <folder>/tokenizer.model or the manifest's)"
        )
    if not folder.is_dir():
        raise dl.DataError(
            f"{folder}: " + ("is a file, not a dataset folder" if folder.exists() else "no such dataset folder")
        )
    dl.check_counts(max_docs=max_docs, threads=threads)
    report = Report(echo=echo)
    progress = dl.Progress("verify", enabled=echo)
    exp = expected_from_manifests(folder, report)
    files = check_shards(folder, report)
    sp, tok_path = resolve_tokenizer(folder, tokenizer, exp, report)
    vocab = sp.vocab_size() if sp is not None else exp.vocab_size
    ids_ok = {s: vocab is not None and check_token_ids(files[s], vocab, s, report) for s in files}
    val_digests = scan_split(files["val"], "val", exp, report, None, progress) if "val" in files else None
    if "train" in files:
        scan_split(files["train"], "train", exp, report, val_digests if val_digests is not None else set(), progress)
    if sp is not None and ids_ok.get("val"):
        check_val_text(files["val"], sp, str(tok_path), max_docs, threads or os.cpu_count() or 1, report, progress)
        check_caseops(folder, files["val"], sp, report)
    return report


def check_caseops(folder: Path, val_files: list[Path], sp, report: Report) -> None:
    """CaseOps data (a CaseOps tokenizer, or byte sidecars present): one sidecar per val shard, holding exactly the
    per-position byte counts data/caseops.py computes from the val tokens."""
    sidecars = sorted(folder.glob("fineweb" + dl.tg.VAL_BYTES_MARK + "*.bin"))
    if not sidecars and not dl.tg.is_caseops_tokenizer(sp):
        return
    if not dl.tg.is_caseops_tokenizer(sp):
        report.add(False, "caseops", f"{len(sidecars)} val byte sidecar(s), but the tokenizer has no case operators")
        return
    want = [f.name.replace("_val_", dl.tg.VAL_BYTES_MARK, 1) for f in val_files]
    if [f.name for f in sidecars] != want:
        report.add(False, "caseops", f"val byte sidecars {[f.name for f in sidecars]} do not pair with the val "
                   f"shards (want {want}; data/export.py --caseops writes them)")  # fmt: skip
        return
    val = np.concatenate([dl.tg.load_shard(f) for f in val_files])
    counts = np.concatenate([dl.tg.load_shard(f) for f in sidecars])
    ops, esc = caseops.operator_ids(sp)
    expected = caseops.position_bytes(val, dl.tg.build_byte_tables(sp, sp.vocab_size()), ops, esc)
    if len(counts) != len(val) or not np.array_equal(counts, expected):
        bad = (
            int(np.argmax(counts != expected[: len(counts)])) if len(counts) == len(val) else min(len(counts), len(val))
        )
        report.add(False, "caseops", f"val byte sidecars differ from the counts of the val tokens at position {bad}")
        return
    report.add(True, "caseops", f"{len(sidecars)} val byte sidecar(s): {int(counts.sum()):,} original-text bytes")


def build_parser() -> argparse.ArgumentParser:
    p = dl.tool_parser(__doc__)
    p.add_argument("folder", type=Path, help="dataset folder holding fineweb_{val,train}_*.bin")
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer to check against (default: <folder>/tokenizer.model, else the one the manifest names)",
    )
    p.add_argument(
        "--max-docs", type=int, default=0, help="decode / round-trip only the first N val documents (0 = all)"
    )
    p.add_argument("--threads", type=int, default=0, help="encoder threads (0 = all cores)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    report = verify(a.folder, a.tokenizer, a.max_docs, a.threads, echo=not a.json)
    fails = report.failures
    if a.json:
        print(
            json.dumps({"ok": not fails, "checks": [{"ok": ok, "check": c, "message": m} for ok, c, m in report.lines]})
        )
    else:
        print(f"verify: {a.folder}: " + ("all checks passed" if not fails else f"{len(fails)} check(s) failed"))
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
