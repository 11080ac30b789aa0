"""toolkit.py: the glue the command-line tools share, built on train_gpt.py (which stays self-contained).

train_gpt.py is the recipe a record runs alone; everything only the tools need lives here, once: the user-error
type and the one-line CLI runner, the shard writer, and (see the sections below) settings, model loading,
validation data, checkpoint I/O, packing and reports. quantize.py, eval_bpb.py, data/, records/ and benchmarks/
import this module; none keeps a copy of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import train_gpt as tg

ROOT = Path(__file__).resolve().parent
UserError = tg.UserError  # the one user-error type: one line, exit 2, no traceback


# =====================================================================================================================
# CLI
# =====================================================================================================================


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a tool's main: a UserError prints `error: ...` on one line and exits 2; Ctrl-C exits 130; any other
    exception is a bug and keeps its traceback."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial file was left under a final name", file=sys.stderr)
        return 130


# =====================================================================================================================
# SHARDS
# =====================================================================================================================


def shard_bytes(tokens: np.ndarray) -> bytes:
    """Serialise tokens (any integer array with values < 65536) as an official shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > 0xFFFF):
        raise tg.ShardError("token ids must be in [0, 65535] to fit the uint16 shard format")
    header = np.zeros(tg.SHARD_HEADER_INTS, dtype="<i4")
    header[:3] = (tg.SHARD_MAGIC, tg.SHARD_VERSION, tokens.size)
    return header.tobytes() + tokens.astype(tg.SHARD_TOKEN_DTYPE, copy=False).tobytes()


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write a shard atomically (no partial file under the final name on interruption or a full disk)."""
    tg.atomic_write_bytes(path, shard_bytes(tokens))


# =====================================================================================================================
# SETTINGS: one precedence for every tool
# =====================================================================================================================
# command-line flag (or --set KEY=VALUE) > environment > what the artifact / checkpoint recorded > PRESET's values.
# Recorded values never include where the run was (RUN_ID, DEVICE, LOG_DIR, ARTIFACT_PATH): those are this tool's.
NOT_INHERITED = {"run_id", "device", "log_dir", "artifact_path"}


def setting_names(code=tg) -> set[str]:
    """Every setting's field name in `code` (a train_gpt module), model fields included."""
    return {f.name for f, _ in code.setting_fields()}


def parse_sets(pairs: Sequence[str], code=tg) -> dict[str, str]:
    """--set KEY=VALUE pairs as an environment dict, every key checked against the settings."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set COMPRESSOR=lzma")
        key = key.strip().upper()
        if key != "PRESET" and key.lower() not in setting_names(code):
            raise UserError(f"--set {key}: no such setting (python train_gpt.py --help lists them)")
        out[key] = value
    return out


def settings(recorded: dict | None = None, flags: dict[str, object] | None = None, env=None, code=tg):
    """Hyperparameters under the one precedence: flags > environment > recorded > preset."""
    env = os.environ if env is None else env
    names = setting_names(code)
    merged = {k.upper(): str(v) for k, v in (recorded or {}).items() if k in names and k not in NOT_INHERITED}
    if recorded and "preset" in recorded:
        merged["PRESET"] = str(recorded["preset"])
    merged.update({k: v for k, v in env.items() if k == "PRESET" or k.lower() in names})
    merged.update({k.upper(): str(v) for k, v in (flags or {}).items() if v is not None})
    merged.setdefault("RUN_ID", "tool")
    return code.Hyperparameters.from_env(merged)


def preset(name: str, **overrides: object):
    """A preset's settings with some fields changed, ignoring the environment (tests and benchmarks)."""
    return tg.Hyperparameters.from_env(
        {"PRESET": name, "RUN_ID": "x", **{k.upper(): str(v) for k, v in overrides.items()}}
    )


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


# =====================================================================================================================
# MODELS: float checkpoints and artifacts, loaded with every check
# =====================================================================================================================


@dataclass
class Loaded:
    model: torch.nn.Module  # on CPU, eval mode, weights loaded strictly
    config: dict  # the model config the file recorded
    recorded: dict  # the hyperparameters a checkpoint recorded ({} for an artifact)
    state: dict  # the float (or dequantised) state_dict


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, dict]:
    """(model_config, state_dict, recorded hyperparameters) of a float checkpoint train_gpt.py saved."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"{path}: not a readable float checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != tg.CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a {tg.CHECKPOINT_FORMAT} file")
    if ckpt.get("version") != tg.CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint version {ckpt.get('version')}, expected {tg.CHECKPOINT_VERSION}")
    return ckpt["model_config"], ckpt["state_dict"], ckpt.get("hparams", {})


def load_model(artifact: str | None = None, checkpoint: str | None = None, code=tg) -> Loaded:
    """The model of an artifact or a float checkpoint, built by `code` (a train_gpt module) and loaded strictly;
    any mismatch is one line naming the file."""
    path = Path(artifact or checkpoint)
    if artifact:
        if not path.is_file():
            raise UserError(f"--artifact {path}: no such file")
        try:
            cfg, state = code.read_artifact(path.read_bytes())
        except UserError as e:
            raise UserError(f"--artifact {path}: {e}") from None
        config, recorded = dataclasses.asdict(cfg), {}
    else:
        config, state, recorded = load_checkpoint(path)
    try:
        model = code.build_model(config)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    want = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    got = {n: tuple(t.shape) for n, t in state.items()}
    bad = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
    if bad:
        raise UserError(
            f"{path}: its tensors do not fit the model its config describes: "
            + ", ".join(f"{n} {got.get(n)} vs {want.get(n)}" for n in bad[:3])
            + " (file shape vs model shape)"
        )
    model.load_state_dict(state, strict=True)
    return Loaded(model.eval(), config, recorded, state)


# =====================================================================================================================
# REPORTS: what an export did, tensor by tensor and role by role
# =====================================================================================================================


def build_artifact(state: dict, roles: dict, cfg, h, hessians: dict | None = None) -> tuple[bytes, dict]:
    """train_gpt's export plus a report: per tensor (bits, k, method, relative weight error, output error on the
    calibration inputs where a Hessian is known), per role (sums and parameter-weighted errors), model bytes."""
    t0 = time.perf_counter()
    blob, entries = tg.build_artifact(state, roles, cfg, h, hessians)
    seconds, hessians = time.perf_counter() - t0, hessians or {}
    tensors = {}
    for e in entries:
        m = e["meta"]
        r = tensors[m["name"]] = {"role": m["role"], "store": m["store"], "params": math.prod(m["shape"])}
        if m["store"] == "q":
            w, w_hat, H = state[m["name"]].float(), tg.dequantize_entry(e).float(), hessians.get(m["name"])
            err = float((w - w_hat).square().sum() / w.square().sum().clamp_min(1e-30))
            r.update(bits=m["bits"], k=m["k"], method=m["method"], lqer=m.get("lqer", 0), rel_mse=err)
            if H is not None:
                r["hess_err"] = tg.hessian_error(w.to(H.device), w_hat.to(H.device), H)
    by_role = {}
    for role in dict.fromkeys(e["meta"]["role"] for e in entries):
        es = [e for e in entries if e["meta"]["role"] == role]
        rs = [tensors[e["meta"]["name"]] for e in es]
        params = sum(r["params"] for r in rs)
        by_role[role] = {
            "tensors": len(es),
            "params": params,
            "stored_bytes": sum(t.numel() * t.element_size() for e in es for _, t in tg._entry_parts(e)),
            "rel_mse": sum(r.get("rel_mse", 0.0) * r["params"] for r in rs) / max(params, 1),
            **{k: "/".join(sorted({str(r[k]) for r in rs if k in r})) or "-" for k in ("bits", "k", "method", "store")},
        }
    report = {"tensors": tensors, "roles": by_role, "model_bytes": len(blob), "compressor": h.compressor}
    report.update(params=sum(r["params"] for r in by_role.values()), quantize_seconds=seconds)
    return blob, report
