"""Phased TTT's evaluation time on 8xH100, projected from FLOPs and the 1.0611 record's own logs (issue 26).

No GPU needed: the record's logs give the lengths of the documents of 213 of its 782 TTT batches (`ttp:` lines,
three seeds) and the times of its segments and phases. The val split's document lengths are interpolated from those
(log-linear in the length rank), our queue and schedule (train_gpt._ttt_queue, _batch_cost, _ttt_plan, 8 chains)
are played over them, and each segment's critical path (the busiest chain) is converted to FLOPs. The achieved
FLOP rate is fitted to the record's measured segment times; the projection is our plan's critical path at that
rate plus the record's measured phase times.

    python benchmarks/ttt_projection.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402

RECORD = Path(__file__).resolve().parents[2] / "shared/data/public_records/track_10min_16mb"
RECORD /= "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
SEEDS = (0, 42, 1234)
VAL_DOCS, VAL_TOKENS = 50_000, 47_851_520  # the record's val split (its log: val_tokens)


def record_log(seed: int) -> dict:
    """Sampled batch length ranges, pause points, segment and phase times, total, from one seed's log."""
    text = (RECORD / f"train_seed{seed}.log").read_text()
    batches = {int(b): (int(a), int(z)) for b, a, z in re.findall(r"ttp: b(\d+)/782 .* dl:(\d+)-(\d+)", text)}
    pauses = [(int(pd), float(t)) for pd, t in re.findall(r"ttpp: phase:\d/3 pd:(\d+) gd:\d+ t:([\d.]+)s", text)]
    resumes = [float(t) for t in re.findall(r"ttpr: phase:\d/3 t:([\d.]+)s", text)]
    total = float(re.search(r"total_eval_time:([\d.]+)s", text)[1])
    starts = [0.0] + resumes
    segments = [t - s for (_, t), s in zip(pauses, starts)] + [total - resumes[-1]]
    phases = [r - t for (_, t), r in zip(pauses, resumes)]
    return {"batches": batches, "pd": [p for p, _ in pauses], "segments": segments, "phases": phases, "total": total}


def doc_lengths(batches: dict[int, tuple[int, int]]) -> np.ndarray:
    """Every document's length (tokens, its BOS to the next BOS included), sorted: the sampled batches' ranges at
    their ranks (64 documents a batch, the last 16), log-linear in between."""
    ranks, lens = [0], [2.0]
    for b, (lo, hi) in sorted(batches.items()):
        first = (b - 1) * 64
        ranks += [first, min(first + 63, VAL_DOCS - 1)]
        lens += [lo, hi]
    return np.exp(np.interp(np.arange(VAL_DOCS), ranks, np.log(lens))).round()


def token_flops(h: tg.Hyperparameters, width: np.ndarray) -> np.ndarray:
    """FLOPs per token of a LoRA step (forward and backward) in a row of `width` tokens: the frozen model's
    matmuls forward and their input gradients (2x forward), the adapters and causal attention forward and backward
    (3x forward), the logits."""
    m = h.model
    loops = m.effective_eval_loops
    layers = m.num_layers + (loops - 1) * (m.loop_end - m.loop_start + 1)  # virtual layers (17)
    kv, hidden = m.model_dim // m.num_heads * m.num_kv_heads, m.mlp_mult * m.model_dim
    d, r = m.model_dim, h.ttt_lora_rank
    linear = 2 * (2 * d * d + 2 * d * kv + 2 * d * hidden) * layers + 2 * d * m.vocab_size
    lora = 2 * r * ((d + d) * 3 + (d + kv) * 2) * layers + 2 * r * (d + m.vocab_size)
    attention = 2 * 2 * d * (width / 2) * layers  # QK^T and PV over half the square (causal)
    return 2 * linear + 3 * (lora + attention)


def main() -> None:
    logs = {s: record_log(s) for s in SEEDS}
    sampled = {b: r for log in logs.values() for b, r in log["batches"].items()}
    lengths = doc_lengths(sampled)
    h = tg.Hyperparameters.from_env({"RUN_ID": "projection"})  # the frontier: TTT_MODE=phased, 8 chains
    hi = np.cumsum(lengths - 1).astype(np.int64) + 1  # documents in stream order (sorted: order is irrelevant)
    lo = np.concatenate(([1], hi[:-1]))
    batches, _ = tg._ttt_queue(lo, hi, h)
    costs = [tg._batch_cost(hi[b] - lo[b], h) for b in batches]
    plan = tg._ttt_plan([len(b) for b in batches], costs, h)
    flops = []
    for b in batches:
        n, steps = len(b), -(-int((hi[b] - lo[b]).max()) // h.ttt_lora_chunk)
        width = np.minimum(np.arange(1, steps + 1) * h.ttt_lora_chunk, h.effective_eval_seq_len)
        flops.append(n * float((width * token_flops(h, width)).sum()))
    pd = np.cumsum([sum(len(batches[q]) for c in chains for q in c) for chains, _ in plan])[:-1]
    path = np.array([max(sum(flops[q] for q in c) for c in chains) for chains, _ in plan])  # per segment
    print(f"val documents {VAL_DOCS:,}: interpolated tokens {lengths.sum():,.0f} (the log: {VAL_TOKENS:,})")
    print(
        f"LoRA work: {sum(costs) / 1e9:.2f} G token-rows, {sum(flops) / 1e15:.0f} PFLOP; per GPU if all 8 stay busy "
        f"{sum(flops) / 8e15:.1f} PFLOP; critical path {path.sum() / 1e15:.1f} PFLOP "
        f"(segments {', '.join(f'{p / 1e15:.1f}' for p in path)})"
    )
    print(f"our plan's documents scored at the phases: {pd.tolist()} (the record's logs: {logs[0]['pd']})")
    for seed, log in logs.items():
        measured = np.array(log["segments"])
        rate = float(path @ measured) / float(measured @ measured)  # FLOP/s, least squares through 0
        lora = path.sum() / rate
        print(f"seed {seed}: record {log['total']:.1f} s = LoRA {measured.sum():.1f} s (segments "
              f"{', '.join(f'{s:.1f}' for s in measured)}) + phases {sum(log['phases']):.1f} s; fitted "
              f"{rate / 1e12:.0f} TFLOP/s per GPU; ours projected {lora + sum(log['phases']):.1f} s at the same rate; "
              f"600 s allows a step {(600 - sum(log['phases'])) / lora:.2f}x the record's")  # fmt: skip


if __name__ == "__main__":
    main()
