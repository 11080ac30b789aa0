"""toolkit.py: the glue the command-line tools share, built on train_gpt.py (which stays self-contained).

train_gpt.py is the recipe a record runs alone; everything only the tools need lives here, once: the user-error
type and the one-line CLI runner, the shard names and writer, and (see the sections below) settings, model loading,
the artifact's frame and stored tensors, export reports, run summaries and the runner's lock, and the official
files. quantize.py, eval_bpb.py, data/, records/ and benchmarks/ import this module; none keeps a copy of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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


TRAIN_GLOB, VAL_GLOB = tg.TRAIN_GLOB, tg.VAL_GLOB  # a dataset folder's shards


def shard_name(split: str, index: int) -> str:
    """The file name of a split's index-th shard (matched by TRAIN_GLOB / VAL_GLOB)."""
    return f"fineweb_{split}_{index:06d}.bin"


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_output(path: str | os.PathLike, flag: str, ours: Callable[[Path], bool], what: str) -> Path:
    """An output path a tool may write, checked before any work: absent, or a file `ours` recognises as one this
    toolkit wrote (`what` names the kind); never a folder and never any other file (`-o train_gpt.py` would have
    replaced the script)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {p}: is a folder; give a file path")
    if p.exists() and not ours(p):
        raise UserError(f"{flag} {p}: exists and is not {what}; refusing to replace it (choose another path)")
    if not p.parent.is_dir() and p.parent.exists():
        raise UserError(f"{flag} {p}: {p.parent} is not a folder")
    return p


def is_artifact(path: Path) -> bool:
    """A quantised artifact (its magic), read without trusting the rest."""
    try:
        with open(path, "rb") as f:
            return f.read(len(tg.ARTIFACT_MAGIC)) == tg.ARTIFACT_MAGIC
    except OSError:
        return False


def is_packed(path: Path) -> bool:
    """A packed train_gpt.py (quantize.py pack's self-extracting stub)."""
    stub = tg.PACK_STUB.split("{")[0].encode()
    try:
        with open(path, "rb") as f:
            return f.read(len(stub)) == stub
    except OSError:
        return False


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


def eval_loops(cfg) -> int:
    """How many times the recurrent span runs at evaluation: EVAL_LOOPS, or NUM_LOOPS when it is 0 (the config's own
    property; a config of an older train_gpt.py given to eval_bpb.py --code may predate it)."""
    return getattr(cfg, "effective_eval_loops", None) or cfg.eval_loops or cfg.num_loops


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
    recorded: dict  # the hyperparameters a checkpoint recorded (an artifact: its window, or {} if it predates that)
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
            cfg, state, *rest = code.read_artifact(path.read_bytes())  # rest: the recorded window, if any
        except UserError as e:
            raise UserError(f"--artifact {path}: {e}") from None
        config, recorded = dataclasses.asdict(cfg), (rest[0] if rest else {})
    else:
        config, state, recorded = load_checkpoint(path)
    try:
        cfg = code.ModelConfig.from_dict(config, f"{path}'s model config")
        code.check_shapes(cfg, state, str(path))  # on the meta device: no memory for a crafted config
    except UserError as e:
        raise UserError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    model = code.build_model(cfg)
    model.load_state_dict(state, strict=True)
    return Loaded(model.eval(), config, recorded, state)


# =====================================================================================================================
# ARTIFACTS: the stored tensors, read through train_gpt.py (the frame: tg.read_frame)
# =====================================================================================================================


def entry_tensors(entry: dict) -> list[torch.Tensor]:
    """The stored tensors of one artifact entry (integer codes, scales, factors ...), in stream order."""
    return [t for _, t in tg.entry_parts(entry)]


# =====================================================================================================================
# REPORTS: what an export did, tensor by tensor and role by role
# =====================================================================================================================


def quantize_with_report(state: dict, roles: dict, cfg, h, hessians: dict | None = None) -> tuple[bytes, dict]:
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
            "stored_bytes": sum(t.numel() * t.element_size() for e in es for t in entry_tensors(e)),
            "rel_mse": sum(r.get("rel_mse", 0.0) * r["params"] for r in rs) / max(params, 1),
            **{k: "/".join(sorted({str(r[k]) for r in rs if k in r})) or "-" for k in ("bits", "k", "method", "store")},
        }
    report = {"tensors": tensors, "roles": by_role, "model_bytes": len(blob), "compressor": h.compressor}
    report.update(params=sum(r["params"] for r in by_role.values()), quantize_seconds=seconds)
    return blob, report


# =====================================================================================================================
# RUNS: the run_summary line of a log, one runner per folder, SIGTERM as Ctrl-C
# =====================================================================================================================
RUN_SUMMARY_PREFIX = "run_summary "  # train_gpt.py's last line of a finished run: this, then one JSON object


def run_summary_json(lines: Iterable[str]) -> str | None:
    """The JSON text of the last run_summary line among `lines`; None when there is none."""
    found = None
    for line in lines:
        if line.startswith(RUN_SUMMARY_PREFIX):
            found = line[len(RUN_SUMMARY_PREFIX) :]
    return found


def read_run_summary(log: str | os.PathLike) -> dict | None:
    """The run_summary of a log, or None when it has none that is complete (absent log, an interrupted or failed
    run, a line cut short or not JSON, no scores). Lenient: records/records.py's parse_log is the strict reader."""
    log = Path(log)
    if not log.exists():
        return None
    with open(log, encoding="utf-8", errors="replace") as f:
        text = run_summary_json(line for line in f if line.endswith("\n"))  # a line being written has no newline
    try:
        summary = json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        summary = None
    return summary if isinstance(summary, dict) and summary.get("scores") else None


class PidLock:
    """One process at a time per lock file: it holds the holder's pid; a lock left by a dead process is taken over,
    a live holder's is refused (`who` names the tool in the message), and a file that is not a pid is never removed."""

    def __init__(self, path: Path, who: str):
        self.path, self.who = Path(path), who

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            text = self.path.read_text(errors="replace").strip()
            if not text.isdigit():
                raise UserError(f"{self.path}: not a lock this runner wrote ({text[:40]!r}); remove it") from None
            pid = int(text)
            if pid and pid_alive(pid):
                raise UserError(
                    f"another {self.who} (pid {pid}) is running in {self.path.parent}; wait for it"
                ) from None
            self.path.unlink()  # left by a runner that died
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (tg.sigterm_handler, as in train_gpt's main) in the block; then the old one."""
    previous = signal.signal(signal.SIGTERM, tg.sigterm_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# =====================================================================================================================
# OFFICIAL CHECKPOINTS: the public baseline's own files, rescored by PRESET=baseline's model
# =====================================================================================================================
# The challenge's baseline train_gpt.py (records/track_10min_16mb/2026-03-17_NaiveBaseline) writes two files:
#   final_model.pt       torch.save of its model's state_dict (tok_emb.weight in bf16, everything else fp32);
#   final_model.int8.ptz zlib of torch.save of a dict: "__quant_format__": "int8_clean_per_row_v1", "quantized"
#                        {name: int8}, "scales" {name: fp16 per row for 2-D tensors, a 0-d fp32 otherwise}, "dtypes"
#                        {name: original dtype}, "passthrough" {name: tensor kept as is, control tensors in fp32,
#                        other small floats in fp16}, optional "qmeta" {name: {"scheme": "per_row", "axis": 0}} and
#                        "passthrough_orig_dtypes" {name: dtype the fp16 copy is cast back to}.
# Both are pickles. They are read with torch.load(weights_only=True), which builds tensors and plain containers and
# never imports or calls anything the file names, and then every object in them must be a tensor, str, int, float,
# dict or list. The official parameter names map onto PRESET=baseline's (OFFICIAL_NAMES); the shapes give the
# few sizes the official script let the environment change (vocab, layers, width, heads, MLP, tied head).
OFFICIAL_INT8_FORMAT = "int8_clean_per_row_v1"
OFFICIAL_WRAPPERS = ("_orig_mod.", "module.")  # torch.compile / DDP prefixes a saved state_dict may carry
OFFICIAL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OFFICIAL_MAX_NODES = 1 << 20  # entries of the containers in an official pickle (the int8 object has ~300)
OFFICIAL_MAX_UNZIPPED = 256 << 20  # the baseline's int8 object is ~17 MB; a crafted stream inflates no further
OFFICIAL_BLOCK_NAMES = {  # official name inside blocks.{i} -> ours
    "attn_scale": "attn_scale",
    "mlp_scale": "mlp_scale",
    "resid_mix": "resid_mix",
    "attn.q_gain": "attn.q_gain",
    "attn.c_q.weight": "attn.c_q.weight",
    "attn.c_k.weight": "attn.c_k.weight",
    "attn.c_v.weight": "attn.c_v.weight",
    "attn.proj.weight": "attn.proj.weight",
    "mlp.fc.weight": "mlp.fc.weight",
    "mlp.proj.weight": "mlp.proj.weight",
}
OFFICIAL_TOP_NAMES = {
    "tok_emb.weight": "tok_emb.weight",
    "skip_weights": "skip_weights",
    "lm_head.weight": "lm_head.weight",
}


def official_names(num_layers: int, tied: bool) -> dict[str, str]:
    """{official parameter name: PRESET=baseline's name} of an official model with `num_layers` blocks."""
    names = {k: v for k, v in OFFICIAL_TOP_NAMES.items() if not (tied and k == "lm_head.weight")}
    for i in range(num_layers):
        names.update({f"blocks.{i}.{k}": f"blocks.{i}.{v}" for k, v in OFFICIAL_BLOCK_NAMES.items()})
    return names


def _official_unpickle(data: bytes, what: str) -> object:
    """torch.load(weights_only=True) of `data`, then every object checked to be plain: one line if not."""
    import io
    import re

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError naming the refused global, or torch's errors for a non-pickle
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"it names {found.group(1)}, which is not a tensor or plain container" if found else type(e).__name__
        raise UserError(f"{what}: refused, not a plain pickle of tensors ({why}); nothing in it was run") from None
    bad = _first_unplain(obj)
    if bad:
        raise UserError(f"{what}: refused: {bad} (only tensors, str, int, float, dict and list are accepted)")
    return obj


def _first_unplain(obj: object) -> str | None:
    """Where `obj` holds something other than tensors, str, int, float, dict and list (None when it holds none).
    Walked with an explicit stack and parent links: a pickle nests as deep as it likes, the check never recurses.
    Each container is visited once however many times it is referenced (lists nested 40 deep with shared references
    are 2^40 paths but 80 nodes), and more than OFFICIAL_MAX_NODES nodes are refused: a state_dict has hundreds."""
    keys: list[tuple[int, object]] = [(-1, None)]  # node -> (parent node, key in the parent)
    stack, seen = [(obj, 0)], set()

    def where(node: int) -> str:
        path = []
        while node > 0:
            node, key = keys[node]
            path.append(f"[{key!r}]")
        return "the object" + "".join(reversed(path[-4:])) + ("[...]" if len(path) > 4 else "")

    while stack:
        x, node = stack.pop()
        if isinstance(x, torch.Tensor) or type(x) in (str, int, float):
            continue
        if isinstance(x, dict | list):
            if id(x) in seen:
                continue
            seen.add(id(x))
            if len(keys) + len(x) > OFFICIAL_MAX_NODES:
                return f"the object holds over {OFFICIAL_MAX_NODES:,} entries, not a state_dict"
            for k, v in x.items() if isinstance(x, dict) else enumerate(x):
                if type(k) not in (str, int):
                    return f"{where(node)} has a {type(k).__name__} key"
                keys.append((node, k))
                stack.append((v, len(keys) - 1))
        else:
            return f"{where(node)} is a {type(x).__name__}"
    return None


def dequantize_official(obj: dict, what: str = "the int8 object") -> dict[str, torch.Tensor]:
    """The float state_dict of an official int8 object, computed as the official dequantiser does: q * its row's
    scale for a per-row entry (qmeta per_row, or a scale with dimensions), q * the one scale otherwise, in fp32,
    then cast to the recorded dtype; passthrough tensors kept, an fp16 copy cast back to its recorded dtype."""

    def need(ok: bool, why: str) -> None:
        if not ok:
            raise UserError(f"{what}: {why}")

    def dtype_of(name: object, key: str) -> torch.dtype:
        need(name in OFFICIAL_DTYPES, f"{key} dtype {name!r} is not one of {', '.join(OFFICIAL_DTYPES)}")
        return OFFICIAL_DTYPES[name]

    need(isinstance(obj, dict), "not a dict")
    fmt = obj.get("__quant_format__", OFFICIAL_INT8_FORMAT)
    need(fmt == OFFICIAL_INT8_FORMAT, f"quant format {fmt!r}, expected {OFFICIAL_INT8_FORMAT!r}")
    parts = {k: obj.get(k, {}) for k in ("quantized", "scales", "dtypes", "passthrough", "qmeta")}
    parts["orig"] = obj.get("passthrough_orig_dtypes", {})
    need(all(isinstance(v, dict) for v in parts.values()), "its tables must be dicts")
    need("quantized" in obj and "passthrough" in obj, "no 'quantized' / 'passthrough' tables")
    out: dict[str, torch.Tensor] = {}
    for name, q in parts["quantized"].items():
        s = parts["scales"].get(name)
        need(isinstance(q, torch.Tensor) and q.dtype == torch.int8 and q.dim() >= 1, f"{name}: not an int8 tensor")
        need(isinstance(s, torch.Tensor) and s.is_floating_point(), f"{name}: no float scale")
        dtype = dtype_of(parts["dtypes"].get(name), name)
        meta = parts["qmeta"].get(name, {})
        if (isinstance(meta, dict) and meta.get("scheme") == "per_row") or s.dim() > 0:
            need(s.numel() == q.shape[0], f"{name}: {s.numel()} row scales for {q.shape[0]} rows")
            rows = s.to(torch.float32).view(q.shape[0], *([1] * (q.dim() - 1)))
            out[name] = (q.float() * rows).to(dtype).contiguous()
        else:
            out[name] = (q.float() * float(s.item())).to(dtype).contiguous()
    for name, t in parts["passthrough"].items():
        need(isinstance(t, torch.Tensor), f"passthrough {name}: not a tensor")
        need(name not in out, f"{name}: both quantised and passed through")
        orig = parts["orig"].get(name)
        out[name] = (t.to(dtype_of(orig, name)) if isinstance(orig, str) else t).contiguous()
    return out


def official_config(state: dict[str, torch.Tensor], what: str) -> tg.ModelConfig:
    """PRESET=baseline's model config with the sizes the official state_dict's shapes give."""
    keys = ("tok_emb.weight", "blocks.0.attn.q_gain", "blocks.0.attn.c_k.weight", "blocks.0.mlp.fc.weight")
    missing = [n for n in keys if n not in state]
    if missing:
        raise UserError(f"{what}: not an official baseline state_dict (no {', '.join(missing)})")
    vocab, dim = state["tok_emb.weight"].shape
    heads = state["blocks.0.attn.q_gain"].numel()
    layers = len({n.split(".")[1] for n in state if n.startswith("blocks.") and n.endswith(".attn.c_q.weight")})
    try:
        h = preset(
            "baseline",
            vocab_size=vocab,
            model_dim=dim,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=state["blocks.0.attn.c_k.weight"].shape[0] // max(dim // max(heads, 1), 1),
            mlp_mult=state["blocks.0.mlp.fc.weight"].shape[0] / dim,
            tie_embeddings=int("lm_head.weight" not in state),
        )
    except UserError as e:
        raise UserError(f"{what}: its shapes give no valid baseline model ({e})") from None
    return h.model


def load_official(checkpoint: str | None = None, artifact: str | None = None) -> Loaded:
    """PRESET=baseline's model holding the weights of an official final_model.pt (`checkpoint`) or
    final_model.int8.ptz (`artifact`, dequantised as the official code does), names mapped, loaded strictly."""
    import zlib

    path = Path(checkpoint or artifact)
    what = f"--official-{'checkpoint' if checkpoint else 'artifact'} {path}"
    if not path.is_file():
        raise UserError(f"{what}: no such file")
    data = path.read_bytes()
    if artifact:
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, OFFICIAL_MAX_UNZIPPED)
        except zlib.error:
            raise UserError(f"{what}: not a zlib stream, so not an official .int8.ptz") from None
        if inflater.unconsumed_tail:
            raise UserError(f"{what}: inflates to over {OFFICIAL_MAX_UNZIPPED} bytes: not an official .int8.ptz")
    obj = _official_unpickle(data, what)
    if artifact:
        obj = dequantize_official(obj, what)
    if not isinstance(obj, dict) or not all(isinstance(t, torch.Tensor) for t in obj.values()):
        raise UserError(f"{what}: not a state_dict (a dict of tensors)")
    state = {}
    for name, t in obj.items():
        for prefix in OFFICIAL_WRAPPERS:
            name = name.removeprefix(prefix)
        state[name] = t
    cfg = official_config(state, what)
    names = official_names(cfg.num_layers, bool(cfg.tie_embeddings))
    odd = sorted(set(state) - set(names))
    lost = sorted(set(names) - set(state))
    if odd or lost:
        raise UserError(f"{what}: its tensors are not the official baseline's: unknown {odd[:3]}, missing {lost[:3]}")
    floats = [n for n, t in state.items() if not t.is_floating_point()]
    if floats:
        raise UserError(f"{what}: {floats[0]} is {state[floats[0]].dtype}, not a float tensor")
    ours = {names[n]: t for n, t in state.items()}
    model = tg.build_model(cfg)
    want = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    bad = sorted(n for n in set(want) | set(ours) if want.get(n) != (tuple(ours[n].shape) if n in ours else None))
    if bad:
        raise UserError(
            f"{what}: its tensors do not fit the baseline model: "
            + ", ".join(f"{n} {tuple(ours[n].shape) if n in ours else None} vs {want.get(n)}" for n in bad[:3])
        )
    model.load_state_dict(ours, strict=True)  # bf16 / fp16 values are copied exactly into the fp32 parameters
    return Loaded(model.eval(), dataclasses.asdict(cfg), {"preset": "baseline"}, ours)


def sniff_official(path: str | os.PathLike) -> str | None:
    """'checkpoint' or 'artifact' when the file at `path` looks like an official final_model.pt / .int8.ptz (a
    zip whose pickle has tok_emb.weight / a zlib stream); None otherwise. Reads, never unpickles."""
    import zipfile

    path = Path(path)
    try:
        head = path.open("rb").read(2)
        if len(head) == 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
            return "artifact"
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            if pkl and b"tok_emb.weight" in z.read(pkl) and b"pgolf-float-checkpoint" not in z.read(pkl):
                return "checkpoint"
    except (OSError, zipfile.BadZipFile):
        return None
    return None
