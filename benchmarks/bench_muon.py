"""Muon's optimiser step: matrices of one shape stacked and orthogonalised in one batched call (train_gpt.Muon)
against the per-matrix loop it replaced (kept here as the baseline), on the frontier's own matrix shapes, in one
process, timed alternately.

    python benchmarks/bench_muon.py                    # CPU: width 256 (the frontier's shapes at half width), fp32
    python benchmarks/bench_muon.py --width 512        # the default width (66 matrices, 27M weights)
    python benchmarks/bench_muon.py --device cuda      # CUDA: bf16 Newton-Schulz, the batched call compiled

Both update the same weights from the same gradients; the script checks they agree before timing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import toolkit as tk  # noqa: E402
import train_gpt as tg  # noqa: E402


@torch.no_grad()
def loop_step(params: list[torch.nn.Parameter], state: dict, lr: float, mu: float, wd: float) -> None:
    """The per-matrix Muon step (one orthogonalisation call per matrix), as train_gpt.py ran it before."""
    for p in params:
        buf = state.setdefault(p, torch.zeros_like(p))
        buf.mul_(mu).add_(p.grad)
        u = p.grad.add(buf, alpha=mu)
        o = tg.orthogonalize(u, 5, True, True) * math.sqrt(max(1.0, p.size(0) / p.size(1)))
        p.mul_(1.0 - lr * wd)
        p.add_(o.to(p.dtype), alpha=-lr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    h = tk.preset("frontier", model_dim=a.width)
    with torch.device("meta"):
        shapes = [tuple(q.shape) for n, q in tg.build_model(h.model).named_parameters() if q.ndim == 2 and
                  tg.param_roles(tg.build_model(h.model))[n] in ("attn", "mlp")]  # fmt: skip
    g = torch.Generator().manual_seed(0)
    make = lambda: [torch.nn.Parameter(torch.randn(s, generator=g).to(a.device) * 0.02) for s in shapes]  # noqa: E731
    batched, looped = make(), make()
    for x, y in zip(batched, looped):
        y.data.copy_(x.data)
        x.grad = torch.randn(x.shape, generator=g).to(a.device) * 1e-3
        y.grad = x.grad.clone()
    opt = tg.Muon(batched, lr=0.026, momentum=0.97, nesterov=True, backend_steps=5, polar_express=True,
                  row_normalize=True, weight_decay=0.095)  # fmt: skip
    state: dict = {}
    opt.step()
    loop_step(looped, state, 0.026, 0.97, 0.095)
    worst = max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(batched, looped))
    assert worst < (1e-2 if a.device == "cuda" else 1e-5), worst
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    for _ in range(a.repeats):
        for name, fn in (("batched", opt.step), ("loop", lambda: loop_step(looped, state, 0.026, 0.97, 0.095))):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"muon step, {len(shapes)} matrices ({sum(math.prod(s) for s in shapes):,} weights), width {a.width}, "
          f"{a.device}, {a.threads} threads, median of {a.repeats}: batched {1000 * med['batched']:.1f} ms, "
          f"per-matrix loop {1000 * med['loop']:.1f} ms, ratio {med['loop'] / med['batched']:.2f}x "
          f"(max weight difference after one step {worst:.1e})")  # fmt: skip


if __name__ == "__main__":
    main()
