"""Download the challenge's cached FineWeb export: all val shards, the first N train shards, the tokenizer.

    python data/download.py --variant sp1024 --train-shards 10      # or: python data/download.py 10
    python data/download.py --variant sp8192 --repo kevclark/parameter-golf --train-shards 4
    python data/download.py --variant sp1024 --with-docs            # also docs_selected.jsonl + its sidecar
    python data/download.py --variant sp1024 --base-url /path/to/local/mirror     # or file:///path/to/mirror

Accepts what the official data/cached_challenge_fineweb.py accepts: the train-shard count as --train-shards or
positionally (default 80), --variant sp<VOCAB_SIZE> or byte260, --with-docs, --skip-manifest (use the local
manifest, fetch nothing else for it), and MATCHED_FINEWEB_REPO_ID / MATCHED_FINEWEB_REMOTE_ROOT_PREFIX as the
defaults of --repo / --remote-root. Same local layout under --out (default data/): manifest.json,
docs_selected.jsonl, docs_selected.source_manifest.json, datasets/<name>/fineweb_{val,train}_%06d.bin,
tokenizers/... (data/verify.py finds the manifest there).

Manifest-driven: <base>/manifest.json lists the datasets (name fineweb10B_<variant>, stats.files_val,
stats.files_train, tokenizer_name) and the tokenizers (model_path, vocab_path, path). A file already present and
complete is skipped: a shard whose header matches its size, any file whose size / sha256 match the manifest when it
lists them (optional "files": {path: {"bytes", "sha256"}}). Each download streams to a temporary name and is renamed
only when complete and checked.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datalib as dl  # noqa: E402

import toolkit  # noqa: E402  (datalib put the repository root on sys.path)

DEFAULT_REPO = "willdepueoai/parameter-golf"
HF_RESOLVE = "https://huggingface.co/datasets/{repo}/resolve/main/{root}"
DEFAULT_REMOTE_ROOT = "datasets"
ENV_REPO = "MATCHED_FINEWEB_REPO_ID"  # the official script's environment overrides
ENV_REMOTE_ROOT = "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX"
DEFAULT_TRAIN_SHARDS = 80  # the official default: 8B training tokens
DOCS_FILES = ("docs_selected.jsonl", "docs_selected.source_manifest.json")  # --with-docs, beside manifest.json
TOKENIZER_KEYS = ("model_path", "vocab_path", "path")  # byte260's tokenizer is one JSON file under "path"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0


def dataset_name(variant: str) -> str:
    """fineweb10B_<variant> for byte260 or sp<VOCAB_SIZE>, as the official script names them."""
    if variant != "byte260" and not (variant.startswith("sp") and variant[2:].isdigit()):
        raise dl.DataError(f"--variant {variant}: expected sp<VOCAB_SIZE> (sp1024, sp4096, sp8192, ...) or byte260")
    return f"fineweb10B_{variant}"


def base_url(base: str | None, repo: str, remote_root: str) -> str:
    """A URL ending in '/': --base-url as given (http(s)://, file://, or a local folder), else the HF resolve URL."""
    if base is None:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo):
            raise dl.DataError(f"--repo {repo!r}: expected a Hugging Face dataset id, owner/name (e.g. {DEFAULT_REPO})")
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", remote_root) or ".." in remote_root.split("/"):
            raise dl.DataError(f"--remote-root {remote_root!r}: expected a folder of the repo ({DEFAULT_REMOTE_ROOT})")
        base = HF_RESOLVE.format(repo=repo, root=remote_root)
    elif "://" not in base:
        folder = Path(base)
        if not folder.is_dir():
            raise dl.DataError(f"--base-url {base}: no such folder (give a URL or a local mirror folder)")
        base = folder.resolve().as_uri()
    return base.rstrip("/") + "/"


def fetch(url: str, dest: Path, expect_bytes: int | None = None, progress: dl.Progress | None = None) -> int:
    """Stream `url` to a temporary file beside `dest`, check its length, then rename it; return the byte count."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    got = 0
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (URL chosen by the user)
        except urllib.error.HTTPError as e:
            raise dl.DataError(f"{url}: HTTP {e.code} {e.reason}; check --variant, --repo and --base-url") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:  # ValueError: bad URL
            reason = getattr(e, "reason", e)
            raise dl.DataError(f"{url}: cannot fetch ({reason}); check the network or --base-url") from None
        with resp, open(tmp, "wb") as f:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expect_bytes
            try:
                while chunk := resp.read(CHUNK_BYTES):
                    f.write(chunk)
                    got += len(chunk)
                    if progress:
                        progress(
                            f"{dest.name}: {got / dl.MB:.1f}" + (f" / {total / dl.MB:.1f}" if total else "") + " MB"
                        )
                f.flush()
                os.fsync(f.fileno())
            except (OSError, http.client.HTTPException) as e:
                raise dl.DataError(
                    f"{url}: transfer failed after {got} bytes ({e}); nothing was kept, run again "
                    "(complete files are skipped)"
                ) from None
        if total is not None and got != total:
            raise dl.DataError(f"{url}: received {got} bytes, expected {total} (interrupted transfer); run again")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return got


def file_complete(path: Path, info: dict) -> bool:
    """True when `path` exists and passes every check we can make without the network."""
    if not path.is_file():
        return False
    if info.get("bytes") is not None and path.stat().st_size != int(info["bytes"]):
        return False
    if info.get("sha256") and dl.sha256_file(path) != info["sha256"]:
        return False
    if path.suffix == ".bin":
        try:
            dl.tg.read_shard_header(path)
        except dl.tg.ShardError:
            return False
    return True


def check_downloaded(path: Path, info: dict, url: str) -> None:
    if info.get("sha256") and dl.sha256_file(path) != info["sha256"]:
        path.unlink()
        raise dl.DataError(
            f"{url}: sha256 differs from the manifest's {info['sha256'][:16]}...; file removed, run "
            "again (or the mirror is corrupt)"
        )
    if path.suffix == ".bin":
        try:
            dl.tg.read_shard_header(path)
        except dl.tg.ShardError as e:
            path.unlink()
            raise dl.DataError(f"{url}: downloaded shard is invalid ({e}); file removed") from None


def plan(
    manifest: dict, variant: str, train_shards: int, source: str, with_docs: bool = False
) -> tuple[str, list[str]]:
    """The dataset name and the relative paths to fetch (docs with `with_docs`, val shards, first N train shards,
    tokenizer files), in the official script's order."""
    name = dataset_name(variant)
    datasets = manifest.get("datasets") or []
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        raise dl.DataError(f"{source}: 'datasets' is not a list of objects (not a parameter-golf manifest?)")
    entry = next((d for d in datasets if d.get("name") == name), None)
    if entry is None:
        names = ", ".join(str(d.get("name")) for d in datasets) or "none"
        raise dl.DataError(f"{source}: no dataset {name!r} (it lists: {names}); try another --variant or --repo")
    stats = entry.get("stats") or {}
    try:
        n_val, n_train = int(stats["files_val"]), int(stats["files_train"])
    except (KeyError, TypeError, ValueError):
        raise dl.DataError(f"{source}: dataset {name} lacks stats.files_val / stats.files_train") from None
    if train_shards > n_train:
        raise dl.DataError(f"--train-shards {train_shards}: {name} has only {n_train} train shards")
    tokenizers = manifest.get("tokenizers") or []
    tok = next((t for t in tokenizers if isinstance(t, dict) and t.get("name") == entry.get("tokenizer_name")), None)
    if tok is None or not any(tok.get(k) for k in TOKENIZER_KEYS):
        raise dl.DataError(
            f"{source}: tokenizer {entry.get('tokenizer_name')!r} of {name} is not listed with a "
            f"file ({', '.join(TOKENIZER_KEYS)})"
        )
    folder = f"datasets/{name}"
    files = list(DOCS_FILES) if with_docs else []
    files += [f"{folder}/{dl.shard_name('val', i)}" for i in range(n_val)]
    files += [f"{folder}/{dl.shard_name('train', i)}" for i in range(train_shards)]
    files += [str(tok[k]) for k in TOKENIZER_KEYS if tok.get(k)]
    return name, files


def safe_relpath(rel: str, source: str) -> str:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise dl.DataError(f"{source}: refusing path {rel!r} (must be relative, without '..')")
    return Path(rel).as_posix()


def download(
    variant: str,
    train_shards: int,
    out: Path,
    base: str,
    quiet: bool = False,
    with_docs: bool = False,
    skip_manifest: bool = False,
) -> list[Path]:
    """Fetch the manifest (unless skip_manifest: the local one must exist) and the planned files into `out`, laid
    out as the official script lays them out; return the local paths of the planned files."""
    if train_shards < 0:
        raise dl.DataError(f"--train-shards {train_shards} must be >= 0")
    dataset_name(variant)
    if out.exists() and not out.is_dir():
        raise dl.DataError(f"--out {out}: is a file, not a folder")
    progress = dl.Progress("download", enabled=not quiet)
    manifest_url = base + dl.MANIFEST_NAME
    local_manifest = out / dl.MANIFEST_NAME
    dl.check_replaceable(local_manifest, "--out")
    if skip_manifest:
        if not local_manifest.is_file():
            raise dl.DataError(
                f"--skip-manifest: no local manifest at {local_manifest}; run once without --skip-manifest to fetch it"
            )
        manifest_url = str(local_manifest)
    else:
        try:
            fetch(manifest_url, local_manifest)
        except dl.DataError as e:
            if not local_manifest.is_file():
                raise
            print(f"warning: {e}; using the local copy {local_manifest}", file=sys.stderr)
    try:
        manifest = json.loads(local_manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise dl.DataError(f"{manifest_url}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise dl.DataError(f"{manifest_url}: expected a JSON object with datasets and tokenizers")
    name, rels = plan(manifest, variant, train_shards, manifest_url, with_docs)
    file_info = manifest.get("files") or {}
    local: list[Path] = []
    fetched = skipped = 0
    t0 = time.perf_counter()
    for i, rel in enumerate(rels, 1):
        rel = safe_relpath(rel, manifest_url)
        dest, info = out / rel, file_info.get(rel) or {}
        dl.check_replaceable(dest, "--out")
        local.append(dest)
        if file_complete(dest, info):
            skipped += 1
            progress(f"[{i}/{len(rels)}] {rel}: present, skipped", force=True)
            continue
        url = base + urllib.parse.quote(rel)
        n = fetch(url, dest, info.get("bytes"), progress)
        check_downloaded(dest, info, url)
        fetched += 1
        progress(f"[{i}/{len(rels)}] {rel}: {n / dl.MB:.1f} MB", force=True)
    progress(
        f"{name}: {fetched} fetched, {skipped} already present, under {out} ({time.perf_counter() - t0:.1f}s)",
        force=True,
    )
    return local


def build_parser() -> argparse.ArgumentParser:
    p = dl.tool_parser(__doc__)
    p.add_argument("train_shards_positional", nargs="?", type=int, help=argparse.SUPPRESS)  # the official spelling
    p.add_argument(
        "--variant", default="sp1024", help="sp<VOCAB_SIZE> or byte260, as the manifest lists them (default sp1024)"
    )
    p.add_argument(
        "--train-shards",
        type=int,
        default=DEFAULT_TRAIN_SHARDS,
        help="how many train shards, from the "
        f"first (default {DEFAULT_TRAIN_SHARDS}, as the official script); also accepted positionally",
    )
    p.add_argument(
        "--with-docs",
        action="store_true",
        help="also fetch docs_selected.jsonl and its sidecar (to "
        "retrain a tokenizer or rebuild shards with data/export.py --official)",
    )
    p.add_argument("--skip-manifest", action="store_true", help="do not fetch manifest.json: use the local copy")
    p.add_argument("--out", type=Path, default=dl.ROOT / "data", help="local root (default: the repo's data/)")
    p.add_argument(
        "--repo",
        default=os.environ.get(ENV_REPO) or DEFAULT_REPO,
        help="Hugging Face dataset repo "
        f"(default ${ENV_REPO}, else {DEFAULT_REPO}; the SP4096/SP8192 exports of later records live in "
        "kevclark/parameter-golf)",
    )
    p.add_argument(
        "--remote-root",
        default=os.environ.get(ENV_REMOTE_ROOT, DEFAULT_REMOTE_ROOT),
        help=f"folder of the repo that holds manifest.json (default ${ENV_REMOTE_ROOT}, else {DEFAULT_REMOTE_ROOT})",
    )
    p.add_argument(
        "--base-url",
        help="fetch from here instead of the repo: an http(s):// or file:// URL, or a local "
        "mirror folder, holding manifest.json",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    shards = a.train_shards if a.train_shards_positional is None else a.train_shards_positional
    download(
        a.variant, shards, a.out, base_url(a.base_url, a.repo, a.remote_root), a.quiet, a.with_docs, a.skip_manifest
    )
    return 0


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
