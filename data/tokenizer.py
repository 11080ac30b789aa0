"""Train a SentencePiece BPE tokenizer with the challenge's official settings, or check an existing one.

    python data/tokenizer.py --docs ../shared/data/text/c4_docs_1000.jsonl --vocab-size 1024 --out tok.model
    python data/tokenizer.py --check data/tokenizers/fineweb_1024_bpe.model --data data/datasets/fineweb10B_sp1024

Official settings (SPEC section 2): BPE, character_coverage 0.999, byte_fallback, split_digits, nmt_nfkc, no dummy
prefix, pad 0 / bos 1 / eos 2 / unk 3, hard_vocab_limit off. The .model and .vocab files appear under their final
names only once training succeeded and the model passed its checks (a standalone "▁" piece, BOS id 1, exactly the
vocab size asked for: with hard_vocab_limit off SentencePiece quietly returns fewer pieces when the text is too
small, so that is refused with the largest size the text supports). --caseops trains on the CaseOps-transformed
text (data/caseops.py) with the four case operators as pieces of their own, for data/export.py --caseops.

--check loads a model and checks its structure; with --data (a dataset folder or val shards) it also proves the
model is the one the shards were made with: their val documents decode and re-encode to the same tokens.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import caseops  # noqa: E402
import datalib as dl  # noqa: E402

import toolkit  # noqa: E402  (datalib put the repository root on sys.path)

MAX_VOCAB = 1 << 16  # shards store uint16 token ids


def training_texts(
    paths: Sequence[Path], fmt: str, blocks: bool, on_bad_line: str, skip_docs: int, max_docs: int
) -> Iterator[str]:
    """Documents fed to the trainer: NUL replaced by a space and surrounding whitespace stripped (as the official
    export did); the first `skip_docs` (the val split) are left out."""
    docs = dl.iter_documents(paths, fmt, blocks, on_bad_line)
    docs = islice(docs, skip_docs, None if max_docs <= 0 else skip_docs + max_docs)
    for text in docs:
        yield text.replace("\x00", " ").strip()


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < 260:
        raise dl.DataError(f"--vocab-size {vocab_size} is too small: byte fallback alone needs 256 + 4 special ids")
    if vocab_size > MAX_VOCAB:
        raise dl.DataError(f"--vocab-size {vocab_size} is too large: shards store uint16 ids, so at most {MAX_VOCAB}")


def train_tokenizer(
    paths: Sequence[Path],
    out: Path,
    vocab_size: int,
    fmt: str = "auto",
    blocks: bool = False,
    on_bad_line: str = "stop",
    skip_docs: int = 0,
    max_docs: int = 0,
    threads: int = 0,
    quiet: bool = True,
    caseops_text: bool = False,
) -> Path:
    """Train an official-settings BPE model and write `out` (.model) and its .vocab atomically; return `out`."""
    import sentencepiece as spm

    check_vocab_size(vocab_size)
    counted = {"docs": 0}

    def texts() -> Iterator[str]:
        for t in training_texts(paths, fmt, blocks, on_bad_line, skip_docs, max_docs):
            counted["docs"] += 1
            yield caseops.encode(t) if caseops_text else t

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tok-") as tmp:
        prefix = Path(tmp) / "m"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=texts(),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                num_threads=threads or os.cpu_count() or 1,
                minloglevel=2 if quiet else 0,
                **dl.OFFICIAL_SP_SETTINGS,
                **({"user_defined_symbols": ",".join(dl.tg.CASEOPS_OPERATORS)} if caseops_text else {}),
            )
        except RuntimeError as e:
            if counted["docs"] == 0:
                inputs = ", ".join(map(str, paths))
                if skip_docs:
                    raise dl.DataError(
                        f"--skip-docs {skip_docs} leaves no documents to train on in {inputs}; lower it"
                    ) from None
                raise dl.DataError(f"{inputs}: no documents to train on") from None
            raise dl.DataError(f"SentencePiece training failed: {str(e).splitlines()[0][:200]}") from None
        sp = dl.load_tokenizer(prefix.with_suffix(".model"), label=f"the model trained for {out} (nothing written)")
        if sp.vocab_size() != vocab_size:
            raise dl.DataError(
                f"--vocab-size {vocab_size}: these {counted['docs']:,} documents support at most "
                f"{sp.vocab_size()} pieces; pass --vocab-size {sp.vocab_size()} or less, or add text "
                "(nothing written)"
            )
        vocab_out = out.with_suffix(".vocab")
        for src, dst in ((prefix.with_suffix(".vocab"), vocab_out), (prefix.with_suffix(".model"), out)):
            staged = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
            shutil.copyfile(src, staged)
            os.replace(staged, dst)
    return out


def val_shards(data: str) -> tuple[str, list[Path]]:
    """--data: a dataset folder (its fineweb_val_*.bin), a shard file or a glob; returns (pattern, files)."""
    folder = Path(data)
    pattern = glob.escape(str(folder)) + "/" + dl.VAL_GLOB if folder.is_dir() else data
    files = sorted(Path(p) for p in glob.glob(pattern))
    if not files:
        raise dl.DataError(f"--data {data}: no val shards there (a dataset folder with {dl.VAL_GLOB}, or shard files)")
    return pattern, files


def check(path: Path, data: str | None = None, max_docs: int = 0, threads: int = 0) -> str:
    """Structure of the model at `path`; with `data`, the proof that it made those val shards. Returns the summary
    line; raises UserError on any failure."""
    sp = dl.load_tokenizer(path)
    pieces = sp.vocab_size()
    n_bytes = sum(sp.is_byte(i) for i in range(pieces))
    line = (
        f'{path}: ok, vocab {pieces} ({n_bytes} byte pieces), standalone "{dl.tg.SPACE_PIECE}" piece id '
        f"{sp.piece_to_id(dl.tg.SPACE_PIECE)}, sha256 {dl.sha256_file(path)}"
    )
    if data is None:
        return line + "; not proven against any shards (pass --data DIR to prove it made them)"
    pattern, files = val_shards(data)
    val = dl.tg.load_token_split(pattern, pieces)
    dl.prove_tokenizer(
        sp,
        val,
        tokenizer=str(path),
        source=f"{data} ({len(files)} val shard(s))",
        max_docs=max_docs,
        threads=threads or os.cpu_count() or 1,
    )
    n = len(dl.proof_documents(val, max_docs)[0])
    return line + f"; proven on {n:,} val documents of {data} (decode -> encode gives their tokens)"


def build_parser() -> argparse.ArgumentParser:
    p = dl.tool_parser(__doc__)
    dl.add_docs_args(p, required=False)
    p.add_argument("--out", type=Path, help="output .model path (its .vocab is written beside it)")
    p.add_argument("--vocab-size", type=int, default=1024, help="vocabulary size (default 1024)")
    p.add_argument(
        "--skip-docs",
        type=int,
        default=0,
        help="leave out the first N documents (pass the export's "
        "--val-docs so the tokenizer never sees validation text)",
    )
    p.add_argument(
        "--max-docs",
        type=int,
        default=0,
        help="train on at most N documents; with --check --data, prove on the first N val documents (0 = all)",
    )
    p.add_argument("--threads", type=int, default=0, help="trainer threads (0 = all cores)")
    p.add_argument("--caseops", action="store_true", help="a CaseOps tokenizer (case operators as pieces)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--check", type=Path, metavar="MODEL", help="only check an existing model and print its summary")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="with --check: a dataset folder (or val shard files) the model must "
        "have made; its val documents must decode and re-encode to their tokens",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dl.check_counts(skip_docs=args.skip_docs, max_docs=args.max_docs, threads=args.threads)
    if args.check:
        print(check(args.check, args.data, args.max_docs, args.threads))
        return 0
    if args.data:
        raise dl.DataError("--data goes with --check MODEL (to train, pass --docs and --out)")
    if not args.docs or not args.out:
        raise dl.DataError("--docs and --out are required to train (or pass --check MODEL)")
    if args.out.suffix != ".model":
        raise dl.DataError(f"--out {args.out}: the file name must end in .model")
    if args.out.exists() and not args.overwrite:
        raise dl.DataError(f"{args.out} already exists; pass --overwrite to replace it")
    for path in (args.out, args.out.with_suffix(".vocab")):
        dl.check_replaceable(path, "--out")
    check_vocab_size(args.vocab_size)
    paths = dl.resolve_inputs(args.docs)
    progress = dl.Progress("tokenizer")
    progress(f"training BPE vocab {args.vocab_size} on {len(paths)} file(s)", force=True)
    out = train_tokenizer(
        paths,
        args.out,
        args.vocab_size,
        args.format,
        args.blocks,
        args.on_bad_line,
        args.skip_docs,
        args.max_docs,
        args.threads,
        caseops_text=args.caseops,
    )
    progress("done", force=True)
    print(check(out))
    return 0


if __name__ == "__main__":
    sys.exit(toolkit.run_cli(main))
