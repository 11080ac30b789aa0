"""Scoring benchmark: targets scored per second for flat, sliding-window and TTT evaluation of one fixed model.

    python benchmarks/bench_eval.py                          # CPU, tiny preset, 1 thread, 16K val tokens
    python benchmarks/bench_eval.py --device cuda --preset frontier --tokens 1048576 --seq-len 2048 --batch-seqs 32

Reports, all measured here in one process: flat and sliding (stride 64) throughput; sliding against an *ideal*
batched forward over the same number of window tokens (pre-built batches, no bookkeeping; the target is >= 50%);
score-first SGD TTT and document-independent LoRA TTT, each as a multiple of the sliding time. Val tokens: the
official val prefix (../shared/data) when present, else random ids.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import toolkit as tk  # noqa: E402
import train_gpt as tg  # noqa: E402 (after the path setup above)

SHARED = ROOT.parent / "shared" / "data"
INIT_STD = 0.05  # random weights large enough that logits are not uniform


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=list(tg.PRESETS))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--tokens", type=int, default=16_384, help="val targets scored")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--stride", type=int, default=64)
    p.add_argument("--batch-seqs", type=int, default=16)
    p.add_argument("--ttt-tokens", type=int, default=4096, help="targets for the TTT runs (they are slower)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    p.add_argument("--repeats", type=int, default=3, help="flat/sliding/ideal: best of this many (a busy machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    h = tk.preset(
        args.preset,
        eval_seq_len=args.seq_len,
        eval_stride=args.stride,
        eval_batch_seqs=args.batch_seqs,
        ttt_chunk_tokens=1024,
        ttt_lora_docs=8,
    )
    d = tg.Dist(device=device)
    torch.manual_seed(0)
    model = tg.build_model(h.model)
    with torch.no_grad():
        for prm in model.parameters():
            if prm.dim() == 2:
                prm.normal_(0.0, INIT_STD)
    model = model.to(device).eval()
    model.set_loops(h.model.effective_eval_loops)
    prefix = SHARED / "fineweb_val_prefix" / "fineweb_val_000000.bin"
    tok = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
    if prefix.is_file() and tok.is_file() and h.model.vocab_size == 1024:  # train_gpt's own validation pipeline
        vh = dataclasses.replace(h, val_max_tokens=args.tokens, include_tail=1)
        tables, val = tg.load_validation(vh, str(tok), str(prefix))
        source = "official val prefix"
    else:
        val = np.random.default_rng(0).integers(2, h.model.vocab_size, 1 << 20).astype(np.uint16)
        val[::1000] = tg.BOS_ID
        tables = tg.ByteTables(
            np.ones(h.model.vocab_size, np.int16),
            np.zeros(h.model.vocab_size, bool),
            np.zeros(h.model.vocab_size, bool),
        )
        source = "random ids"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus:{torch.get_num_threads()} threads "
        f"torch:{torch.__version__} device:{device} commit:{commit.stdout.strip() or '?'}"
    )
    print(
        f"model: preset {args.preset}, {sum(q.numel() for q in model.parameters()):,} params, window "
        f"{args.seq_len}, stride {args.stride}, {args.batch_seqs} windows/forward, val: {source}"
    )
    print("command: python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))

    v = tg.prepare_val_tokens(val[: args.tokens + 1], args.seq_len, True)
    tg.eval_flat(model, v[: 4 * args.seq_len + 1], tables, h, d)  # warm-up (allocator, kernels)
    rows = []
    flat = min((tg.eval_flat(model, v, tables, h, d) for _ in range(args.repeats)), key=lambda r: r.seconds)
    rows.append(("flat", flat.targets, flat.seconds, ""))
    sliding = min((tg.eval_sliding(model, v, tables, h, d) for _ in range(args.repeats)), key=lambda r: r.seconds)
    rows.append((f"sliding (stride {args.stride})", sliding.targets, sliding.seconds, "1.00x sliding"))

    starts = tg.sliding_plan(len(v), args.seq_len, args.stride)[0]  # the ideal: same windows, bare forwards
    vt = torch.from_numpy(v.astype(np.int64)).to(device)
    idx = torch.as_tensor(starts, device=device)[:, None] + torch.arange(args.seq_len + 1, device=device)
    batches = [(w[:, :-1], w[:, 1:]) for w in vt[idx].split(args.batch_seqs)]

    def ideal_pass() -> float:
        t0 = tg.synced_clock(d)
        with torch.inference_mode(), tg.amp_context(device, tg.use_bf16(h, device)):
            for x, y in batches:
                model(x, y, reduction="none")
        return tg.synced_clock(d) - t0

    ideal = min(ideal_pass() for _ in range(args.repeats))
    win_tokens = len(starts) * args.seq_len
    rows.append(("ideal batched forward", sliding.targets, ideal, f"the sliding windows' {win_tokens:,} tokens, bare"))

    vt_ttt = v[: args.ttt_tokens + 1]
    base = tg.eval_sliding(model, vt_ttt, tables, h, d)
    for mode in ("sgd", "lora"):
        r = tg.eval_ttt(model, vt_ttt, tables, dataclasses.replace(h, ttt_mode=mode), d)
        rows.append(
            (f"TTT {mode}", r.targets, r.seconds, f"{r.seconds / base.seconds:.1f}x sliding (on {r.targets} targets)")
        )

    print("\n| mode | targets | seconds | targets/s | note |\n|---|---:|---:|---:|---|")
    for name, n, sec, note in rows:
        print(f"| {name} | {n:,} | {sec:.2f} | {n / sec:,.0f} | {note} |")
    print(
        f"\nsliding window tokens/s {win_tokens / sliding.seconds:,.0f} vs ideal {win_tokens / ideal:,.0f}: "
        f"{100 * ideal / sliding.seconds:.0f}% of the ideal (target >= 50%)"
    )
    print(f"bpb: flat {flat.val_bpb:.4f}, sliding {sliding.val_bpb:.4f} (random weights: only the speed matters)")


if __name__ == "__main__":
    main()
