"""Build a small ready-to-train dataset (tokenizer + val/train shards + manifest) from local text, offline.

    python data/sample.py --docs ../shared/data/text/c4_docs_1000.jsonl --out data/sample --vocab-size 1024 \\
        --val-docs 100
    DATA_PATH=data/sample TOKENIZER_PATH=data/sample/tokenizer.model VOCAB_SIZE=1024 PRESET=tiny python train_gpt.py

Steps: train an official-settings BPE tokenizer on the training documents only (the first --val-docs are left
out), export every document with it (small shards, so that training reads several), then run data/verify.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datalib as dl  # noqa: E402
import export as ex  # noqa: E402
import tokenizer as tk  # noqa: E402
import verify as vf  # noqa: E402

import toolkit  # noqa: E402  (datalib put the repository root on sys.path)

DEFAULT_OUT = dl.ROOT / "data" / "sample"
DEFAULT_SHARD_TOKENS = 1 << 17
TOKENIZER_NAME = "tokenizer.model"


def build_sample(
    docs: Sequence[str],
    out: Path,
    vocab_size: int = 1024,
    val_docs: int = 100,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    fmt: str = "auto",
    blocks: bool = False,
    on_bad_line: str = "stop",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, object]:
    """Tokenizer, shards and manifest in `out`; returns the manifest. Raises DataError on bad input."""
    ex.check_settings(val_docs, shard_tokens, 0, out)
    tk.check_vocab_size(vocab_size)
    paths = [str(p) for p in dl.resolve_inputs(docs)]
    old = ex.existing_outputs(out) if out.is_dir() else []
    if old and not overwrite:
        raise dl.DataError(f"{out} already holds a dataset ({old[0].name}); pass --overwrite to rebuild it")
    model = out / TOKENIZER_NAME
    dl.check_replaceable(model, "--out")  # trained over in place
    progress = dl.Progress("sample", enabled=not quiet)
    progress(f"training a BPE tokenizer, vocab {vocab_size}, on the documents after the first {val_docs}", force=True)
    tk.train_tokenizer([Path(p) for p in paths], model, vocab_size, fmt, blocks, on_bad_line, skip_docs=val_docs)
    manifest = ex.export(
        paths, model, out, val_docs, shard_tokens, fmt, blocks, on_bad_line, overwrite=overwrite, quiet=quiet
    )
    n_train = len(manifest["splits"]["train"]["files"])
    if n_train < 2 and not quiet:
        print(f"warning: only {n_train} train shard; lower --shard-tokens to exercise shard switching", file=sys.stderr)
    report = vf.verify(out, model, echo=False)
    if report.failures:
        raise dl.DataError(f"{out}: the built dataset fails verification: {report.failures[0]}")
    progress(
        f"ready: DATA_PATH={out} TOKENIZER_PATH={model} VOCAB_SIZE={vocab_size} (verify: all "
        f"{len(report.lines)} checks passed)",
        force=True,
    )
    return manifest


def build_parser() -> argparse.ArgumentParser:
    p = dl.tool_parser(__doc__)
    dl.add_docs_args(p, required=True)
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default data/sample, which PRESET=tiny reads)"
    )
    p.add_argument("--vocab-size", type=int, default=1024, help="tokenizer vocabulary (default 1024)")
    p.add_argument("--val-docs", type=int, default=100, help="first N documents form the val split (default 100)")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard (default 2^17)")
    p.add_argument("--overwrite", action="store_true", help="rebuild a dataset already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    build_sample(
        a.docs, a.out, a.vocab_size, a.val_docs, a.shard_tokens, a.format, a.blocks, a.on_bad_line, a.overwrite, a.quiet
    )
    return 0


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
