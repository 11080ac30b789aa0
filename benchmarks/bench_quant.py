"""Quantisation benchmark: bpb tax (quantised minus float) and artifact bytes of the exports of one model.

    python benchmarks/bench_quant.py --checkpoint artifacts/RUN.ckpt.pt --data-path DATA --sliding
    python benchmarks/bench_quant.py --train-steps 150 --data-path data/sample   # trains a tiny model first
    python benchmarks/bench_quant.py --fullsize-codecs --checkpoint artifacts/RUN.ckpt.pt
    python benchmarks/bench_quant.py --fullsize-fit --checkpoint artifacts/RUN.ckpt.pt
    python benchmarks/bench_quant.py --layouts --checkpoint artifacts/RUN.ckpt.pt
    python benchmarks/bench_quant.py --record-export --checkpoint artifacts/RUN.ckpt.pt   # the record's export too

Exports: int8 percentile round-to-nearest + zlib-9 (the baseline's export, in our container), int6 SDClip RTN +
zstd-22, int6 SDClip GPTQ + zstd-22, and GPTQ + LQER. Every variant is written, read back, loaded strictly and
scored on the official val prefix (../shared/data), flat and with --sliding also sliding-window. Each tax comes
with a standard error over val windows (per-window sums of the per-token loss difference), and the GPTQ-RTN
difference with its own paired error. Then an equal-bytes comparison: the attn/mlp clip k is swept for RTN and
GPTQ alike, and GPTQ's tax is set against RTN's tax interpolated at GPTQ's bytes. Then the codecs and the
byte-shuffle, re-encoding the GPTQ artifact's entries.

--fullsize-codecs instead answers the codec question at full size: the default model (Hyperparameters.from_env({}))
gets synthetic matrices (row stds and within-row standardised values resampled from the --checkpoint model's
matrices of the same role, and plain Gaussian rows with log-normal row std), is quantised with SDClip RTN at the
default bits and k, and the same entries are encoded with zstd-22, lzma-9 and zlib-9 (bytes, encode and decode s).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import toolkit as tk  # noqa: E402 (after the path setup above)
import train_gpt as tg  # noqa: E402 (after the path setup above)

SHARED = ROOT.parent / "shared" / "data"
VAL_PATH = SHARED / "fineweb_val_prefix" / "fineweb_val_000000.bin"
TOK_PATH = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
CODECS = (("zstd", 22), ("lzma", 9), ("zlib", 9))
GAUSS_ROW_STD_SIGMA = 0.3  # log-normal spread of row stds in the Gaussian full-size variant
MATRIX_ROLES = ("attn", "mlp", "embed", "head")


def log(msg: str) -> None:
    print(msg, flush=True)


def quick_train(h: tg.Hyperparameters, steps: int, seed: int) -> torch.nn.Module:
    """A short Adam run of the model on the training shards (a stand-in when no checkpoint is given)."""
    torch.manual_seed(seed)
    model = tg.build_model(h.model)
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
    """The baseline's int8 rule (train_gpt.percentile_clip: per-row percentile clip, scale at least 1/127) on every
    quantised matrix, whatever its size (QUANT_CLIP=percentile itself keeps matrices up to 65,536 elements in fp16)."""
    hh = dataclasses.replace(h, quant_matrix_bits=8, quant_embed_bits=8, gptq=0, lqer_rank=0)
    entries = tg.quantize_state_dict(state, roles, hh)
    for e in entries:
        if e["meta"]["store"] == "q":
            w, scale = tg.percentile_clip(state[e["meta"]["name"]], 8)
            e["q"], e["scale"] = tg.quantize_rtn(w, scale, 8), scale.half()
            e["meta"].update(k=None, method="pct")
    return entries


def load_checkpoint_model(path: str) -> tuple[torch.nn.Module, tg.ModelConfig, tg.Hyperparameters]:
    """The checkpoint's model (checked by toolkit.load_model) and the settings it recorded."""
    loaded = tk.load_model(checkpoint=path)
    h = tk.settings(loaded.recorded, env={})
    return loaded.model, h.model, h


def window_se(diff: np.ndarray, window: int, nbytes: int) -> float:
    """Standard error (bpb) of a summed per-token loss difference, from its per-window sums (windows independent)."""
    sums = diff[1:].reshape(-1, window).sum(axis=1)
    return float(math.sqrt(len(sums)) * sums.std(ddof=1) / (math.log(2) * nbytes))


def interpolate(x: float, xs: list[float], ys: list[float]) -> float | None:
    """Piecewise-linear y(x) through the points (xs, ys); None outside their range."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def bench_exports(a: argparse.Namespace) -> None:
    if not VAL_PATH.is_file() or not TOK_PATH.is_file():
        raise tk.UserError(f"shared data not found under {SHARED} (val prefix and fineweb_1024_bpe.model)")
    if not list(Path(a.data_path).glob("fineweb_train_*.bin")):
        raise tk.UserError(
            f"--data-path {a.data_path}: no fineweb_train_*.bin (GPTQ calibration reads training shards)"
        )
    d = tg.Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if a.checkpoint:
        model, config, h = load_checkpoint_model(a.checkpoint)
    else:
        h = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "bench", "TRAIN_BATCH_TOKENS": "2048"})
        model = quick_train(dataclasses.replace(h, data_path=a.data_path), a.train_steps, a.seed)
        config = h.model
    h = dataclasses.replace(
        h,
        data_path=a.data_path,
        seed=a.seed,
        gptq_calib_batches=a.calib_batches or h.gptq_calib_batches,
    )
    model = model.to(d.device)
    state, roles = model.state_dict(), tg.param_roles(model)
    window = h.effective_eval_seq_len
    val_h = dataclasses.replace(h, val_max_tokens=a.val_tokens, include_tail=0)
    tables, val = tg.load_validation(val_h, str(TOK_PATH), str(VAL_PATH))
    evals = {"flat": tg.eval_flat} | ({"sliding": tg.eval_sliding} if a.sliding else {})
    loops = h.model.effective_eval_loops

    def evaluate(net: torch.nn.Module, kinds: tuple[str, ...]) -> dict[str, tg.EvalResult]:
        net.to(d.device).eval().set_loops(loops)
        return {kind: evals[kind](net, val, tables, h, d, keep_losses=True) for kind in kinds}

    t0 = time.perf_counter()
    ref = evaluate(model, tuple(evals))
    nparams = sum(t.numel() for t in state.values())
    nq = sum(t.numel() for n, t in state.items() if roles.get(n) in MATRIX_ROLES and t.ndim == 2)
    log(
        f"model: {nparams:,} params ({nq:,} in quantised matrices), float val_bpb flat {ref['flat'].val_bpb:.5f}"
        + (f", sliding {ref['sliding'].val_bpb:.5f}" if a.sliding else "")
        + f" on {len(val) - 1:,} val tokens ({time.perf_counter() - t0:.1f}s)"
    )

    t0 = time.perf_counter()
    hessians = tg.collect_hessians(model, tg.calibration_batches(h, d, h.gptq_calib_batches), roles, d)
    calib_s = time.perf_counter() - t0
    log(f"gptq calibration: {h.gptq_calib_batches} batches in {calib_s:.2f}s")

    def score(name: str, blob: bytes, seconds: float, kinds: tuple[str, ...]) -> dict:
        qmodel, _ = tg.load_artifact_model(blob, config)
        res = evaluate(qmodel, kinds)
        row = {"name": name, "bytes": len(blob), "bpp": len(blob) / nparams, "seconds": seconds, "losses": {}}
        for kind, r in res.items():
            diff = r.target_losses - ref[kind].target_losses
            row[kind] = (r.val_bpb, r.val_bpb - ref[kind].val_bpb, window_se(diff, window, r.bytes))
            row["losses"][kind] = r.target_losses
        log(
            f"{name}: {len(blob):,} bytes, "
            + ", ".join(
                f"{kind} val_bpb {row[kind][0]:.5f} tax {row[kind][1]:+.5f} ± {row[kind][2]:.5f}" for kind in kinds
            )
        )
        return row

    def build(kinds: tuple[str, ...], name: str, **kw) -> tuple[dict, bytes]:
        hh = dataclasses.replace(h, quant_matrix_bits=6, compressor="zstd", compress_level=22, **kw)
        t0 = time.perf_counter()
        blob, report = tk.quantize_with_report(state, roles, config, hh, hessians)
        return score(name, blob, report["quantize_seconds"] if hh.gptq else time.perf_counter() - t0, kinds), blob

    kinds = tuple(evals)
    t0 = time.perf_counter()
    blob = tg.encode_artifact(dataclasses.asdict(config), percentile_int8_entries(state, roles, h), "zlib", 9)
    rows = [score("int8 percentile RTN + zlib-9 (baseline)", blob, time.perf_counter() - t0, kinds)]
    rtn, _ = build(kinds, "int6 SDClip RTN + zstd-22", gptq=0)
    gptq, gptq_blob = build(kinds, "int6 SDClip GPTQ + zstd-22", gptq=1)
    lqer, _ = build(
        kinds,
        f"int6 SDClip GPTQ + LQER r{a.lqer_rank} top{a.lqer_top} + zstd-22",
        gptq=1,
        lqer_rank=a.lqer_rank,
        lqer_top=a.lqer_top,
    )
    rows += [rtn, gptq, lqer]

    log(
        "\n| export | bytes | bytes/param | "
        + " | ".join(f"{k} val_bpb | {k} tax ± se" for k in kinds)
        + " | GPTQ solve s |"
    )
    log("|---|---:|---:|" + "---:|---:|" * len(kinds) + "---:|")
    for r in rows:
        cells = " | ".join(f"{r[k][0]:.5f} | {r[k][1]:+.5f} ± {r[k][2]:.5f}" for k in kinds)
        log(
            f"| {r['name']} | {r['bytes']:,} | {r['bpp']:.4f} | {cells} | "
            + (f"{r['seconds']:.2f} |" if "GPTQ" in r["name"] else "- |")
        )
    log(
        "float val_bpb "
        + ", ".join(f"{k} {ref[k].val_bpb:.5f}" for k in kinds)
        + f"; GPTQ calibration {calib_s:.2f}s ({h.gptq_calib_batches} batches)"
    )
    for k in kinds:
        diff = gptq["losses"][k] - rtn["losses"][k]
        log(
            f"{k}: GPTQ minus RTN {gptq[k][1] - rtn[k][1]:+.5f} ± {window_se(diff, window, ref[k].bytes):.5f} bpb "
            f"(paired); GPTQ tax / RTN tax = {gptq[k][1] / rtn[k][1]:.3f}"
            if rtn[k][1]
            else ""
        )

    if a.sweep_k:
        sweep: dict[str, list] = {"rtn": [], "gptq": []}
        for k in a.sweep_k:
            for method in sweep:
                row, blob = build(
                    ("flat",), f"{method} k={k:g}", gptq=int(method == "gptq"), clip_k_attn=k, clip_k_mlp=k
                )
                cfg, entries = tg.decode_artifact(blob)[:2]
                lz = len(tg.encode_artifact(cfg, entries, "lzma", 9))
                sweep[method].append((k, row["bytes"], lz, row["flat"][1], row["flat"][2]))
        rb, rt = [r[2] for r in sweep["rtn"]], [r[3] for r in sweep["rtn"]]
        log(
            "\nEqual bytes: attn/mlp clip k swept (embedding fixed), flat tax; RTN's tax interpolated at GPTQ's "
            "lzma-9 bytes (zstd-22 sizes jump with the data's offset, see the codec table)"
        )
        log(
            "| k | RTN zstd / lzma bytes | RTN tax ± se | GPTQ zstd / lzma bytes | GPTQ tax ± se | RTN tax at GPTQ's "
            "lzma bytes | GPTQ / RTN |"
        )
        log("|---:|---:|---:|---:|---:|---:|---:|")
        for (k, z_r, b_r, t_r, s_r), (_, z_g, b_g, t_g, s_g) in zip(sweep["rtn"], sweep["gptq"]):
            at = interpolate(b_g, rb, rt)
            log(
                f"| {k:g} | {z_r:,} / {b_r:,} | {t_r:+.5f} ± {s_r:.5f} | {z_g:,} / {b_g:,} | {t_g:+.5f} ± {s_g:.5f} | "
                + (f"{at:+.5f} | {t_g / at:.3f} |" if at else "out of range | - |")
            )

    cfg, entries = tg.decode_artifact(gptq_blob)[:2]
    log(f"\nGPTQ artifact re-encoded; bytes min-max over {a.offsets} header shifts of 0..{a.offsets - 1} bytes")
    log("| codec / layout | bytes | encode s |")
    log("|---|---:|---:|")
    for codec, level in CODECS:
        for shuffle in (True, False):
            saved = dict(tg.STREAM_WIDTHS)
            if not shuffle:
                tg.STREAM_WIDTHS.update(dict.fromkeys(tg.STREAM_WIDTHS, 1))
            sizes, seconds, _ = codec_sizes(cfg, entries, codec, level, a.offsets)
            tg.STREAM_WIDTHS.update(saved)
            log(f"| {codec}-{level}, byte-shuffle {'on' if shuffle else 'off'} | {span(sizes)} | {seconds:.2f} |")
    log(
        f"\nparams {nparams}, torch {torch.__version__}, device {d.device}, threads {torch.get_num_threads()}, "
        f"{math.ceil(time.process_time())}s CPU"
    )


def codec_sizes(
    config: dict, entries: list[dict], codec: str, level: int, shifts: int
) -> tuple[list[int], float, bytes]:
    """Artifact bytes with the payload shifted by 0..shifts-1 bytes (a padding key in a copy of the model config;
    measurement only: zstd's output size depends on where the streams fall), the mean encode time, and the
    unshifted artifact."""
    blobs, t0 = [], time.perf_counter()
    for n in range(shifts):
        blobs.append(tg.encode_artifact({**config, "pad": "x" * n} if n else config, entries, codec, level))
    return [len(b) for b in blobs], (time.perf_counter() - t0) / shifts, blobs[0]


def span(sizes: list[int]) -> str:
    return f"{sizes[0]:,}" if len(sizes) == 1 else f"{min(sizes):,}-{max(sizes):,} (shift 0: {sizes[0]:,})"


def role_samples(state: dict, roles: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Per role of a trained model: (standardised values w/row_std, row std / the matrix's median row std,
    median row std) pooled over its 2-D matrices."""
    pools: dict[str, list] = {}
    for name, t in state.items():
        role = roles.get(name)
        if role not in MATRIX_ROLES or t.ndim != 2:
            continue
        w = t.float()
        std = w.std(dim=1, correction=0)
        live = std > 0
        z, std = (w[live] / std[live, None]).reshape(-1), std[live]
        p = pools.setdefault(role, [[], [], []])
        p[0].append(z)
        p[1].append(std / std.median())
        p[2].append(float(std.median()))
    return {r: (torch.cat(p[0]), torch.cat(p[1]), float(np.median(p[2]))) for r, p in pools.items()}


def synthetic_state(state: dict, roles: dict, samples: dict | None, gen: torch.Generator) -> dict:
    """The default model's state with every quantised-role matrix replaced: resampled from `samples` (role-wise,
    i.i.d.), or Gaussian rows with log-normal row std when `samples` is None."""
    out = {}
    for name, t in state.items():
        role = roles.get(name)
        if role not in MATRIX_ROLES or t.ndim != 2:
            out[name] = t
            continue
        rows, cols = t.shape
        if samples is None:
            row_std = 0.02 * torch.exp(GAUSS_ROW_STD_SIGMA * torch.randn(rows, generator=gen))
            out[name] = torch.randn(rows, cols, generator=gen) * row_std[:, None]
            continue
        z, rel, med = samples[role if role in samples else "embed" if role == "head" else "mlp"]
        zi = torch.randint(len(z), (rows * cols,), generator=gen)
        ri = torch.randint(len(rel), (rows,), generator=gen)
        out[name] = z[zi].view(rows, cols) * (med * rel[ri])[:, None]
    return out


def order0_bits(entries: list[dict]) -> float:
    """Order-0 entropy (bytes) of the integer codes, per tensor: the floor for a coder of independent symbols."""
    total = 0.0
    for e in entries:
        if e["meta"]["store"] == "q":
            counts = np.bincount(e["q"].numpy().astype(np.int16).reshape(-1) + 128, minlength=256)
            p = counts[counts > 0] / counts.sum()
            total += -(p * np.log2(p)).sum() * counts.sum() / 8
    return total


def bench_fullsize_codecs(a: argparse.Namespace) -> None:
    h = dataclasses.replace(tg.Hyperparameters.from_env({"RUN_ID": "bench"}), gptq=0, lqer_rank=0)
    torch.manual_seed(a.seed)
    model = tg.build_model(h.model)
    state, roles = model.state_dict(), tg.param_roles(model)
    nparams = sum(t.numel() for t in state.values())
    variants: list[tuple[str, dict | None]] = [("gaussian rows, log-normal row std", None)]
    if a.checkpoint:
        small, _, _ = load_checkpoint_model(a.checkpoint)
        samples = role_samples(small.state_dict(), tg.param_roles(small))
        for role, (z, rel, _) in samples.items():
            tail = float((z.abs() > 4).float().mean())
            log(
                f"{role}: {len(z):,} values, kurtosis {float((z**4).mean()):.2f} (Gaussian 3), |z|>4 {tail:.2e}, "
                f"row std / median p10-p90 {float(rel.quantile(0.1)):.2f}-{float(rel.quantile(0.9)):.2f}"
            )
        variants.insert(0, (f"resampled from {Path(a.checkpoint).name}", samples))
    log(
        f"default model: {nparams:,} params; int{h.quant_matrix_bits} attn k={h.clip_k_attn} mlp "
        f"k={h.clip_k_mlp}, int{h.quant_embed_bits} embed k={h.clip_k_embed}, SDClip RTN, torch threads "
        f"{torch.get_num_threads()}"
    )
    log("\n| weights | codec | bytes | bytes/param | encode s | decode s |")
    log("|---|---|---:|---:|---:|---:|")
    for label, samples in variants:
        gen = torch.Generator().manual_seed(a.seed)
        entries = tg.quantize_state_dict(synthetic_state(state, roles, samples, gen), roles, h)
        floor = order0_bits(entries)
        for codec, level in CODECS:
            sizes, enc, blob = codec_sizes(dataclasses.asdict(h.model), entries, codec, level, a.offsets)
            t0 = time.perf_counter()
            tg.decode_artifact(blob)
            dec = time.perf_counter() - t0
            log(f"| {label} | {codec}-{level} | {span(sizes)} | {sizes[0] / nparams:.4f} | {enc:.1f} | {dec:.1f} |")
        log(f"| {label} | order-0 entropy of the int codes alone | {floor:,.0f} | {floor / nparams:.4f} | - | - |")


def fullsize_resampled(a: argparse.Namespace) -> tuple[tg.Hyperparameters, dict, dict, dict]:
    """(default settings, the default model's state, its roles, that state with every quantised matrix resampled
    from --checkpoint's matrices of the same role)."""
    h = tg.Hyperparameters.from_env({"RUN_ID": "bench"})
    torch.manual_seed(a.seed)
    model = tg.build_model(h.model)
    state, roles = model.state_dict(), tg.param_roles(model)
    small, _, _ = load_checkpoint_model(a.checkpoint)
    samples = role_samples(small.state_dict(), tg.param_roles(small))
    return h, state, roles, synthetic_state(state, roles, samples, torch.Generator().manual_seed(a.seed))


def bench_fullsize_fit(a: argparse.Namespace) -> None:
    """The default export at full size: the default model with every quantised matrix resampled from --checkpoint
    (as --fullsize-codecs), quantised at every default (int6 attn/mlp, int7 embedding, LQER, fp16 control tensors,
    int8 attention gate; SDClip RTN, since synthetic weights have no calibration data), encoded once with the
    default codec, plus the code bytes of the default policy, against TARGET_BYTES (default: the cap)."""
    h, state, roles, synth = fullsize_resampled(a)
    code = tg.size_report(0, (ROOT / "train_gpt.py").read_text(encoding="utf-8"), h.code_policy)["code_bytes"]
    log(f"default model: {sum(t.numel() for t in state.values()):,} params, weights resampled from "
        f"{Path(a.checkpoint).name}; code {code:,} bytes ({h.code_policy}); target {h.target_bytes:,}")  # fmt: skip
    t0 = time.perf_counter()
    entries = tg.quantize_state_dict(synth, roles, h)
    t1 = time.perf_counter()
    blob = tg.encode_artifact(dataclasses.asdict(h.model), entries, h.compressor, h.compress_level)
    t2 = time.perf_counter()
    total = code + len(blob)
    log(f"model {len(blob):,} bytes + code {code:,} = {total:,} ({total / h.target_bytes:.2%} of the target, "
        f"{'margin' if total <= h.target_bytes else 'OVER by'} {abs(h.target_bytes - total):,}); order-0 floor of "
        f"the int codes {order0_bits(entries):,.0f}; quantise {t1 - t0:.0f} s, {h.compressor}-{h.compress_level} "
        f"encode {t2 - t1:.0f} s")  # fmt: skip
    for role in ("attn", "mlp", "embed", "control"):
        ms = [e["meta"] for e in entries if e["meta"]["role"] == role]
        how = sorted({f"{m['store']}{m.get('bits', '')}" + ("+lqer" if m.get("lqer") else "") for m in ms})
        log(f"  {role}: {len(ms)} tensors, {sum(math.prod(m['shape']) for m in ms):,} values, {'/'.join(how)}")


def record_state_dict(state: dict, cfg: tg.ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under the 1.0611 record's unbanked names: the gate and SmearGate renamed, the parallel
    lambdas stacked over all blocks (the record allocates them for every block; unused rows at their init)."""
    out, n = {}, cfg.num_layers
    post, resid = torch.ones(n, 2, 2), torch.full((n, 2), 1.1)
    for name, t in state.items():
        if name.endswith("attn.gate.weight"):
            out[name.replace("attn.gate.weight", "attn.attn_gate_w")] = t
        elif name.endswith((".post_lambdas", ".resid_lambdas")):
            i = int(name.split(".")[1])
            (post if name.endswith("post_lambdas") else resid)[i] = t
        elif name == "smear.w":
            out["smear_gate.weight"] = t.view(1, -1)
        elif name == "smear.lam":
            out["smear_lambda"] = t
        else:
            out[name] = t
    out["parallel_post_lambdas"], out["parallel_resid_lambdas"] = post, resid
    return out


def bench_record_export(a: argparse.Namespace) -> None:
    """Issue 25: the full-size export of the same weights under the record's code and ours. The default model with
    every matrix resampled from --checkpoint (as --fullsize-fit); no calibration data, so both run GPTQ with H = I
    (the same codes as RTN; the parity tests show both quantisers give identical codes for equal Hessians). Ours:
    quantize_state_dict + encode_artifact at the defaults, code counted by CODE_POLICY. The record's: its own
    gptq_mixed_quantize and per-group serialisation (lrzip + brotli: needs the lrzip binary and the brotli package,
    neither a dependency of this project), code counted by its own rule (brotli of the source; unminified when its
    pyminify is absent)."""
    import shutil
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    import record_oracle as ro  # noqa: E402 (the parity tests' oracle: the record's train_gpt.py imported in place)

    if shutil.which("lrzip") is None:
        raise tk.UserError("--record-export needs the lrzip binary (apt-get install lrzip): the record's compressor")
    try:
        import brotli  # noqa: F401
    except ImportError as e:
        raise tk.UserError("--record-export needs the brotli package (pip install brotli): the record's") from e
    rec = ro.load_record()
    rec.log = lambda *args, **kwargs: None
    rh = ro.record_settings()
    h, state, roles, synth = fullsize_resampled(a)
    hessians = {n: torch.eye(synth[n].size(1)) for n, r in roles.items() if r in ("attn", "mlp", "embed")}
    t0 = time.perf_counter()
    entries = tg.quantize_state_dict(synth, roles, h, hessians)
    ours = len(tg.encode_artifact(dataclasses.asdict(h.model), entries, h.compressor, h.compress_level))
    our_code = tg.size_report(0, (ROOT / "train_gpt.py").read_text(encoding="utf-8"), h.code_policy)["code_bytes"]
    t1 = time.perf_counter()
    result, meta = rec.gptq_mixed_quantize(record_state_dict(synth, h.model), hessians, rh)
    with tempfile.TemporaryDirectory(prefix="pgrp_") as tmp:
        theirs = len(rec._serialize_pergroup(result, meta, rh.num_layers, tmp))
    record_code = ro.shared_path(*ro.RECORD_DIR, "train_gpt.py").read_text(encoding="utf-8")
    their_code = rec._compressed_code_size(record_code)[1]
    t2 = time.perf_counter()
    same = all(
        torch.equal(e["q"], result[e["meta"]["name"] + ".q"]) for e in entries if e["meta"].get("method") == "gptq"
    )
    log(f"default model, weights resampled from {Path(a.checkpoint).name}; GPTQ with H = I; codes identical: {same}")
    log("| code | model bytes | code bytes | total | vs 16,000,000 | time |")
    log("|---|---:|---:|---:|---:|---:|")
    for name, m, c, t in (("ours", ours, our_code, t1 - t0), ("the record's", theirs, their_code, t2 - t1)):
        total = m + c
        log(f"| {name} | {m:,} | {c:,} | {total:,} | {total - tg.BYTE_LIMIT:+,} | {t:.0f} s |")


def similarity_order(q: np.ndarray) -> np.ndarray:
    """Rows in nearest-neighbour chain order (L1), from row 0: the record's per-group row sort."""
    m, used, order = q.astype(np.float32), np.zeros(len(q), dtype=bool), [0]
    used[0] = True
    for _ in range(len(q) - 1):
        rest = np.flatnonzero(~used)
        order.append(int(rest[np.argmin(np.abs(m[rest] - m[order[-1]]).sum(1))]))
        used[order[-1]] = True
    return np.array(order)


def bench_layouts(a: argparse.Namespace) -> None:
    """Does the record's layout (rows sorted by similarity, codes stored column-major) shrink the int codes under
    zstd-22? The --checkpoint model quantised at the defaults (RTN); per role, each matrix's codes as stored, column
    -major, sorted, sorted and column-major, each role's matrices compressed together; the permutations' cost."""
    h = tg.Hyperparameters.from_env({"RUN_ID": "bench"})
    model, cfg, _ = load_checkpoint_model(a.checkpoint)
    entries = tg.quantize_state_dict(model.state_dict(), tg.param_roles(model), h)
    z = lambda b: len(tg.compress_bytes(b, "zstd", 22))  # noqa: E731
    log("| role | as stored | column-major | rows sorted | sorted + column-major | permutations |")
    log("|---|---:|---:|---:|---:|---:|")
    for role in ("attn", "mlp", "embed"):
        qs = [e["q"].numpy() for e in entries if e["meta"]["role"] == role and e["meta"].get("method") != "absmax"]
        orders = [similarity_order(q) for q in qs]
        layouts = (qs, [q.T for q in qs], [q[o] for q, o in zip(qs, orders)], [q[o].T for q, o in zip(qs, orders)])
        sizes = [z(b"".join(np.ascontiguousarray(q).tobytes() for q in lay)) for lay in layouts]
        perms = z(b"".join(o.astype(np.uint16).tobytes() for o in orders))
        log(f"| {role} | " + " | ".join(f"{n:,}" for n in sizes) + f" | {perms:,} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", help="float checkpoint from train_gpt.py (else a quick tiny training runs)")
    p.add_argument("--data-path", default=str(ROOT / "data" / "sample"), help="folder with fineweb_train_*.bin")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--val-tokens", type=int, default=131_072, help="val prefix tokens scored per variant")
    p.add_argument("--calib-batches", type=int, default=0, help="GPTQ calibration batches (0: the run's setting)")
    p.add_argument("--sliding", action="store_true", help="also score every variant with the sliding window")
    p.add_argument(
        "--sweep-k",
        type=lambda s: [float(v) for v in s.split(",") if v],
        default=[],
        help="comma-separated attn/mlp clip k values for the equal-bytes RTN vs GPTQ comparison",
    )
    p.add_argument("--lqer-rank", type=int, default=4)
    p.add_argument("--lqer-top", type=int, default=4)
    p.add_argument(
        "--fullsize-codecs",
        action="store_true",
        help="only the full-size codec comparison (weights resampled from --checkpoint, and Gaussian)",
    )
    p.add_argument("--layouts", action="store_true", help="only the row-order / column-major layout question")
    p.add_argument(
        "--fullsize-fit",
        action="store_true",
        help="only the default export at full size (weights resampled from --checkpoint) against TARGET_BYTES",
    )
    p.add_argument(
        "--record-export",
        action="store_true",
        help="only the full-size export of the same weights under the record's code and ours (needs lrzip, brotli)",
    )
    p.add_argument(
        "--offsets",
        type=int,
        default=1,
        help="codec tables: encode with the payload shifted by 0..N-1 bytes and report min-max bytes",
    )
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args(argv)
    if a.val_tokens < 1 or a.calib_batches < 0 or a.lqer_rank < 0 or a.lqer_top < 0 or a.offsets < 1:
        raise tk.UserError(
            "--val-tokens and --offsets must be positive; --calib-batches, --lqer-rank and --lqer-top must be >= 0"
        )
    if any(k <= 0 for k in a.sweep_k):
        raise tk.UserError(f"--sweep-k {a.sweep_k}: every k must be positive")
    if (a.fullsize_fit or a.layouts or a.record_export) and not a.checkpoint:
        raise tk.UserError("--fullsize-fit, --layouts and --record-export need a trained model: pass --checkpoint")
    if a.record_export:
        return bench_record_export(a) or 0
    if a.layouts:
        return bench_layouts(a) or 0
    bench_fullsize_fit(a) if a.fullsize_fit else bench_fullsize_codecs(a) if a.fullsize_codecs else bench_exports(a)
    return 0


if __name__ == "__main__":
    sys.exit(tk.run_cli(main))
