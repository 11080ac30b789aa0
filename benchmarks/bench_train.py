"""Training throughput of train_gpt.py: step time and tokens/s of `train_step` (the function the real loop runs).

Two configurations are timed in the same process and reported as a ratio:
  frontier  - every feature of the default recipe on (XSA, gates, SmearGate, recurrence, parallel residuals, ...)
  baseline  - the same width/depth/batch with every feature off (the challenge baseline's architecture)

    python benchmarks/bench_train.py                      # CPU: a fixed small config, float32, no compile
    python benchmarks/bench_train.py --device cuda        # CUDA: the default (35.9M) config, bf16, torch.compile

On CUDA it also prints MFU (dense bf16 peak of the card) and peak memory. Tokens come from the shared FineWeb val
prefix when ../shared/data is present (throughput does not depend on the text), else from a seeded generator.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import toolkit as tk  # noqa: E402
import train_gpt as tg  # noqa: E402

SHARED_VAL = REPO.parent / "shared" / "data" / "fineweb_val_prefix" / "fineweb_val_000000.bin"
CPU_SIZE = dict(
    NUM_LAYERS="6",
    MODEL_DIM="128",
    NUM_HEADS="4",
    NUM_KV_HEADS="2",
    MLP_MULT="4",
    ROPE_DIMS="16",
    LOOP_START="2",
    LOOP_END="3",
    NUM_LOOPS="2",
    PARALLEL_START="4",
    TRAIN_SEQ_LEN="256",
    TRAIN_BATCH_TOKENS="8192",
    GRAD_ACCUM_STEPS="1",
    VOCAB_SIZE="1024",
)
FEATURES_OFF = dict(
    XSA="0",
    SMEAR_GATE="0",
    ATTN_OUT_GATE="0",
    SKIP_GATES="0",
    LN_SCALE="0",
    ROPE_DIMS="0",
    NUM_LOOPS="1",
    PARALLEL_START="-1",
    MLP_ACT="relu2",
    MUON_POLAR_EXPRESS="0",
    MUON_EQ_R="0",
)


def make_data(folder: Path, vocab: int) -> None:
    if SHARED_VAL.exists() and vocab >= 1024:
        tokens = np.array(tg.load_shard(SHARED_VAL))
    else:
        tokens = np.random.default_rng(0).integers(0, vocab, 1 << 20, dtype=np.uint16)
    tk.write_shard(folder / "fineweb_train_000000.bin", np.tile(tokens, 4))


def time_config(env: dict[str, str], d: tg.Dist, steps: int, warmup: int) -> dict[str, float]:
    h = tg.Hyperparameters.from_env(env)
    torch.manual_seed(0)
    base = tg.build_model(h.model).to(d.device)
    base.set_loops(h.model.num_loops)
    opts = tg.build_optimizers(base, h, d)
    compile_on = d.device.type == "cuda" if h.compile < 0 else bool(h.compile)
    model = torch.compile(base, dynamic=False) if compile_on else base
    loader = tg.DistributedTokenLoader(os.path.join(h.data_path, "fineweb_train_*.bin"), 0, 1, d.device)
    accum = tg.grad_accum_steps(h, d)
    for _ in range(warmup):
        tg.train_step(model, loader, opts, h, d, accum, 1.0, 0.95)
    if d.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = tg.synced_clock(d)
    for _ in range(steps):
        tg.train_step(model, loader, opts, h, d, accum, 1.0, 0.95)
    dt = tg.synced_clock(d) - t0
    out = {
        "step_ms": 1000 * dt / steps,
        "tok_s": h.train_batch_tokens * steps / dt,
        "params": sum(p.numel() for p in base.parameters()),
    }
    if d.device.type == "cuda":
        name = torch.cuda.get_device_name(d.device)
        peak = next((v for k, v in tg.PEAK_BF16_FLOPS.items() if k in name), 0.0)
        out["mfu_pct"] = 100 * out["tok_s"] * tg.train_flops_per_token(base, h.train_seq_len) / peak if peak else 0.0
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on CPU, 30 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 on CPU, 10 on CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    steps = args.steps or (30 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    d = tg.Dist(device=torch.device("cuda", 0) if cuda else torch.device("cpu"))
    if cuda:
        torch.cuda.set_device(0)
        torch.backends.cuda.matmul.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        size = {} if cuda else CPU_SIZE
        make_data(Path(tmp), int(size.get("VOCAB_SIZE", 8192)))
        common = {"DATA_PATH": tmp, "DEVICE": args.device, **size}
        rows = {
            name: time_config({**common, **extra}, d, steps, warmup)
            for name, extra in (("baseline", FEATURES_OFF), ("frontier", {}))
        }
    print(
        f"device:{tg.describe_device(d)} torch:{torch.__version__} threads:{torch.get_num_threads()} "
        f"steps:{steps} warmup:{warmup} commit:{tg.git_commit()[:12]}"
    )
    for name, r in rows.items():
        extra = f" mfu:{r['mfu_pct']:.1f}% peak_mem:{r['peak_mem_gib']:.1f}GiB" if cuda else ""
        print(f"{name:9s} params:{r['params']:,} step:{r['step_ms']:.1f}ms tok_s:{r['tok_s']:,.0f}{extra}")
    print(f"frontier/baseline tok_s ratio: {rows['frontier']['tok_s'] / rows['baseline']['tok_s']:.3f}")


if __name__ == "__main__":
    main()
