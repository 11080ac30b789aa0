"""Parameter Golf: train a small GPT in a wallclock budget, export a <16,000,000-byte artifact, score it in bpb.

One self-contained file: its bytes count against the cap and a record must run from it alone.

    torchrun --standalone --nproc_per_node=8 train_gpt.py                 # 8 GPUs, frontier defaults
    torchrun --standalone --nproc_per_node=1 train_gpt.py                 # 1 GPU (same global batch, more accum)
    DATA_PATH=data/sample VOCAB_SIZE=1024 PRESET=tiny python train_gpt.py # CPU smoke run, float32, no compile

Every knob is an environment variable named after a `Hyperparameters` field in upper case; PRESET picks a base
(frontier | seed | baseline | tiny) that explicit variables override. Budget: 1,500 lines.
Sections, in data-flow order: config, distributed and logging, data, metric, model, optimisers, evaluation,
quantisation and artifact, training, main.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import math
import os
import platform
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# =====================================================================================================================
# CONFIG
# =====================================================================================================================

BYTE_LIMIT = 16_000_000

PRESETS: dict[str, dict[str, object]] = {
    # The strongest known design under the rules (SPEC section 4): the library defaults below.
    "frontier": {},
    # 3 unique parallel blocks looped 8 times in training, 12 at evaluation.
    "seed": dict(num_layers=3, loop_start=0, loop_end=2, num_loops=8, eval_loops=12, parallel_start=0,
                 unet_skips=0, loop_start_frac=0.0),
    # The challenge's 1.2244 baseline: every frontier feature off.
    "baseline": dict(vocab_size=1024, num_layers=9, mlp_mult=2.0, mlp_act="relu2", qk_gain_init=1.5, rope_dims=0,
                     ln_scale=0, skip_gates=0, xsa=0, smear_gate=0, attn_out_gate=0, num_loops=1, parallel_start=-1,
                     train_seq_len=1024, train_batch_tokens=524_288, muon_polar_express=0, muon_eq_r=0,
                     muon_wd=0.0, muon_momentum=0.95, muon_momentum_warmup_start=0.85,
                     muon_momentum_warmup_steps=500, matrix_lr=0.04, tied_embed_lr=0.05, scalar_lr=0.04,
                     grad_clip_norm=0.0, ema_decay=0.0, warmdown_frac=0.0, warmdown_iters=1200, quant_matrix_bits=8,
                     quant_embed_bits=8, gptq=0, compressor="zlib"),
    # A CPU-sized model for smoke runs, tests and the sample dataset (vocab 1024).
    "tiny": dict(vocab_size=1024, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                 loop_start=1, loop_end=2, num_loops=2, parallel_start=2, rope_dims=8, train_seq_len=128,
                 train_batch_tokens=4096, iterations=200, max_wallclock_seconds=0.0, warmup_steps=2,
                 val_loss_every=0, train_log_every=20, val_batch_tokens=16384, eval_batch_seqs=16,
                 muon_momentum_warmup_steps=50, gptq_calib_batches=4, data_path="./data/sample",
                 tokenizer_path="./data/sample/tokenizer.model"),
}


@dataclass(frozen=True)
class Hyperparameters:
    preset: str = "frontier"
    # data and run
    data_path: str = "./data/datasets/fineweb10B_sp8192"
    tokenizer_path: str = "./data/tokenizers/fineweb_8192_bpe.model"
    run_id: str = ""
    seed: int = 1337
    log_dir: str = "logs"
    artifact_path: str = ""  # default: final_model.<run_id>.pgz beside the log
    # training schedule
    iterations: int = 20_000
    max_wallclock_seconds: float = 600.0  # 0 = bounded by ITERATIONS alone
    warmup_steps: int = 20  # compile warm-up steps, rolled back afterwards
    warmdown_frac: float = 0.72  # fraction of the budget (time, or iterations) spent decaying the LR
    warmdown_iters: int = 0  # >0: fixed-length warm-down in steps instead (the baseline's WARMDOWN_ITERS)
    min_lr: float = 0.1  # LR floor, as a fraction of each group's base LR
    train_batch_tokens: int = 786_432
    train_seq_len: int = 2048
    val_loss_every: int = 0  # 0 = only at the end
    train_log_every: int = 100
    val_batch_tokens: int = 524_288
    val_max_tokens: int = 0  # >0: score only this prefix of val (quick checks; never for a record)
    grad_clip_norm: float = 0.3
    ema_decay: float = 0.9965  # 0 = off
    # model
    vocab_size: int = 8192
    num_layers: int = 11
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 4.0
    mlp_act: str = "leaky_relu2"  # leaky_relu2 | relu2
    leaky_slope: float = 0.5
    tie_embeddings: int = 1
    tied_embed_init_std: float = 0.005
    logit_softcap: float = 30.0  # 0 = off
    rope_base: float = 10_000.0
    rope_dims: int = 16  # rotated dims per head; 0 = all
    qk_gain_init: float = 5.25
    ln_scale: int = 1
    unet_skips: int = 1
    skip_gates: int = 1
    x0_mix: int = 1
    xsa: int = 1
    smear_gate: int = 1
    attn_out_gate: int = 1
    gate_inputs: int = 12
    loop_start: int = 3  # first block of the recurrent span
    loop_end: int = 5  # last block of the recurrent span (inclusive)
    num_loops: int = 3  # times the span runs in training once recurrence is on (1 = off)
    eval_loops: int = 0  # times the span runs at evaluation (0 = NUM_LOOPS)
    loop_start_frac: float = 0.35  # recurrence switches on at this fraction of the budget
    parallel_start: int = 7  # blocks from this index on are parallel-residual (-1 = none)
    # optimisers
    matrix_lr: float = 0.025
    tied_embed_lr: float = 0.035
    embed_lr: float = 0.6  # untied input embedding
    head_lr: float = 0.008  # untied output head
    scalar_lr: float = 0.025
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    adam_wd: float = 0.0
    muon_momentum: float = 0.97
    muon_momentum_warmup_start: float = 0.92
    muon_momentum_warmup_steps: int = 1500
    muon_nesterov: int = 1
    muon_backend_steps: int = 5
    muon_polar_express: int = 1
    muon_eq_r: int = 1
    muon_wd: float = 0.095
    # evaluation
    eval_seq_len: int = 0  # 0 = TRAIN_SEQ_LEN
    eval_stride: int = 64  # sliding-window stride; 0 = skip the sliding score
    eval_batch_seqs: int = 32  # windows per forward
    include_tail: int = 0  # 1 = also score the val tail the official loader drops
    ttt_mode: str = "off"  # off | sgd (score-first full-parameter) | lora (document-independent)
    ttt_chunk_tokens: int = 32_768
    ttt_lr: float = 0.003
    ttt_epochs: int = 3
    ttt_momentum: float = 0.9
    ttt_grad_clip: float = 1.0
    ttt_lora_rank: int = 8
    ttt_lora_lr: float = 0.01
    ttt_lora_chunk: int = 48
    ttt_lora_docs: int = 16  # documents adapted side by side
    # quantisation and artifact
    quant_matrix_bits: int = 6
    quant_embed_bits: int = 8
    clip_k_attn: float = 13.0
    clip_k_mlp: float = 12.0
    clip_k_embed: float = 20.0
    passthrough_max_numel: int = 65_536
    gptq: int = 1
    gptq_calib_batches: int = 32
    gptq_block: int = 128
    gptq_damp: float = 0.01
    gptq_reserve_seconds: float = 8.0
    lqer_rank: int = 0
    lqer_top: int = 4
    compressor: str = "zstd"  # zstd | lzma | zlib
    compress_level: int = 22
    code_policy: str = "raw"  # raw | packed (which code-bytes count the size line uses)
    # runtime
    device: str = "auto"  # auto | cuda | cpu
    compile: int = -1  # -1 = on for CUDA, off for CPU
    autocast_bf16: int = -1  # -1 = on for CUDA, off for CPU

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Hyperparameters:
        env = dict(os.environ if env is None else env)
        preset = env.get("PRESET", "frontier")
        if preset not in PRESETS:
            raise ValueError(f"PRESET={preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        values: dict[str, object] = {"preset": preset, **PRESETS[preset]}
        for f in fields(cls):
            name = f.name.upper()
            if f.name == "preset" or name not in env:
                continue
            raw = env[name].strip()
            try:
                values[f.name] = {"int": int, "float": float, "str": str}[f.type](raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {f.type}") from None
        if not values.get("run_id"):
            values["run_id"] = time.strftime("%Y%m%d_%H%M%S_") + uuid.uuid4().hex[:6]
        h = cls(**values)
        h.validate()
        return h

    def validate(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ValueError(f"{name.upper()}={getattr(self, name)!r}: {why}")

        for name in ("iterations", "train_batch_tokens", "train_seq_len", "vocab_size", "num_layers", "model_dim",
                     "num_heads", "num_kv_heads", "num_loops", "muon_backend_steps", "eval_batch_seqs",
                     "ttt_chunk_tokens", "ttt_lora_rank", "ttt_lora_chunk", "ttt_lora_docs", "gptq_block"):
            need(getattr(self, name) > 0, name, "must be positive")
        for name in ("max_wallclock_seconds", "warmup_steps", "warmdown_iters", "val_loss_every", "eval_stride",
                     "eval_loops", "eval_seq_len", "val_max_tokens", "grad_clip_norm", "ttt_epochs", "lqer_rank",
                     "gptq_calib_batches", "gptq_reserve_seconds", "logit_softcap"):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("warmdown_frac", "loop_start_frac", "min_lr", "ema_decay"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "must be in [0, 1]")
        need(self.train_log_every > 0, "train_log_every", "must be positive")
        need(self.mlp_mult > 0, "mlp_mult", "must be positive")
        need(self.model_dim % self.num_heads == 0, "num_heads", f"must divide MODEL_DIM={self.model_dim}")
        need(self.num_heads % self.num_kv_heads == 0, "num_kv_heads", f"must divide NUM_HEADS={self.num_heads}")
        head_dim = self.model_dim // self.num_heads
        need(head_dim % 2 == 0, "model_dim", "MODEL_DIM / NUM_HEADS must be even for RoPE")
        need(0 <= self.rope_dims <= head_dim and self.rope_dims % 2 == 0, "rope_dims",
             f"must be even and in [0, head_dim={head_dim}]")
        need(0 <= self.loop_start <= self.loop_end < self.num_layers, "loop_end",
             f"the loop span LOOP_START={self.loop_start}..LOOP_END must lie in [0, NUM_LAYERS-1={self.num_layers - 1}]")
        need(-1 <= self.parallel_start < max(self.num_layers, 1) or self.parallel_start == self.num_layers,
             "parallel_start", f"must be -1 or a block index below NUM_LAYERS={self.num_layers}")
        need(self.mlp_act in ("leaky_relu2", "relu2"), "mlp_act", "must be leaky_relu2 or relu2")
        need(self.ttt_mode in ("off", "sgd", "lora"), "ttt_mode", "must be off, sgd or lora")
        need(self.compressor in ("zstd", "lzma", "zlib"), "compressor", "must be zstd, lzma or zlib")
        need(self.code_policy in ("raw", "packed"), "code_policy", "must be raw or packed")
        need(self.device in ("auto", "cuda", "cpu"), "device", "must be auto, cuda or cpu")
        for name in ("quant_matrix_bits", "quant_embed_bits"):
            need(2 <= getattr(self, name) <= 8, name, "must be between 2 and 8")
        need(0 < self.gate_inputs <= self.model_dim, "gate_inputs", "must be in [1, MODEL_DIM]")

    @property
    def effective_eval_seq_len(self) -> int:
        return self.eval_seq_len or self.train_seq_len

    def model_config(self) -> dict[str, object]:
        """The knobs that define the network's shape and forward pass (stored inside the artifact)."""
        return {k: getattr(self, k) for k in MODEL_CONFIG_KEYS}


MODEL_CONFIG_KEYS = (
    "vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult", "mlp_act", "leaky_slope",
    "tie_embeddings", "tied_embed_init_std", "logit_softcap", "rope_base", "rope_dims", "qk_gain_init", "ln_scale",
    "unet_skips", "skip_gates", "x0_mix", "xsa", "smear_gate", "attn_out_gate", "gate_inputs", "loop_start",
    "loop_end", "num_loops", "eval_loops", "parallel_start",
)  # fmt: skip

# =====================================================================================================================
# DISTRIBUTED AND LOGGING
# =====================================================================================================================


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_pref: str = "auto") -> Dist:
    """Detect torchrun from the environment; NCCL on CUDA, gloo on CPU; world_size 1 needs no process group."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but torch sees no CUDA device")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return Dist(rank, world, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce when a process group is up; a no-op otherwise. Every rank must call it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t


class Logger:
    """Rank-0 logger: console plus logs/<run_id>.txt, flushed every line so an interrupted run keeps its log."""

    def __init__(self, path: str | None, enabled: bool = True):
        self.enabled = enabled
        self.file = None
        if enabled and path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)

    def __call__(self, msg: str, console: bool = True) -> None:
        if not self.enabled:
            return
        if console:
            print(msg, flush=True)
        if self.file:
            self.file.write(msg + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


def use_bf16(h: Hyperparameters, device: torch.device) -> bool:
    return device.type == "cuda" if h.autocast_bf16 < 0 else bool(h.autocast_bf16)


def amp_context(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA (or when forced); a no-op context in float32 otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same folder, fsync, then rename: a reader never sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# =====================================================================================================================
# DATA: the official shard format (SPEC section 2) and the training / validation token streams
# =====================================================================================================================

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4
SHARD_TOKEN_DTYPE = np.dtype("<u2")
BOS_ID = 1


class ShardError(ValueError):
    """A shard file that is not in the official format; the message names the file and what is wrong."""


def read_shard_header(path: str | os.PathLike) -> int:
    """Validate a shard's header and size; return its token count N."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: no such shard file")
    size = path.stat().st_size
    if size < SHARD_HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes is shorter than the {SHARD_HEADER_BYTES}-byte header (truncated?)")
    header = np.fromfile(path, dtype="<i4", count=SHARD_HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])}, expected {SHARD_MAGIC} (not a shard file?)")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])}, expected {SHARD_VERSION}")
    n = int(header[2])
    if n < 0 or size != SHARD_HEADER_BYTES + 2 * n:
        raise ShardError(f"{path}: file is {size} bytes but the header says {n} tokens, "
                         f"which needs {SHARD_HEADER_BYTES + 2 * n} bytes (truncated or corrupt)")
    return n


def load_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens (uint16, read-only, no copy) after validating it."""
    n = read_shard_header(path)
    if n == 0:
        return np.zeros(0, dtype=SHARD_TOKEN_DTYPE)
    return np.memmap(path, dtype=SHARD_TOKEN_DTYPE, mode="r", offset=SHARD_HEADER_BYTES, shape=(n,))


def shard_bytes(tokens: np.ndarray) -> bytes:
    """Serialise tokens (any integer array with values < 65536) as an official shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > 0xFFFF):
        raise ShardError("token ids must be in [0, 65535] to fit the uint16 shard format")
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    return header.tobytes() + tokens.astype(SHARD_TOKEN_DTYPE, copy=False).tobytes()


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write a shard atomically (no partial file under the final name on interruption or a full disk)."""
    atomic_write_bytes(path, shard_bytes(tokens))


def list_shards(pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shard files match {pattern!r}")
    return files


def load_token_split(pattern: str, vocab_size: int | None = None) -> np.ndarray:
    """Concatenate every shard matching `pattern` (the val split) into one uint16 array, checking token ids."""
    parts = [load_shard(p) for p in list_shards(pattern)]
    tokens = np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])
    if vocab_size is not None and tokens.size and int(tokens.max()) >= vocab_size:
        bad = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"{pattern}: token id {int(tokens[bad])} at position {bad} is >= vocab size {vocab_size}")
    return tokens


class TokenStream:
    """Reads training shards in order, wrapping around, one contiguous span at a time. Its state is two ints, so a
    warm-up can be rolled back exactly."""

    def __init__(self, pattern: str):
        self.files = list_shards(pattern)
        self.file_idx, self.pos = 0, 0
        self.tokens = load_shard(self.files[0])

    def state_dict(self) -> dict[str, int]:
        return {"file_idx": self.file_idx, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["file_idx"] != self.file_idx:
            self.tokens = load_shard(self.files[state["file_idx"]])
        self.file_idx, self.pos = state["file_idx"], state["pos"]

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens, self.pos = load_shard(self.files[self.file_idx]), 0

    def take(self, n: int) -> np.ndarray:
        out, need = [], n
        while need > 0:
            if self.pos >= len(self.tokens):
                self._advance_file()
                continue
            chunk = self.tokens[self.pos : self.pos + need]
            out.append(chunk)
            self.pos += len(chunk)
            need -= len(chunk)
        return np.concatenate(out) if len(out) > 1 else np.array(out[0])


class DistributedTokenLoader:
    """Each step every rank reads the same global span of the stream and keeps its own slice, so the global batch
    is identical for any world size and accumulation split."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device):
        self.stream = TokenStream(pattern)
        self.rank, self.world_size, self.device = rank, world_size, device

    def state_dict(self) -> dict[str, int]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.load_state_dict(state)

    def next_batch(self, global_tokens: int, seq_len: int, accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y) of shape (B, seq_len) for one micro-step of this rank."""
        local = global_tokens // (self.world_size * accum_steps)
        span = self.stream.take(local * self.world_size + 1)
        start = self.rank * local
        chunk = torch.from_numpy(span[start : start + local + 1].astype(np.int64))
        x, y = chunk[:-1].view(-1, seq_len), chunk[1:].view(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# =====================================================================================================================
# METRIC: the byte rule of bits per byte (SPEC section 3)
# =====================================================================================================================

SPACE_PIECE = "\u2581"


def build_byte_tables(sp, vocab_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token id: base_bytes (int16), has_leading_space (bool), is_boundary (bool).

    A target y after input x carries base_bytes[y] + (has_leading_space[y] and not is_boundary[x]) bytes; summed over
    the scored targets this equals the UTF-8 length of the normalised text. Ids past the tokenizer's vocab (padding
    of the embedding) are boundaries with 0 bytes.
    """
    n = int(sp.vocab_size())
    if vocab_size < n:
        raise ValueError(f"VOCAB_SIZE={vocab_size} is smaller than the tokenizer's vocabulary ({n})")
    if sp.piece_to_id(SPACE_PIECE) == sp.unk_id() or sp.id_to_piece(sp.piece_to_id(SPACE_PIECE)) != SPACE_PIECE:
        raise ValueError('tokenizer has no standalone "\u2581" piece: spaces would be miscounted; retrain it with the '
                         "official settings (data/tokenizer.py)")
    base = np.zeros(vocab_size, dtype=np.int16)
    space = np.zeros(vocab_size, dtype=np.bool_)
    boundary = np.ones(vocab_size, dtype=np.bool_)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_PIECE):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, space, boundary


def count_target_bytes(x: np.ndarray, y: np.ndarray, tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
    """Bytes carried by targets y given inputs x (same shape), in int64."""
    base, space, boundary = tables
    return int(base[y].astype(np.int64).sum() + (space[y] & ~boundary[x]).sum())


# =====================================================================================================================
# MODEL
# =====================================================================================================================
# (in progress) GPT(**model_config); model(idx) -> fp32 soft-capped logits (B, T, V); model(idx, targets) -> mean
# CE; model(idx, targets, reduction="none") -> (B, T) CE; model.hidden(idx) -> (B, T, D) final-normed states;
# model.project(hidden) -> fp32 soft-capped logits; model.set_loops(n); param_roles(model) -> {name: role}.


# =====================================================================================================================
# OPTIMISERS
# =====================================================================================================================


# =====================================================================================================================
# EVALUATION
# =====================================================================================================================


# =====================================================================================================================
# QUANTISATION AND ARTIFACT
# =====================================================================================================================


# =====================================================================================================================
# TRAINING
# =====================================================================================================================


# =====================================================================================================================
# MAIN
# =====================================================================================================================
