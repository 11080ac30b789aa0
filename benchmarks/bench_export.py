"""Export throughput and peak memory vs SentencePiece's own batched encode of the same text.

    python benchmarks/bench_export.py                       # ../shared/data/text/*.jsonl, sp1024 and sp8192
    python benchmarks/bench_export.py --scales 1 4 8 --repeats 3

Speed: the raw encoder (all documents in memory, one `encode(list, num_threads=cores)` call) and data/export.py on
the same documents (reading, encoding, hashing, writing shards and manifest), run alternately in one process, best
of --repeats each, in MB of UTF-8 text per second; the ratio is the figure of merit (target >= 0.70).
Peak memory: each tool runs once more in a fresh subprocess on the corpus repeated `scale` times and reports
ru_maxrss, beside the resident size before the work started (imports); export's peak must not grow with the corpus,
the raw encoder's does (it holds every document and its ids).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data"))

SHARED_TEXT = ROOT.parent / "shared" / "data" / "text"
SHARED_TOK = ROOT.parent / "shared" / "data" / "tokenizers"
TOKENIZERS = ("fineweb_1024_bpe.model", "fineweb_8192_bpe.model")
SHARD_TOKENS = 1 << 20  # small shards so even the 1x corpus spans several: the buffer size is then fixed
VAL_DOCS = 100


def rss_mb() -> float:
    """Peak resident size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, corpus: Path, tokenizer: Path, repeats: int) -> dict:
    """raw / export: one run, peak memory. speed: `repeats` rounds alternating raw and export (best of each), so a
    change in machine load hits both alike."""
    import datalib as dl
    import export as ex

    sp = dl.load_tokenizer(tokenizer)
    threads = os.cpu_count() or 1
    base = current_rss_mb()

    def raw_run() -> tuple[float, float]:
        texts = list(dl.iter_documents([corpus]))
        t0 = time.perf_counter()
        encoded = sp.encode(texts, num_threads=threads)
        dt = time.perf_counter() - t0
        del encoded
        return dt, sum(len(t.encode("utf-8")) for t in texts) / dl.MB

    def export_run() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = ex.export([str(corpus)], tokenizer, Path(tmp) / "o", VAL_DOCS, SHARD_TOKENS, quiet=True)
            return time.perf_counter() - t0, m["text_bytes"] / dl.MB

    if mode != "speed":
        dt, mb = (raw_run if mode == "raw" else export_run)()
        return {"mb_per_s": mb / dt, "text_mb": mb, "peak_rss_mb": rss_mb(), "rss_before_mb": base}
    best = {"raw": float("inf"), "export": float("inf")}
    for _ in range(repeats):
        for name, fn in (("raw", raw_run), ("export", export_run)):
            dt, mb = fn()
            best[name] = min(best[name], dt)
    return {"raw_mb_per_s": mb / best["raw"], "export_mb_per_s": mb / best["export"], "text_mb": mb}


def run_child(mode: str, corpus: Path, tokenizer: Path, repeats: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--corpus",
            str(corpus),
            "--tokenizer",
            str(tokenizer),
            "--repeats",
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_corpus(files: list[Path], scale: int, folder: Path) -> Path:
    path = folder / f"corpus_x{scale}.jsonl"
    with open(path, "wb") as out:
        for _ in range(scale):
            for f in files:
                out.write(f.read_bytes())
    return path


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="corpus repetitions to measure")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    p.add_argument("--child", choices=("raw", "export", "speed"), help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.corpus, a.tokenizer, a.repeats)))
        return 0
    files = sorted(SHARED_TEXT.glob("*.jsonl"))
    if not files:
        print(f"error: no corpus: {SHARED_TEXT}/*.jsonl is absent", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; commit "
        f"{commit.strip() or '?'}; corpus {', '.join(f.name for f in files)}; shard_tokens {SHARD_TOKENS}"
    )
    print(
        "| tokenizer | corpus | text MB | raw encode MB/s | export MB/s | export / raw | raw peak RSS MB | "
        "export peak RSS MB (before work) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in TOKENIZERS:
            tok = SHARED_TOK / name
            for scale in a.scales:
                corpus = build_corpus(files, scale, Path(tmp))
                speed = run_child("speed", corpus, tok, a.repeats)
                raw = run_child("raw", corpus, tok, 1)
                exp = run_child("export", corpus, tok, 1)
                r, e = speed["raw_mb_per_s"], speed["export_mb_per_s"]
                print(
                    f"| {name} | x{scale} | {speed['text_mb']:.2f} | {r:.2f} | {e:.2f} | {e / r:.2f} | "
                    f"{raw['peak_rss_mb']:.0f} | "
                    f"{exp['peak_rss_mb']:.0f} ({exp['rss_before_mb']:.0f}) |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
