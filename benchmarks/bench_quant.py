"""Quantisation benchmark: bpb tax (quantised minus float) and artifact bytes of four exports of one model.

    python benchmarks/bench_quant.py --checkpoint logs/RUN.ckpt.pt --data-path data/sample
    python benchmarks/bench_quant.py --train-steps 150 --data-path data/sample   # trains a tiny model first

Exports: int8 percentile round-to-nearest + zlib-9 (the baseline's export, in our container), int6 SDClip RTN +
zstd-22, int6 SDClip GPTQ + zstd-22, and GPTQ + LQER. Every variant is written, read back, loaded strictly and
scored with eval_flat on the official val prefix (../shared/data). Also: bytes per parameter, GPTQ calibration and
solve time, the codecs side by side and the byte-shuffle on/off, all measured here in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_gpt as tg  # noqa: E402 (after the path setup above)

SHARED = ROOT.parent / "shared" / "data"
BASELINE_PERCENTILE = 0.9999984  # the baseline's per-row clip quantile for int8


def log(msg: str) -> None:
    print(msg, flush=True)


def quick_train(h: tg.Hyperparameters, steps: int, seed: int) -> torch.nn.Module:
    """A short Adam run of the model on the training shards (a stand-in when no checkpoint is given)."""
    torch.manual_seed(seed)
    model = tg.build_model(h.model_config())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    loader = tg.DistributedTokenLoader(str(Path(h.data_path) / "fineweb_train_*.bin"), 0, 1, torch.device("cpu"))
    t0 = time.perf_counter()
    for step in range(steps):
        x, y = loader.next_batch(h.train_batch_tokens, h.train_seq_len, 1)
        for g in opt.param_groups:
            g["lr"] = 3e-3 * min(1.0, 2 * (1 - step / steps))
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            log(f"train step {step + 1}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    return model.eval()


def percentile_int8_entries(state: dict, roles: dict, h: tg.Hyperparameters) -> list[dict]:
    """The baseline's export: every quantised matrix int8, clipped per row at a fixed quantile of |w|."""
    hh = dataclasses.replace(h, quant_matrix_bits=8, quant_embed_bits=8, gptq=0, lqer_rank=0)
    entries, _ = tg.quantize_state_dict(state, roles, hh)
    for e in entries:
        if e["meta"]["store"] == "q":
            w = state[e["meta"]["name"]].float()
            clip = torch.quantile(w.abs(), BASELINE_PERCENTILE, dim=1)
            e["scale"] = (clip / 127).clamp_min(tg.FP16_TINY).half()
            s = e["scale"].float()[:, None]
            e["q"] = torch.clamp(torch.round(w / s), -127, 127).to(torch.int8)
            e["meta"].update(k=None, method="pct")
    return entries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="float checkpoint from train_gpt.py (else a quick tiny training runs)")
    p.add_argument("--data-path", default=str(ROOT / "data" / "sample"), help="folder with fineweb_train_*.bin")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--val-tokens", type=int, default=32_768, help="val prefix tokens scored per variant")
    p.add_argument("--passthrough-max-numel", type=int, default=0,
                   help="tensors up to this size stay float (0: quantise every matrix, needed at tiny sizes)")
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args()
    val_path = SHARED / "fineweb_val_prefix" / "fineweb_val_000000.bin"
    tok_path = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
    if not val_path.is_file() or not tok_path.is_file():
        sys.exit(f"bench_quant.py: shared data not found under {SHARED}")
    d = tg.Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if a.checkpoint:
        config, state, recorded = tg.load_checkpoint(a.checkpoint)
        h = tg.Hyperparameters(**{k: v for k, v in recorded.items() if k in {f.name for f in dataclasses.fields(
            tg.Hyperparameters)}})
        model = tg.build_model(config)
        model.load_state_dict(state, strict=True)
        model.eval()
    else:
        h = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "bench", "TRAIN_BATCH_TOKENS": "2048"})
        model = quick_train(dataclasses.replace(h, data_path=a.data_path), a.train_steps, a.seed)
        config = h.model_config()
    h = dataclasses.replace(h, data_path=a.data_path, passthrough_max_numel=a.passthrough_max_numel, seed=a.seed)
    model = model.to(d.device)
    state, roles = model.state_dict(), tg.param_roles(model)
    tables = tg.build_byte_tables(spm.SentencePieceProcessor(model_file=str(tok_path)), h.vocab_size)
    val = np.asarray(tg.load_shard(val_path)[: a.val_tokens + 1])
    val = tg.prepare_val_tokens(val, h.effective_eval_seq_len, False)
    model.set_loops(h.eval_loops or h.num_loops)
    float_res = tg.eval_flat(model, val, tables, h, d)
    nparams = sum(t.numel() for t in state.values())
    log(f"model: {nparams} params, float val_bpb {float_res.val_bpb:.5f} on {len(val) - 1} val tokens")

    t0 = time.perf_counter()
    hessians = tg.collect_hessians(model, tg.calibration_batches(h, d), roles, d)
    calib_s = time.perf_counter() - t0
    log(f"gptq calibration: {h.gptq_calib_batches} batches in {calib_s:.2f}s")

    def score(name: str, blob: bytes, seconds: float) -> dict:
        qmodel, _ = tg.load_artifact_model(blob, config)
        qmodel.to(d.device).eval().set_loops(h.eval_loops or h.num_loops)
        res = tg.eval_flat(qmodel, val, tables, h, d)
        row = {"name": name, "bytes": len(blob), "bpp": len(blob) / nparams, "bpb": res.val_bpb,
               "tax": res.val_bpb - float_res.val_bpb, "seconds": seconds}
        log(f"{name}: {len(blob)} bytes, val_bpb {res.val_bpb:.5f}, tax {row['tax']:+.5f}")
        return row

    rows = []
    t0 = time.perf_counter()
    blob = tg.encode_artifact(config, percentile_int8_entries(state, roles, h), "zlib", 9)
    rows.append(score("int8 percentile RTN + zlib-9 (baseline)", blob, time.perf_counter() - t0))
    variants = [("int6 SDClip RTN + zstd-22", dict(gptq=0)), ("int6 SDClip GPTQ + zstd-22", dict(gptq=1)),
                ("int6 SDClip GPTQ + LQER r4 top4 + zstd-22", dict(gptq=1, lqer_rank=4, lqer_top=4))]
    gptq_blob = b""
    for name, kw in variants:
        hh = dataclasses.replace(h, quant_matrix_bits=6, compressor="zstd", compress_level=22, **kw)
        t0 = time.perf_counter()
        blob, report = tg.build_artifact(state, roles, config, hh, hessians)
        rows.append(score(name, blob, report["gptq_seconds"] if kw["gptq"] else time.perf_counter() - t0))
        if kw == dict(gptq=1):
            gptq_blob = blob

    log("\n| export | bytes | bytes/param | val_bpb | tax (bpb) | GPTQ solve s |")
    log("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        log(f"| {r['name']} | {r['bytes']:,} | {r['bpp']:.4f} | {r['bpb']:.5f} | {r['tax']:+.5f} | "
            + (f"{r['seconds']:.2f} |" if "GPTQ" in r["name"] else "- |"))
    log(f"float val_bpb {float_res.val_bpb:.5f}; GPTQ calibration {calib_s:.2f}s")

    # codecs and the byte-shuffle on the GPTQ artifact's entries
    cfg, entries = tg.decode_artifact(gptq_blob)
    log("\n| codec / layout | bytes | encode s |")
    log("|---|---:|---:|")
    for codec, level in (("zstd", 22), ("lzma", 9), ("zlib", 9)):
        for shuffle in (True, False):
            saved = dict(tg.STREAM_WIDTHS)
            if not shuffle:
                tg.STREAM_WIDTHS.update(dict.fromkeys(tg.STREAM_WIDTHS, 1))
            t0 = time.perf_counter()
            n = len(tg.encode_artifact(cfg, entries, codec, level))
            tg.STREAM_WIDTHS.update(saved)
            seconds = time.perf_counter() - t0
            log(f"| {codec}-{level}, byte-shuffle {'on' if shuffle else 'off'} | {n:,} | {seconds:.2f} |")
    log(f"\nparams {nparams}, torch {torch.__version__}, device {d.device}, threads {torch.get_num_threads()}, "
        f"{math.ceil(time.process_time())}s CPU")


if __name__ == "__main__":
    main()
