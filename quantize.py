"""quantize.py: command-line tool over the quantisation and artifact code of train_gpt.py (it keeps no copy of it).

    python quantize.py quantize CKPT -o model.pgz [--data-path DIR] [--set GPTQ=0 CLIP_K_MLP=11.5 ...]
    python quantize.py roundtrip model.pgz --checkpoint CKPT --data-path DIR --tokenizer TOK.model
    python quantize.py inspect model.pgz [--tensors | --json]
    python quantize.py fit CKPT --target 16000000 -o model.pgz [--matrix-bits 5,6 --embed-bits 7,8]
    python quantize.py pack -o packed/train_gpt.py [--source train_gpt.py]

CKPT is the float checkpoint a training run saves beside its artifact. Settings, highest first: --set KEY=VALUE
and the flags, the environment, what the checkpoint recorded, the preset (toolkit.settings).
Exit status 2 with a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

import toolkit as tk
import train_gpt as tg

ROOT = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(msg, flush=True)


def load_float(a: argparse.Namespace, device: torch.device) -> tuple[tk.Loaded, tg.Hyperparameters]:
    """The checkpoint's model and its settings: --set / --data-path > environment > recorded > preset."""
    loaded = tk.load_model(checkpoint=a.checkpoint)
    flags = {**tk.parse_sets(a.set), "DATA_PATH": a.data_path}
    return loaded, tk.settings(loaded.recorded, flags)


def hessians_for(model: torch.nn.Module, h: tg.Hyperparameters, d: tg.Dist) -> tuple[dict | None, float]:
    if not h.gptq:
        return None, 0.0
    pattern = Path(h.data_path) / tk.TRAIN_GLOB
    if not list(Path(h.data_path).glob(tk.TRAIN_GLOB)):
        raise tk.UserError(
            f"GPTQ needs training shards for calibration and {pattern} matches none: pass --data-path, "
            "or --set GPTQ=0 for round-to-nearest"
        )
    t0 = time.perf_counter()
    hessians = tg.collect_hessians(model, tg.calibration_batches(h, d, h.gptq_calib_batches), tg.param_roles(model), d)
    return hessians, time.perf_counter() - t0


def role_compressed_bytes(blob: bytes, codec: str, level: int) -> dict[str, int]:
    """Bytes each role's data takes when compressed on its own with the artifact's codec."""
    entries = tg.decode_artifact(blob)[1]
    parts: dict[str, list[bytes]] = {}
    for e in entries:
        for t in tk.entry_tensors(e):
            raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            parts.setdefault(e["meta"]["role"], []).append(raw)
    return {role: len(tg.compress_bytes(b"".join(p), codec, level)) for role, p in parts.items()}


def print_report(report: dict, blob: bytes, h: tg.Hyperparameters, calib_s: float) -> dict:
    alone = role_compressed_bytes(blob, h.compressor, h.compress_level)
    log(
        f"{'role':8} {'tensors':>7} {'params':>10} {'bits':>5} {'clip_k':>7} {'method':>9} {'stored_B':>10} "
        f"{'alone_B':>10} {'rel_mse':>9} {'hess_err':>9}"
    )
    for role, r in report["roles"].items():
        errs = [
            (t["hess_err"], t["params"]) for t in report["tensors"].values() if t["role"] == role and "hess_err" in t
        ]
        hess = sum(e * n for e, n in errs) / sum(n for _, n in errs) if errs else float("nan")
        log(
            f"{role:8} {r['tensors']:>7} {r['params']:>10} {r['bits']:>5} {r['k']:>7} {r['method'] or r['store']:>9} "
            f"{r['stored_bytes']:>10} {alone[role]:>10} {r['rel_mse']:>9.2e} {hess:>9.2e}"
        )
    sizes = tg.size_report(len(blob), (ROOT / "train_gpt.py").read_text(encoding="utf-8"), h.code_policy)
    log(
        f"gptq_calibration_time:{calib_s:.2f}s quantize_time:{report['quantize_seconds']:.2f}s "
        f"params:{report['params']} bytes_per_param:{len(blob) / max(report['params'], 1):.4f}"
    )
    log(
        f"model_bytes:{sizes['model_bytes']} code_bytes:{sizes['code_bytes']} ({sizes['code_policy']}; raw "
        f"{sizes['code_bytes_raw']}, packed {sizes['code_bytes_packed']}) total_bytes:{sizes['total_bytes']} "
        f"limit:{sizes['limit']} {'UNDER' if sizes['under_limit'] else 'OVER'} by "
        f"{abs(sizes['limit'] - sizes['total_bytes'])}"
    )
    return sizes


def check_artifact_output(path: str) -> None:
    tk.check_output(path, "-o", tk.is_artifact, "an artifact (a file starting with the PGQA magic)")


def quantize_cmd(a: argparse.Namespace) -> None:
    check_artifact_output(a.output)
    d = tg.Dist(device=tk.pick_device(a.device))
    loaded, h = load_float(a, d.device)
    hessians, calib_s = hessians_for(loaded.model.to(d.device), h, d)
    blob, report = tk.quantize_with_report(loaded.state, tg.param_roles(loaded.model), h.model, h, hessians)
    tg.atomic_write_bytes(a.output, blob)
    log(f"wrote {a.output} ({len(blob)} bytes, {h.compressor}-{h.compress_level})")
    print_report(report, blob, h, calib_s)


def roundtrip_cmd(a: argparse.Namespace) -> None:
    d = tg.Dist(device=tk.pick_device(a.device))
    if a.per_tensor and not a.checkpoint:
        raise tk.UserError("--per-tensor needs --checkpoint (the float weights each tensor is swapped into)")
    blob = read_blob(a.artifact)
    flags = {**tk.parse_sets(a.set), "DATA_PATH": a.data_path, "TOKENIZER_PATH": a.tokenizer,
             "VAL_MAX_TOKENS": a.max_tokens or None}  # fmt: skip
    fmodel = None
    if a.checkpoint:
        loaded = tk.load_model(checkpoint=a.checkpoint)
        fmodel, h = loaded.model, tk.settings(loaded.recorded, flags)
    else:
        cfg, _, recorded = tg.read_artifact(blob)
        h = tk.settings({**recorded, **dataclasses.asdict(cfg)}, flags)
    qmodel, _ = tg.load_artifact_model(blob, h.model)
    tables, val = tg.load_validation(h)
    scores = {}
    for name, m in (("float", fmodel), ("quantised", qmodel)):
        if m is None:
            continue
        m.to(d.device).eval().set_loops(tk.eval_loops(h.model))
        t0 = time.perf_counter()
        res = scores[name] = tg.eval_flat(m, val, tables, h, d)
        log(
            f"{name:9} val_loss:{res.val_loss:.6f} val_bpb:{res.val_bpb:.6f} ({time.perf_counter() - t0:.1f}s, "
            f"{len(val) - 1} targets)"
        )
    if len(scores) == 2:
        log(
            f"quantisation tax: {scores['quantised'].val_bpb - scores['float'].val_bpb:+.6f} bpb, "
            f"{scores['quantised'].val_loss - scores['float'].val_loss:+.6f} nats/token; artifact {len(blob)} bytes"
        )
    if a.per_tensor:
        per_tensor_tax(fmodel, blob, val, tables, h, d, scores["float"].val_bpb)


def per_tensor_tax(fmodel, blob: bytes, val, tables, h, d, float_bpb: float) -> None:
    """Each integer-stored tensor's own share of the tax: the float model with only that tensor dequantised."""
    entries = tg.decode_artifact(blob)[1]
    floats = {k: v.detach().clone() for k, v in fmodel.state_dict().items()}
    named = [e for e in entries if e["meta"]["store"] == "q"]
    log(f"per-tensor tax: {len(named)} integer-stored tensors, one flat pass each")
    for i, e in enumerate(named, 1):
        name = e["meta"]["name"]
        fmodel.load_state_dict({**floats, name: tg.dequantize_entry(e).to(floats[name].dtype)}, strict=True)
        res = tg.eval_flat(fmodel, val, tables, h, d)
        m = e["meta"]
        how = f"{m['role']}, int{m['bits']} {m['method']}"
        log(f"  [{i}/{len(named)}] {name} ({how}): {res.val_bpb - float_bpb:+.6f} bpb")
    fmodel.load_state_dict(floats, strict=True)


def read_blob(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise tk.UserError(f"{path}: no such artifact file")
    return p.read_bytes()


def inspect_cmd(a: argparse.Namespace) -> None:
    blob = read_blob(a.artifact)
    try:  # the header's config must describe the tensors it lists (an inflated one would be printed as the model)
        model_config, entries, recorded = tg.decode_artifact(blob)
        tg.artifact_config(model_config, entries)
    except tk.UserError as e:
        raise tk.UserError(f"{a.artifact}: {e}") from None
    frame = tg.read_frame(blob)
    if a.json:
        print(
            json.dumps(
                {
                    "version": frame.version,
                    "codec": frame.codec,
                    "bytes": len(blob),
                    "payload_bytes": frame.payload_bytes,
                    "model_config": model_config,
                    "recorded": recorded,
                    "tensors": [e["meta"] for e in entries],
                },
                indent=1,
            )
        )
        return
    log(
        f"{a.artifact}: artifact format v{frame.version}, codec {frame.codec}, {len(blob)} bytes "
        f"({frame.payload_bytes} uncompressed)"
    )
    log("model_config: " + " ".join(f"{k}={v}" for k, v in model_config.items()))
    log("recorded: " + (" ".join(f"{k}={v}" for k, v in recorded.items()) or "none (an older artifact)"))
    roles: dict[str, dict] = {}
    for e in entries:
        m = e["meta"]
        r = roles.setdefault(m["role"], {"tensors": 0, "params": 0, "how": set()})
        r["tensors"] += 1
        r["params"] += math.prod(m["shape"])
        r["how"].add(
            f"int{m['bits']} k={m['k']} {m['method']}" + (f" lqer{m['lqer']}" if m.get("lqer") else "")
            if m["store"] == "q"
            else m["store"]
        )
        if a.tensors:
            log(
                f"  {m['name']:40} {str(m['shape']):>14} {m['role']:8} {m['dtype']:9} "
                + (f"int{m['bits']} k={m['k']} {m['method']}" if m["store"] == "q" else m["store"])
            )
    total = sum(r["params"] for r in roles.values())
    for role, r in roles.items():
        log(f"{role:8} tensors:{r['tensors']:<4} params:{r['params']:<10} {', '.join(sorted(r['how']))}")
    log(f"params:{total} bytes_per_param:{len(blob) / max(total, 1):.4f}")


def fit_cmd(a: argparse.Namespace) -> None:
    """For each bit-width combination offered, train_gpt's TARGET_BYTES search (the clip k as set when the artifact
    fits, else the smallest common multiplier of every k that does); the fitting combinations are ranked by a proxy
    of the score: the parameter-weighted output error on the calibration inputs (GPTQ) or the relative weight error."""
    check_artifact_output(a.output)
    mbits, ebits = bit_widths(a.matrix_bits, "--matrix-bits"), bit_widths(a.embed_bits, "--embed-bits")
    if a.target <= 0:
        raise tk.UserError(f"--target {a.target}: must be a positive number of bytes")
    d = tg.Dist(device=tk.pick_device(a.device))
    loaded, h = load_float(a, d.device)
    code = tg.size_report(0, (ROOT / "train_gpt.py").read_text(encoding="utf-8"), h.code_policy)["code_bytes"]
    if a.target <= code:
        raise tk.UserError(f"--target {a.target} is unreachable: the code alone takes {code} bytes ({h.code_policy})")
    hessians, calib_s = hessians_for(loaded.model.to(d.device), h, d)
    roles, state = tg.param_roles(loaded.model), loaded.state
    mbits, ebits = mbits or [h.quant_matrix_bits], ebits or [h.quant_embed_bits]
    best, refusals = None, []
    for mb, eb in [(mb, eb) for mb in mbits for eb in ebits]:
        hh = dataclasses.replace(h, quant_matrix_bits=mb, quant_embed_bits=eb, target_bytes=a.target)
        hh.validate()
        try:
            _, _, fit = tg.fit_artifact(state, roles, hh.model, hh, hessians, a.target - code)
        except tk.UserError as e:
            refusals.append(f"int{mb}/int{eb}: {e}")
            log(f"  int{mb}/int{eb}: does not fit")
            continue
        blob, report = tk.quantize_with_report(state, roles, fit.model, fit, hessians)
        log(f"  int{mb}/int{eb} k x{fit.clip_k_mlp / h.clip_k_mlp:.4f}: model {len(blob)} bytes, total "
            f"{len(blob) + code}, proxy {proxy(report):.4e}")  # fmt: skip
        if best is None or proxy(report) < proxy(best[1]):
            best = (blob, report, fit)
    if best is None:
        raise tk.UserError(f"--target {a.target} is unreachable with the bit widths offered ({'; '.join(refusals)})")
    blob, report, hh = best
    tg.atomic_write_bytes(a.output, blob)
    log(
        f"fit: QUANT_MATRIX_BITS={hh.quant_matrix_bits} QUANT_EMBED_BITS={hh.quant_embed_bits} "
        f"CLIP_K_ATTN={hh.clip_k_attn:.4f} CLIP_K_MLP={hh.clip_k_mlp:.4f} CLIP_K_EMBED={hh.clip_k_embed:.4f}"
    )
    log(f"wrote {a.output} ({len(blob)} bytes)")
    print_report(report, blob, hh, calib_s)


def bit_widths(value: str | None, flag: str) -> list[int]:
    """A comma-separated list of bit widths in [2, 8] ([] when the flag is not given)."""
    if value is None:
        return []
    try:
        widths = [int(b) for b in value.split(",")]
    except ValueError:
        raise tk.UserError(f"{flag} {value!r}: expected comma-separated bit widths, e.g. 5,6") from None
    if not all(2 <= b <= 8 for b in widths):
        raise tk.UserError(f"{flag} {value!r}: every width must be between 2 and 8")
    return sorted(set(widths))


def proxy(report: dict) -> float:
    """Parameter-weighted mean of the output error (Hessian metric) where known, else of the relative weight error."""
    ts = [t for t in report["tensors"].values() if t.get("store") == "q"]
    num = sum(t.get("hess_err", t["rel_mse"]) * t["params"] for t in ts)
    return num / max(sum(t["params"] for t in ts), 1)


def pack_cmd(a: argparse.Namespace) -> None:
    src, out = Path(a.source), Path(a.output)
    if not src.is_file():
        raise tk.UserError(f"--source {src}: no such file")
    if out.resolve() == src.resolve():
        raise tk.UserError(f"-o {out}: refusing to overwrite the readable source with its packed form")
    tk.check_output(out, "-o", tk.is_packed, "a packed train_gpt.py (written by quantize.py pack)")
    source = src.read_text(encoding="utf-8")
    try:
        packed = tg.pack_source(source)
    except SyntaxError as e:
        raise tk.UserError(f"{src}: not valid Python ({e.msg}, line {e.lineno})") from None
    tg.atomic_write_bytes(out, packed.encode())
    log(
        f"wrote {out}: {len(packed.encode())} bytes packed from {len(source.encode())} raw "
        f"({len(packed.encode()) / len(source.encode()):.1%})"
    )


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a setting, e.g. GPTQ=0")
        sp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
        sp.add_argument("--data-path", help=f"folder with {tk.TRAIN_GLOB} (GPTQ calibration) and {tk.VAL_GLOB}")

    q = sub.add_parser("quantize", help="float checkpoint -> artifact, with a per-role report and the size line")
    q.add_argument("checkpoint")
    q.add_argument("-o", "--output", required=True, help="artifact path (replaced atomically)")
    common(q)
    r = sub.add_parser("roundtrip", help="artifact -> dequantised model -> flat val bpb, before vs after")
    r.add_argument("artifact")
    r.add_argument("--checkpoint", help="the float checkpoint, to score it too and check the artifact matches it")
    r.add_argument("--tokenizer", help="SentencePiece model of the data (default: TOKENIZER_PATH)")
    r.add_argument("--max-tokens", type=int, default=0, help="score only this many val targets (quick checks)")
    r.add_argument(
        "--per-tensor",
        action="store_true",
        help="also score the float model with one integer tensor dequantised at a time (needs --checkpoint)",
    )
    common(r)
    i = sub.add_parser("inspect", help="what an artifact holds")
    i.add_argument("artifact")
    i.add_argument("--tensors", action="store_true", help="list every tensor")
    i.add_argument("--json", action="store_true", help="print the header as JSON")
    f = sub.add_parser("fit", help="search clip k (and offered bit widths) so the total lands just under --target")
    f.add_argument("checkpoint")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--target", type=int, default=tg.BYTE_LIMIT, help="total bytes (model + code) not to exceed")
    f.add_argument("--matrix-bits", help="comma-separated widths to try for attn/mlp, e.g. 5,6")
    f.add_argument("--embed-bits", help="comma-separated widths to try for the embedding/head, e.g. 7,8")
    common(f)
    k = sub.add_parser("pack", help="write the self-extracting packed train_gpt.py")
    k.add_argument("-o", "--output", required=True)
    k.add_argument("--source", default=str(ROOT / "train_gpt.py"))
    a = p.parse_args(argv)
    {"quantize": quantize_cmd, "roundtrip": roundtrip_cmd, "inspect": inspect_cmd, "fit": fit_cmd,
     "pack": pack_cmd}[a.cmd](a)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    return tk.run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
