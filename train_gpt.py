"""Parameter Golf: train a small GPT in a wallclock budget, export a <16,000,000-byte artifact, score it in bpb.

One self-contained file: its bytes count against the cap and a record must run from it alone.

    torchrun --standalone --nproc_per_node=8 train_gpt.py                 # 8 GPUs, frontier defaults
    torchrun --standalone --nproc_per_node=1 train_gpt.py                 # 1 GPU (same global batch, more accum)
    PRESET=tiny python train_gpt.py                                       # CPU: float32, no compile, data/sample

Every knob is an environment variable named after a setting in upper case (`python train_gpt.py --help` lists them);
PRESET picks a base (frontier | seed | baseline | cpu | tiny) that explicit variables override. The tools' glue
(loading, reports, checkpoints for other scripts) lives in toolkit.py; this file holds only what a run executes.

The defaults (PRESET=frontier) reproduce the 2026-04-27 1.0611 record
(track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611): tests/test_record_parity.py and
tests/test_fidelity.py check it stage by stage. The file reads in the order a run goes; each banner owns one stage.

MAP: section -> entry points -> what it owns (change X: edit Y)
  1. CONFIG        ModelConfig, Hyperparameters, setting, PRESETS, check_ranges, settings_help, public_names
                   every setting (model shape in ModelConfig, the rest in Hyperparameters), declared once: type,
                   default, allowed values and public name in setting(...), --help text in the comment beside it;
                   presets; BYTE_LIMIT; UserError / ArtifactError. A new setting: one line here.
  2. RUNTIME       init_distributed, Dist, Logger, RunClock, agree_clock, amp_context, atomic_write_bytes
                   ranks and process groups, the log, the wallclock every rank agrees on, bf16 / compile switches.
  3. DATA          load_shard, load_token_split, DistributedTokenLoader, train_loader, check_shard_ids
                   the shard format (SPEC section 2), the token streams each rank trains on, and every train shard's
                   token ids checked before training.
  4. MODEL         GPT (forward, set_loops, layer_order), Block, Attention, MLP, SmearGate, build_model, init_weights
                   the record's network. Change the attention: Attention (and select_attention / varlen_attention for
                   the kernel); the MLP: MLP; the residual stack, loops and embeddings: Block and GPT; init:
                   init_weights; parameter groups: param_roles.
  5. OPTIMISERS    Muon, orthogonalize, build_optimizers
                   change the optimiser: Muon (Newton-Schulz / Polar Express steps) and build_optimizers (the AdamW
                   groups and which parameters go where).
  6. TRAINING      train_phase -> train -> train_step; lr_multiplier, scaled_schedule, muon_momentum, recurrence_gain
                   change the schedule: lr_multiplier (warmup / warmdown), muon_momentum, recurrence_gain (the loop
                   ramp); EMA; warmup_and_restore; the resumable state (save_resume_state, resume_state).
  7. EXPORT        export_phase -> calibrate -> quantize_state_dict -> fit_artifact
                   change the export: sdclip_scale / percentile_clip (clipping), quantize_rtn / gptq_quantize
                   (rounding), _add_lqer (low-rank correction), collect_hessians (calibration), fit_artifact (fitting
                   under BYTE_LIMIT).
  8. ARTIFACT      build_artifact, encode_artifact / read_frame, decode_artifact, read_artifact, write_artifact,
                   load_artifact_model, pack_source, size_report
                   the on-disk format: frame, JSON header, byte streams, codecs (compress_bytes, ans_encode), the
                   packed code whose bytes count against the cap.
  9. SCORING       score_phase -> score -> eval_flat / eval_sliding / eval_ttt; build_byte_tables, ScoreLedger
                   change the scoring: the byte rule (build_byte_tables, load_val_bytes), the once-each ledger
                   (ScoreLedger), sliding windows (sliding_plan, eval_sliding), test-time training (eval_ttt: the SGD
                   of _ttt_sgd and _ttt_phase in _ttt_optimizer / _ttt_cosine_lr / _ttt_sgd_step, the LoRA path
                   _ttt_lora).
 10. RUN           main -> run: log_header, check_memory, check_outputs, then train_phase, export_phase, score_phase.
 11. VARIANTS      linear_attention (ATTN=linear), mla_keys_values (ATTN=mla), random_blocks (ATTN=sparse),
                   MemoryBank (ENGRAM_SLOTS): features off the record's path, each reached from it by one dispatch line.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import copy
import dataclasses
import difflib
import glob
import hashlib
import io
import json
import lzma
import math
import os
import platform
import re
import signal
import struct
import subprocess
import sys
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# =====================================================================================================================
# 1. CONFIG: every setting (ModelConfig, Hyperparameters), the presets, their ranges, --help and the public names;
#    the byte cap, the evaluation limit and the error types a user sees
# =====================================================================================================================

BYTE_LIMIT = 16_000_000
EVAL_LIMIT_MS = 600_000  # evaluation gets its own 10 minutes
MAX_TABLE_PARAMS = 8 * BYTE_LIMIT  # the embedding, BIGRAM_HASH and ENGRAM_SLOTS tables: parameters each
STATE_BYTES = 20  # per parameter: fp32 weight, gradient, Adam's two moments (Muon's one is less), EMA shadow
LAYER_POSITIONS = {"loop_start": 3, "loop_end": 5, "parallel_start": 8}  # of 11 layers, when not set


class UserError(Exception):
    """Bad input from the user (a setting, a file, a path): reported as one line naming it, never a traceback.
    Every other exception is a bug and keeps its traceback."""


class ArtifactError(UserError):
    """An artifact or checkpoint that cannot be built or read; the message says what is wrong and how to fix it."""


class NonFiniteLoss(UserError):
    pass


# Each preset is a set of environment settings that the variables of a run override.
PRESETS: dict[str, str] = {
    # The strongest known design under the rules (SPEC section 4): the defaults below.
    "frontier": "",
    # 3 unique parallel blocks looped 8 times in training, 12 at evaluation.
    "seed": "NUM_LAYERS=3 LOOP_START=0 LOOP_END=-1 NUM_LOOPS=8 EVAL_LOOPS=12 PARALLEL_START=0 LOOP_START_FRAC=0",
    # The challenge's 1.2244 baseline: every frontier feature off.
    "baseline": "VOCAB_SIZE=1024 NUM_LAYERS=9 MLP_MULT=2 MLP_ACT=relu2 QK_GAIN_INIT=1.5 ROPE_DIMS=0 LN_SCALE=0 "
    "SKIP_GATES=0 XSA=0 DOC_ISOLATION=0 SMEAR_GATE=0 ATTN_OUT_GATE=0 NUM_LOOPS=1 PARALLEL_START=-1 TRAIN_SEQ_LEN=1024 "
    "TRAIN_BATCH_TOKENS=524288 MUON_POLAR_EXPRESS=0 MUON_EQ_R=0 MUON_WD=0 MUON_MOMENTUM=0.95 "
    "MUON_MOMENTUM_WARMUP_START=0.85 MUON_MOMENTUM_WARMUP_STEPS=500 MATRIX_LR=0.04 TIED_EMBED_LR=0.05 SCALAR_LR=0.04 "
    "GRAD_CLIP_NORM=0 EMA_DECAY=0 WARMDOWN_FRAC=0 WARMDOWN_ITERS=1200 MIN_LR=0 QUANT_MATRIX_BITS=8 "
    "SCHEDULE_REFERENCE_STEPS=0 LOOP_RAMP_FRAC=0 BETA2=0.95 ADAM_WD=0 EMBED_WD=0 ORTHO_INIT=0 QUANT_EMBED_BITS=8 "
    "QUANT_CLIP=percentile CONTROL_BITS=32 GPTQ=0 LQER_RANK=0 COMPRESSOR=zlib CODE_POLICY=raw TARGET_BYTES=0 "
    "EVAL_STRIDE=0 VAL_LOSS_EVERY=1000 TRAIN_LOG_EVERY=200 TTT_MODE=off",
    # The frontier at CPU golf scale (issue 15: 300 s on 2 cores, under 2 MB): every setting is the best measured
    # there (width 224, sequential blocks, 4,096 tokens per step, the features whose step cost did not pay off
    # there switched off, the baseline's learning rates, Muon momentum 0.85, a 4,096-vector BigramHash table, an 8-bit
    # tied embedding, a 60% warm-down). benchmarks/README.md, "CPU golf", has the figures; a test pins these rows.
    "cpu": "VOCAB_SIZE=1024 NUM_LAYERS=4 MODEL_DIM=224 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=2 TRAIN_SEQ_LEN=256 "
    "TRAIN_BATCH_TOKENS=4096 GRAD_ACCUM_STEPS=1 MAX_WALLCLOCK_SECONDS=300 WARMUP_STEPS=2 EVAL_STRIDE=0 NUM_LOOPS=1 "
    "XSA=0 ATTN_OUT_GATE=0 UNET_SKIPS=0 EMA_DECAY=0 GPTQ=0 LQER_RANK=0 PARALLEL_START=-1 MATRIX_LR=0.04 "
    "TIED_EMBED_LR=0.05 SCALAR_LR=0.04 WARMDOWN_FRAC=0.6 MIN_LR=0 MUON_MOMENTUM=0.85 MUON_MOMENTUM_WARMUP_START=0.85 "
    "BIGRAM_HASH=4096 QUANT_EMBED_BITS=8 CLIP_K_EMBED=10 QUANT_SCALE_BITS=6 SCHEDULE_REFERENCE_STEPS=4900 "
    "MUON_MOMENTUM_HORIZON_FRAC=0.05 LOOP_RAMP_FRAC=0.03 TTT_MODE=off DATA_PATH=./data/datasets/fineweb10B_sp1024 "
    "TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model",
    # A CPU-sized model for smoke runs, tests and the sample dataset (vocab 1024).
    "tiny": "VOCAB_SIZE=1024 NUM_LAYERS=4 MODEL_DIM=64 NUM_HEADS=4 NUM_KV_HEADS=2 MLP_MULT=2 NUM_LOOPS=2 ROPE_DIMS=8 "
    "TRAIN_SEQ_LEN=128 TRAIN_BATCH_TOKENS=4096 ITERATIONS=200 MAX_WALLCLOCK_SECONDS=0 WARMUP_STEPS=2 VAL_LOSS_EVERY=0 "
    "TRAIN_LOG_EVERY=20 EVAL_BATCH_SEQS=16 GPTQ_CALIB_BATCHES=4 TTT_MODE=off SCHEDULE_REFERENCE_STEPS=4900 "
    "MUON_MOMENTUM_HORIZON_FRAC=0.05 LOOP_RAMP_FRAC=0.03 DATA_PATH=./data/sample "
    "TOKENIZER_PATH=./data/sample/tokenizer.model",
}


def setting(default, *, gt=None, ge=None, le=None, lt=None, choices: tuple = (), public: str = ""):
    """A setting's declaration beside its name, type, default and (in the comment after it) its --help text: the
    values it may take (bounds gt / ge / le / lt, or choices; check_ranges reads them, for the settings and for every
    file's model config) and the public record scripts' name for it (public_names maps that to ours). Upper bounds
    keep a typo from allocating terabytes or running for days: shard ids are uint16 (VOCAB_SIZE <= 65,536), learning
    rates are at most 10 (far above any that trains: TTT_PHASE_LR=1e9 ended in nan), TTT passes at most 100."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={**bounds, "choices": choices, "public": public})


WINDOWED = ("local", "alternating", "sparse")  # ATTN kinds whose local blocks see only ATTN_WINDOW tokens back
ADDED_OPTIONS = (
    "attn", "attn_window", "attn_global", "attn_block", "attn_random_blocks", "bigram_hash", "z_loss", "mla_rank",
    "engram_slots",
)  # fmt: skip


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape and forward pass: what GPT is built from and what every artifact stores."""

    vocab_size: int = setting(8192, ge=1, le=65_536)
    num_layers: int = setting(11, ge=1, le=1024)
    model_dim: int = setting(512, ge=1, le=65_536)
    num_heads: int = setting(8, gt=0)
    num_kv_heads: int = setting(4, gt=0)
    mlp_mult: float = setting(4.0, gt=0)
    mlp_act: str = setting("leaky_relu2", choices=("leaky_relu2", "relu2", "swiglu"))  # swiglu: silu(x Wa) * (x Wb),
    # each MLP_MULT x width wide
    leaky_slope: float = 0.5
    tie_embeddings: int = 1
    tied_embed_init_std: float = 0.005
    logit_softcap: float = setting(30.0, ge=0)  # 0 = off
    rope_base: float = 10_000.0
    rope_dims: int = 16  # rotated dims per head; 0 = all
    qk_gain_init: float = 5.0
    ln_scale: int = 1  # norm outputs scaled by 1/sqrt(block index + 1)
    unet_skips: int = 1
    skip_gates: int = setting(1, public="SKIP_GATES_ENABLED")
    x0_mix: int = 1  # each block blends its input with the normalised embedding
    xsa: int = 1  # exclusive self-attention: remove each head's own value direction
    doc_isolation: int = 1  # attention stays inside each document (a BOS starts one), in training and scoring
    attn: str = setting("global", choices=("global", "local", "alternating", "sparse", "mla", "linear"))  # global |
    # local (each token sees the last ATTN_WINDOW) | alternating (local and global blocks in turn, the last global) |
    # sparse (BigBird: the window, the first ATTN_GLOBAL tokens and, per block of ATTN_BLOCK queries, ATTN_RANDOM_BLOCKS
    # earlier key blocks chosen by a fixed hash) | mla (DeepSeek-V2: keys and values up-projected from a rank-MLA_RANK
    # latent of x, the ROPE_DIMS rotated key dims a separate shared projection of x) | linear (kernel phi = elu + 1,
    # causal; chunked, O(T), without a mask, exact with one)
    attn_window: int = 256
    mla_rank: int = setting(0, ge=0)  # 0 = MODEL_DIM // 4
    attn_global: int = setting(0, ge=0)
    attn_block: int = setting(16, gt=0)
    attn_random_blocks: int = setting(0, ge=0)
    bigram_hash: int = setting(0, ge=0)  # >0: a table of this many vectors, indexed by a hash of (previous, current)
    # token and added to the input embedding (zero at init)
    z_loss: float = setting(0.0, ge=0)  # training adds z_loss * mean(logsumexp(logits)^2)
    engram_slots: int = setting(0, ge=0)  # >0: a memory of this many learned (key, value) slots, read by every token at
    # the middle of the layer order through a zero-initialised gate
    smear_gate: int = setting(1, public="SMEAR_GATE_ENABLED")
    attn_out_gate: int = setting(1, public="SPARSE_ATTN_GATE_ENABLED")  # per-head output gate sigmoid(scale * w .
    # x[:GATE_INPUTS]) (the record's sparse gate)
    attn_gate_scale: float = setting(0.5, public="SPARSE_ATTN_GATE_SCALE")
    gate_inputs: int = setting(12, public="GATE_WINDOW")  # leading dims of x driving the smear and attention gates
    loop_start: int = 3  # first block of the recurrent span (unset: round(3/11 of NUM_LAYERS))
    loop_end: int = 5  # last block of the span, inclusive; negative counts from the end (unset: round(5/11 ...))
    num_loops: int = setting(3, ge=1, le=1024)  # times the span runs in training once recurrence is on (1 = off)
    eval_loops: int = setting(0, ge=0, le=1024)  # times the span runs at evaluation (0 = NUM_LOOPS)
    parallel_start: int = setting(8, public="PARALLEL_START_LAYER")  # blocks from here on are parallel-residual; -1 =
    # none (unset: round(8/11 ...))

    @property
    def effective_eval_loops(self) -> int:
        """How many times the recurrent span runs at evaluation: EVAL_LOOPS, or NUM_LOOPS when it is 0."""
        return self.eval_loops or self.num_loops

    @classmethod
    def from_dict(cls, d: dict, what: str = "model config") -> ModelConfig:
        """The config an artifact or checkpoint recorded; refused in one line when its keys are not ours."""
        keys = {f.name for f in fields(cls)}
        if isinstance(d, dict):  # options added later, off by default: a file written before them lacks them
            d = {**{k: getattr(cls, k) for k in ADDED_OPTIONS if k not in d}, **d}
        if not isinstance(d, dict) or set(d) != keys:
            got = set(d) if isinstance(d, dict) else set()
            raise ArtifactError(
                f"{what} does not fit this train_gpt.py: missing {sorted(keys - got)}, unknown {sorted(got - keys)}"
            )
        for f in fields(cls):  # a file's values are checked as the settings are, before anything is built from them
            kinds = {"int": (int,), "float": (int, float), "str": (str,)}[f.type]
            if type(d[f.name]) not in kinds:
                raise ArtifactError(f"{what}: {f.name}={d[f.name]!r} is not a{'n' * (f.type == 'int')} {f.type}")

        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ArtifactError(f"{what}: {name}={d[name]!r} {why}: corrupt, or not a model this code builds")

        cfg = cls(**d)
        cfg.check(need)
        return cfg

    def check(self, need) -> None:
        """The checks of a model config alone (need(ok, field name, why) raises): run on the settings by
        Hyperparameters.validate and on a file's config by from_dict, so a crafted size fails before any work."""
        m = self
        check_ranges({f.name: getattr(m, f.name) for f in fields(m)}, need)
        need(m.model_dim % m.num_heads == 0, "num_heads", f"must divide MODEL_DIM={m.model_dim}")
        need(m.num_heads % m.num_kv_heads == 0, "num_kv_heads", f"must divide NUM_HEADS={m.num_heads}")
        head_dim = m.model_dim // m.num_heads
        need(head_dim % 2 == 0, "model_dim", "MODEL_DIM / NUM_HEADS must be even for RoPE")
        need(
            0 <= m.rope_dims <= head_dim and m.rope_dims % 2 == 0,
            "rope_dims",
            f"must be even and in [0, head_dim={head_dim}]",
        )
        if m.num_loops > 1 or m.eval_loops > 1:
            need(
                0 <= m.loop_start <= m.loop_end < m.num_layers,
                "loop_end",
                f"the span LOOP_START={m.loop_start}..LOOP_END must lie in [0, NUM_LAYERS-1={m.num_layers - 1}]",
            )
        need(-1 <= m.parallel_start < m.num_layers, "parallel_start", f"must be -1 or below NUM_LAYERS={m.num_layers}")
        need(0 < m.gate_inputs <= m.model_dim, "gate_inputs", "must be in [1, MODEL_DIM]")
        need(m.attn != "mla" or m.mla_rank <= m.model_dim, "mla_rank", f"must be at most MODEL_DIM={m.model_dim}")
        need(m.attn != "mla" or 0 < m.rope_dims < m.model_dim // m.num_heads, "rope_dims",
             "must be in [1, head_dim) for ATTN=mla: the rotated key dims are MLA's decoupled part")  # fmt: skip
        for name, rows in (("vocab_size", m.vocab_size), ("bigram_hash", m.bigram_hash),
                           ("engram_slots", 2 * m.engram_slots)):  # fmt: skip
            params = rows * m.model_dim
            need(params <= MAX_TABLE_PARAMS, name, f"makes a table of {params:,} parameters (rows x MODEL_DIM="
                 f"{m.model_dim}), about {params * STATE_BYTES / 2**30:.0f} GiB of weights and optimiser state; at "
                 f"most {MAX_TABLE_PARAMS:,} (what a {BYTE_LIMIT:,}-byte artifact holds at 1 bit each)")  # fmt: skip


@dataclass(frozen=True)
class Hyperparameters:
    preset: str = "frontier"
    # -- data and run
    data_path: str = "./data/datasets/fineweb10B_sp8192"
    tokenizer_path: str = "./data/tokenizers/fineweb_8192_bpe.model"
    run_id: str = ""  # default: a timestamp and a random suffix
    seed: int = setting(1337, ge=0, lt=1 << 32)  # numpy's seed range
    log_dir: str = "logs"
    artifact_path: str = ""  # default: artifacts/<run_id>.pgz
    # -- training schedule
    iterations: int = setting(20_000, gt=0)
    max_wallclock_seconds: float = setting(600.0, ge=0)  # 0 = bounded by ITERATIONS alone
    warmup_steps: int = setting(20, ge=0)  # compile warm-up steps, rolled back afterwards
    stop_after: int = setting(0, ge=0)  # >0, non-record runs (MAX_WALLCLOCK_SECONDS=0): stop after this many steps and
    # save the whole training state beside the artifact (<artifact>.resume.pt) instead of exporting
    resume_from: str = ""  # a .resume.pt state: continue that run (same settings and train_gpt.py) where it stopped
    warmdown_frac: float = setting(0.85, ge=0, le=1)  # fraction of the budget (time or iterations) decaying the LR
    warmdown_iters: int = setting(0, ge=0)  # >0: a warm-down of this many steps instead (the baseline's)
    min_lr: float = setting(0.1, ge=0, le=1)  # LR floor, as a fraction of each group's base LR
    lr_schedule: str = setting("warmdown", choices=("warmdown", "wsd", "cosine"))  # warmdown (linear over
    # WARMDOWN_FRAC) | wsd (1 - sqrt over it) | cosine (all)
    train_batch_tokens: int = setting(786_432, ge=1, le=1 << 30)  # global tokens per optimiser step
    train_seq_len: int = setting(2048, ge=1, le=1 << 20)
    grad_accum_steps: int = setting(0, ge=0)  # 0 = 8 // WORLD_SIZE (the baseline's rule), so the global batch is the
    # same on 1-8 GPUs
    val_loss_every: int = setting(0, ge=0)  # 0 = only at the end
    train_log_every: int = setting(100, gt=0)
    val_max_tokens: int = setting(0, ge=0)  # >0: score only this prefix of val (quick checks; never for a record)
    grad_clip_norm: float = setting(0.3, ge=0)  # global gradient norm clip; 0 = off
    ema_decay: float = setting(0.9965, ge=0, lt=1)  # 0 = off (1 would export the untrained weights); with
    # SCHEDULE_REFERENCE_STEPS its horizon 1/(1-decay) scales with the run
    loop_start_frac: float = setting(0.35, ge=0, le=1, public="ENABLE_LOOPING_AT")  # recurrence switches on at this
    # fraction of the budget
    loop_ramp_frac: float = setting(0.0, ge=0, le=1)  # > 0: the repeated passes fade in over this fraction of it (0 =
    # at once, the record)
    schedule_reference_steps: int = setting(0, ge=0)  # > 0 (not the record's): step counts (EMA horizon, momentum
    # warm-up) hold at this many steps and scale with the run's expected steps (from ITERATIONS, or the measured step
    # time); 0 = use them as given, the record's constants (the cpu and tiny presets set 4900, the record's step count)
    muon_momentum_horizon_frac: float = setting(0.0, ge=0, le=1)  # with SCHEDULE_REFERENCE_STEPS: Muon momentum's
    # averaging horizon 1/(1 - momentum) is capped at this fraction of the expected steps (the record's 0.97, 33 steps,
    # holds from 667 steps on; ~0.85 at 130 steps); 0 = no cap (the record)
    # -- model (every field of ModelConfig, set by its upper-case name: NUM_LAYERS, MODEL_DIM, ...)
    model: ModelConfig = field(default_factory=ModelConfig)
    ortho_init: int = 1  # Q, K, V and MLP-input matrices start orthogonal (gain 1), as the record's do
    # -- optimisers
    optimizer: str = setting("muon", choices=("muon", "adamw"))  # adamw: the matrices too, at ADAMW_MATRIX_LR
    matrix_lr: float = setting(0.026, ge=0, le=10.0)  # Muon, attention and MLP matrices
    adamw_matrix_lr: float = setting(0.003, ge=0, le=10.0)
    tied_embed_lr: float = setting(0.03, ge=0, le=10.0)
    embed_lr: float = setting(0.6, ge=0, le=10.0)  # untied input embedding
    head_lr: float = setting(0.008, ge=0, le=10.0)  # untied output head
    scalar_lr: float = setting(0.02, ge=0, le=10.0)  # control tensors (gains, gates, mixes)
    beta1: float = setting(0.9, ge=0, lt=1)
    beta2: float = setting(0.99, ge=0, lt=1)
    adam_eps: float = setting(1e-8, ge=0)
    adam_wd: float = setting(0.02, ge=0)  # decoupled weight decay of the Adam groups but the embedding
    embed_wd: float = setting(0.085, ge=0)  # ... and of the embedding
    muon_momentum: float = setting(0.97, ge=0, lt=1)
    muon_momentum_warmup_start: float = setting(0.92, ge=0, lt=1)
    muon_momentum_warmup_steps: int = setting(1500, ge=0)  # scales with the run under SCHEDULE_REFERENCE_STEPS
    muon_nesterov: int = 1
    muon_backend_steps: int = setting(5, gt=0)  # Newton-Schulz iterations
    muon_polar_express: int = 1  # per-step Polar Express coefficients instead of the classic quintic
    muon_eq_r: int = setting(1, public="MUON_ROW_NORMALIZE")  # MuonEq-R: normalise rows before orthogonalising
    muon_wd: float = setting(0.095, ge=0)  # decoupled weight decay of Muon matrices
    # -- evaluation
    eval_seq_len: int = setting(0, ge=0, le=1 << 20)  # 0 = TRAIN_SEQ_LEN
    eval_stride: int = setting(64, ge=0)  # sliding-window stride; 0 = skip the sliding score
    eval_batch_seqs: int = setting(32, gt=0)  # windows per forward
    include_tail: int = 0  # 1 = also score the val tail the official loader drops
    caseops: int = setting(0, public="CASEOPS_ENABLED")  # val is CaseOps text (data/export.py --caseops): bytes
    # from its fineweb_val_bytes_* sidecars
    ttt_mode: str = setting("phased", choices=("off", "sgd", "lora", "phased"))  # off | sgd (score-first,
    # full-parameter) | lora (per-document adapters) | phased (lora, and in phases the model itself trains on the
    # documents scored so far: the record's)
    ttt_order: str = setting("length", choices=("length", "stream"))  # lora, phased: length (the record's: documents
    # sorted by length, the batch holding the longest first; a phase then trains on documents that come later in the
    # stream than some it precedes, so a score may depend on later tokens, as in the record: score-first holds, rule 1
    # only in stream order) | stream (batches of consecutive documents: no score depends on a later token)
    ttt_chunk_tokens: int = setting(32_768, gt=0, public="GLOBAL_TTT_CHUNK_TOKENS")  # sgd, phased: targets per chunk
    # (cosine LR over chunks)
    ttt_lr: float = setting(0.003, ge=0, le=10.0)  # sgd
    ttt_epochs: int = setting(3, ge=0, le=100)  # sgd
    ttt_momentum: float = setting(0.9, ge=0, le=1, public="GLOBAL_TTT_MOMENTUM")
    ttt_grad_clip: float = setting(1.0, ge=0, public="GLOBAL_TTT_GRAD_CLIP")
    ttt_lora_rank: int = setting(80, gt=0)
    ttt_lora_alpha: float = setting(144.0, ge=0)  # adapter outputs scaled by alpha / rank
    ttt_lora_lr: float = setting(1e-4, ge=0, le=10.0)
    ttt_lora_wd: float = setting(0.5, ge=0, public="TTT_WEIGHT_DECAY")  # the adapters' AdamW (betas 0, 0.99) decay
    ttt_lora_warm_a: int = setting(1, public="TTT_WARM_START_A")  # A carries over from one batch of documents to the
    # next (of its chain); 0 = fresh A
    ttt_lora_chains: int = setting(8, gt=0)  # ... along this many chains of batches, as along each of the record's 8
    # GPUs: batches go to chains as a shared queue hands them to that many workers, chains to ranks; the score depends
    # on this, never on the number of GPUs (1 = the record run on one GPU)
    ttt_lora_chunk: int = setting(48, gt=0, public="TTT_CHUNK_SIZE")  # targets each LoRA step scores, then trains on
    ttt_lora_docs: int = setting(64, gt=0, public="TTT_BATCH_SIZE")  # documents adapted side by side
    ttt_phases: int = setting(3, ge=0, le=100, public="PHASED_TTT_NUM_PHASES")  # phased: times the model trains on the
    # documents scored so far ...
    ttt_phase_docs: int = setting(2500, ge=0, public="PHASED_TTT_PREFIX_DOCS")  # ... at equal steps up to this many
    ttt_phase_lr: float = setting(0.001, ge=0, le=10.0, public="GLOBAL_TTT_LR")  # ... with SGD (TTT_MOMENTUM,
    # TTT_GRAD_CLIP) at this LR, cosine over chunks
    ttt_phase_epochs: int = setting(1, ge=0, le=100, public="GLOBAL_TTT_EPOCHS")
    # -- quantisation and artifact
    quant_matrix_bits: int = setting(6, ge=2, le=8, public="MATRIX_BITS")
    quant_embed_bits: int = setting(7, ge=2, le=8, public="EMBED_BITS")
    clip_k_attn: float = setting(13.0, gt=0, public="ATTN_CLIP_SIGMAS")  # SDClip: rows clipped at k standard deviations
    clip_k_mlp: float = setting(11.5, gt=0, public="MLP_CLIP_SIGMAS")
    clip_k_embed: float = setting(14.0, gt=0, public="EMBED_CLIP_SIGMAS")
    quant_scale_bits: int = setting(0, ge=0, le=10)  # 0 = fp16 row scales (the record's); else rounded to N bits
    control_bits: int = setting(16, choices=(16, 32))  # control tensors (gains, gates, mixes): fp16 or fp32
    quant_clip: str = setting("sdclip", choices=("sdclip", "percentile"))  # sdclip (CLIP_K_*) | percentile: the
    # official baseline's int8 rule (see PERCENTILE_*)
    gptq: int = 1
    gptq_calib_batches: int = setting(32, ge=0, public="GPTQ_CALIBRATION_BATCHES")
    gptq_block: int = setting(128, gt=0)
    gptq_damp: float = setting(0.01, ge=0)
    gptq_reserve_seconds: float = setting(8.0, ge=0)  # taken off the training budget for calibration
    lqer_rank: int = setting(4, ge=0)  # low-rank correction (A int2, B int4) of the worst quantisation errors; 0 = off
    lqer_top: int = setting(3, public="LQER_TOP_K")  # ... of this many matrices
    compressor: str = setting("zstd", choices=("zstd", "lzma", "zlib"))
    compress_level: int = setting(22, ge=0, le=22)  # zstd uses it as is; lzma and zlib at most 9
    code_policy: str = setting("packed", choices=("raw", "packed"))  # the code bytes counted (packed: lzma + base85)
    overwrite: int = 0  # 1 = an existing artifact at ARTIFACT_PATH (and its checkpoint) may be replaced
    target_bytes: int = setting(BYTE_LIMIT, ge=0)  # code + model bytes to land just under by scaling every clip k;
    # 0 = k as set
    # -- runtime
    device: str = setting("auto", choices=("auto", "cuda", "cpu"))
    compile: int = -1  # -1 = on for CUDA, off for CPU
    autocast_bf16: int = -1  # -1 = on for CUDA, off for CPU
    attn_backend: str = setting("auto", choices=("auto", "sdpa", "fa3", "torch", "reference"))  # document-isolated
    # attention's kernel: auto (fa3, else torch, on a CUDA GPU; sdpa on CPU) | sdpa (a dense mask) | fa3
    # (flash_attn_interface's varlen kernel, the record's) | torch (torch's own varlen kernel) | reference (the varlen
    # path as a loop over documents, for tests); chosen at start-up and logged
    varlen_segment_tokens: int = setting(128, gt=0)  # the varlen offsets hold B * (1 + (T-1)/this) documents per batch
    # of B rows of T tokens (a fixed size: compiled graphs never recompile); a batch of shorter documents stops the run
    dist_timeout_seconds: float = setting(1800.0, gt=0)  # how long a collective waits for the slowest rank, then fails
    memory_check: int = 1  # refuse, before any GPU time, a config a phase of which is estimated not to fit the GPU;
    # 0 = only log the estimate

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Hyperparameters:
        """PRESET's values, overridden by every upper-case field name set in the environment."""
        env = dict(os.environ if env is None else env)
        preset = env.get("PRESET", "frontier")
        if preset not in PRESETS:
            raise UserError(f"PRESET={preset!r} is unknown; choose one of {', '.join(PRESETS)}")
        env = {**dict(kv.split("=", 1) for kv in PRESETS[preset].split()), **public_names(env)}
        values: dict[str, object] = {"preset": preset}
        for f, _ in setting_fields():
            name = f.name.upper()
            if name in env and f.name != "preset":
                try:
                    raw = BOOLEANS.get(env[name].strip().lower(), env[name].strip()) if f.type == "int" else env[name]
                    values[f.name] = {"int": int, "float": float, "str": str}[f.type](raw.strip())
                except ValueError:
                    raise UserError(f"{name}={env[name]!r} is not a valid {f.type}") from None
        return cls.make(**values)

    @classmethod
    def make(cls, **values: object) -> Hyperparameters:
        """Settings from flat field values (model fields included), checked; RUN_ID defaults to a fresh one."""
        if not values.get("run_id"):
            values["run_id"] = time.strftime("%Y%m%d_%H%M%S_") + uuid.uuid4().hex[:6]
        layers = int(values.get("num_layers", ModelConfig.num_layers))
        for name, at in LAYER_POSITIONS.items():  # unset: the record's positions in 11 layers, scaled
            if name not in values:
                values[name] = round(at * layers / 11) if round(at * layers / 11) < layers else -1
        if values["loop_end"] < 0:
            values["loop_end"] += layers
        model_keys = {f.name for f in fields(ModelConfig)}
        model = ModelConfig(**{k: v for k, v in values.items() if k in model_keys})
        h = cls(model=model, **{k: v for k, v in values.items() if k not in model_keys})
        h.validate()
        return h

    def flat(self) -> dict[str, object]:
        """Every setting by its field name, the model's included (the log's config block and the run summary)."""
        return {f.name: getattr(self.model if owner is ModelConfig else self, f.name) for f, owner in setting_fields()}

    def validate(self) -> None:
        h, m, flat = self, self.model, self.flat()

        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise UserError(f"{name.upper()}={flat[name]!r}: {why}")

        check_ranges(flat, need)
        m.check(need)
        need(m.attn not in WINDOWED or 0 < m.attn_window <= h.train_seq_len, "attn_window",
             f"must be in [1, TRAIN_SEQ_LEN={h.train_seq_len}] for ATTN={m.attn}")  # fmt: skip
        need(h.quant_clip == "sdclip" or not h.target_bytes, "target_bytes", "cannot steer QUANT_CLIP=percentile "
             "(its clip is fixed, not a k to scale): set TARGET_BYTES=0 and check the size line")  # fmt: skip
        need(not (h.stop_after or h.resume_from) or h.max_wallclock_seconds == 0, "stop_after" if h.stop_after else
             "resume_from", "splits a non-record run: set MAX_WALLCLOCK_SECONDS=0 (a wallclock-bounded run cannot be "
             "split; run it whole)")  # fmt: skip
        need(not h.resume_from or Path(h.resume_from).is_file(), "resume_from", "no such file")
        window = f"is longer than the window EVAL_SEQ_LEN={h.effective_eval_seq_len}"
        need(h.eval_stride <= h.effective_eval_seq_len, "eval_stride", f"{window}: targets would go unscored")
        need(h.ttt_mode in ("off", "sgd") or h.ttt_lora_chunk <= h.effective_eval_seq_len, "ttt_lora_chunk", window)
        need(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", h.run_id) is not None, "run_id", "must be a plain name "
             "(letters, digits, '.', '_', '-'): it names files under LOG_DIR and artifacts/")  # fmt: skip
        need(not h.stop_after or h.stop_after < h.iterations, "stop_after", f"cannot happen: the run ends at "
             f"ITERATIONS={h.iterations} first; set it below ITERATIONS or unset it")  # fmt: skip
        if h.ttt_mode == "phased":
            for name in ("ttt_phases", "ttt_phase_docs"):
                need(getattr(h, name) > 0, name, "must be positive for TTT_MODE=phased (0 runs no phase: that is "
                     "TTT_MODE=lora)")  # fmt: skip
            need(h.ttt_phases <= h.ttt_phase_docs, "ttt_phases", f"more phases than TTT_PHASE_DOCS={h.ttt_phase_docs} "
                 "documents cannot take effect (a phase needs at least one new document)")  # fmt: skip
        # packing takes a second, so only a target that could be under the code (the raw source, or the packed form
        # at most: base85 is 5/4 of lzma's output) pays for it
        if h.target_bytes and h.target_bytes < 5 * len(Path(__file__).read_bytes()) // 4 + 4096:
            code = size_report(0, Path(__file__).read_text(encoding="utf-8"), h.code_policy)["code_bytes"]
            need(h.target_bytes > code, "target_bytes", f"leaves no bytes for the model: the code alone is {code:,} "
                 f"bytes (CODE_POLICY={h.code_policy}); raise it, or 0 to keep the clip k as set")  # fmt: skip

    @property
    def effective_eval_seq_len(self) -> int:
        return self.eval_seq_len or self.train_seq_len


def number(v: float) -> str:
    """A bound as a message shows it: 65,536; 10.0; 2^32 for the powers of two above 2^16."""
    if isinstance(v, int) and v > 1 << 16 and v & (v - 1) == 0:
        return f"2^{v.bit_length() - 1}"
    return f"{v:,}"


def allowed(bounds: dict) -> str:
    """A setting's declared values (field metadata from setting()) in words: 'positive', 'in [0, 1)', 'one of a, b'."""
    if bounds.get("choices"):
        return f"one of {', '.join(map(str, bounds['choices']))}"
    lo, hi = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    if lo is not None and hi is not None:
        return f"in {'[' if 'ge' in bounds else '('}{number(lo)}, {number(hi)}{']' if 'le' in bounds else ')'}"
    if lo is not None:
        return "positive" if bounds.get("gt") == 0 else f"{'>=' if 'ge' in bounds else '>'} {number(lo)}"
    return "" if hi is None else f"{'at most' if 'le' in bounds else 'below'} {number(hi)}"


def range_error(value: object, bounds: dict) -> str | None:
    """Why value falls outside a setting's declared values, or None."""
    if isinstance(value, float) and not math.isfinite(value):  # nan fails every bound, inf passes the lower ones
        return "must be a finite number"
    lo, hi = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    ok = (not bounds.get("choices") or value in bounds["choices"]) and (
        (lo is None or value > lo or (value == lo and "ge" in bounds))
        and (hi is None or value < hi or (value == hi and "le" in bounds))
    )
    return None if ok else f"must be {allowed(bounds)}"


def check_ranges(values: dict[str, object], need) -> None:
    """Each value against its setting's declared values, by field name (need(ok, name, why) raises)."""
    for f, _ in setting_fields():
        if f.name in values:
            why = range_error(values[f.name], f.metadata)
            need(why is None, f.name, why or "")


# Settings of the public record scripts that we lack: refused by name when on (never silently ignored).
PUBLIC_UNSUPPORTED = set(
    "ARTIFACT_DIR ATTN_OUT_GATE_ENABLED ATTN_OUT_GATE_SRC DATA_DIR FUSED_CE_ENABLED GATED_ATTN_ENABLED "
    "GATED_ATTN_INIT_STD GATED_ATTN_QUANT_GATE GLOBAL_TTT_BATCH_SEQS GLOBAL_TTT_RESPECT_DOC_BOUNDARIES "
    "GLOBAL_TTT_WARMUP_CHUNKS GLOBAL_TTT_WARMUP_START_LR LQER_ASYM_ENABLED LQER_ASYM_GROUP LQER_ENABLED "
    "LQER_FACTOR_BITS MATRIX_CLIP_SIGMAS PARALLEL_FINAL_LANE PREQUANT_ONLY ROPE_TRAIN_SEQ_LEN ROPE_YARN "
    "SPARSE_ATTN_GATE_INIT_STD TTT_BETA1 TTT_BETA2 TTT_EVAL_BATCHES TTT_EVAL_ONLY TTT_EVAL_SEQ_LEN TTT_GRAD_STEPS "
    "TTT_K_LORA TTT_MLP_LORA TTT_OPTIMIZER TTT_O_LORA VAL_DOC_FRACTION XSA_LAST_N".split()
)
BOOLEANS = {"true": "1", "false": "0"}
NOT_SETTINGS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def public_names(env: dict[str, str]) -> dict[str, str]:
    """The environment with the public scripts' names mapped to ours; a public setting we lack (unless it is set
    to off) or a name close to one of ours is refused in one line, so a typo never runs the defaults silently."""
    ours = {f.name.upper() for f, _ in setting_fields()} | {"PRESET"}
    renames = {f.metadata["public"]: f.name.upper() for f, _ in setting_fields() if f.metadata.get("public")}
    out = dict(env)
    for name, value in env.items():
        if name in ours or not name.isupper() or name in NOT_SETTINGS:
            continue
        if name in renames:
            ours_name = renames[name]
            if ours_name in env and env[ours_name].strip() != value.strip():
                raise UserError(f"{name}={value} and {ours_name}={env[ours_name]} name the same setting; set one")
            out[ours_name] = value
        elif name in ("VAL_BATCH_SIZE", "VAL_BATCH_TOKENS"):  # tokens per val step over 8 micro-batches: speed only
            seq = next(
                (env[k].strip() for k in ("EVAL_SEQ_LEN", "TRAIN_SEQ_LEN") if env.get(k, "0").strip() != "0"), ""
            )
            if not value.strip().isdigit() or not int(value) or not (seq or "1024").isdigit():
                raise UserError(f"{name}={value}: expected a whole number of tokens, above 0")
            out.setdefault("EVAL_BATCH_SEQS", str(max(1, int(value) // (8 * int(seq or "1024")))))
        elif name in ("TTT_ENABLED", "PHASED_TTT_ENABLED"):  # the record's switch for its phased TTT
            if BOOLEANS.get(value.strip().lower(), value.strip()) not in ("0", ""):
                out.setdefault("TTT_MODE", "phased")
        elif name in PUBLIC_UNSUPPORTED and BOOLEANS.get(value.strip().lower(), value.strip()) not in ("0", ""):
            raise UserError(
                f"{name}={value}: a setting of the public record scripts that this train_gpt.py does not "
                "implement; unset it (python train_gpt.py --help lists ours)"
            )
        elif close := difflib.get_close_matches(name, ours, n=1, cutoff=0.85):
            raise UserError(f"{name}={value}: no such setting; did you mean {close[0]}?")
    return out


def setting_fields() -> list[tuple[dataclasses.Field, type]]:
    """(field, owning class) of every setting, in declaration order, ModelConfig's in place of `model`."""
    out = []
    for f in fields(Hyperparameters):
        out += [(g, ModelConfig) for g in fields(ModelConfig)] if f.name == "model" else [(f, Hyperparameters)]
    return out


def settings_help() -> str:
    """--help: every setting with its default, the values it may take and the comment beside it here, by section."""
    src = Path(__file__).read_text(encoding="utf-8")
    defaults, out = Hyperparameters().flat(), [__doc__.split("\n\n")[0]]
    rules = {f.name: allowed(f.metadata) for f, _ in setting_fields()}

    def row(name: str, note: str = "") -> str:
        return f"  {name.upper():<27} {defaults[name]!r:<14} {'; '.join(filter(None, (rules[name], note)))}"

    if "class ModelConfig:" not in src:  # the packed form has no comments to show
        return "\n".join(out + [row(n) for n in defaults if n != "preset"])

    def lines_of(cls: type) -> list[str]:
        start = src.index(f"class {cls.__name__}:")
        return src[start : src.index("    @classmethod", start)].splitlines()

    for outer in lines_of(Hyperparameters):
        for line in lines_of(ModelConfig)[1:] if outer.startswith("    model: ") else [outer]:
            if line.startswith("    # -- "):  # a section
                out.append(f"\n[{line.removeprefix('    # -- ')}]")
            elif line.startswith("    # "):  # the comment of the setting above, continued
                out[-1] += " " + line.removeprefix("    # ")
            elif (m := re.match(r"    (\w+): [^=]+ = .*?(?:  # (.*))?$", line)) and m[1] != "preset":
                out.append(row(m[1], m[2] or ""))
    out.append(f"\nPRESET picks the base these override: {', '.join(PRESETS)}. The log lists the resolved config.")
    return "\n".join(s.rstrip() for s in out)


def artifact_path_of(h: Hyperparameters) -> str:
    """Where the run writes its artifact: ARTIFACT_PATH, else artifacts/<run_id>.pgz."""
    return h.artifact_path or os.path.join("artifacts", f"{h.run_id}.pgz")


# =====================================================================================================================
# 2. RUNTIME: distributed setup, logging, the agreed clock, precision and compile switches, atomic writes
# =====================================================================================================================


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    solo_group: object = None  # gloo: where the others wait for rank 0's solo work (wait_for_main)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SOLO_WAIT_TIMEOUT_S = 24 * 3600.0  # the other ranks' wait for rank 0's solo work (export): longer than any of it


def init_distributed(device_pref: str = "auto", timeout_s: float = Hyperparameters.dist_timeout_seconds) -> Dist:
    """Ranks from torchrun's environment; NCCL on CUDA, gloo on CPU (none for one rank); collectives wait timeout_s."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("DEVICE=cuda but torch sees no CUDA device (set DEVICE=cpu or auto)")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda else None,
                                timeout=timedelta(seconds=timeout_s))  # fmt: skip
    solo = dist.new_group(backend="gloo", timeout=timedelta(seconds=SOLO_WAIT_TIMEOUT_S)) if world > 1 else None
    return Dist(rank, world, local_rank, device, solo)


def wait_for_main(failed: bool, d: Dist) -> bool:
    """Every rank calls it after rank 0's solo work: whether that work failed (rank 0 says). The others wait on the
    solo group, on the CPU with a day's timeout, out of reach of DIST_TIMEOUT_SECONDS and NCCL's watchdog."""
    flag = torch.tensor([float(failed)])
    if d.enabled and d.solo_group is not None:
        dist.all_reduce(flag, group=d.solo_group)
    elif d.enabled:  # a Dist made by hand around a process group: the default group
        flag = all_reduce_(flag.to(d.device)).cpu()
    return bool(flag.item())


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
        if console and self.enabled:  # a disabled logger has no file either
            print(msg, flush=True)
        if self.file:
            self.file.write(msg + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


def open_log(h: Hyperparameters, d: Dist) -> Logger:
    if d.enabled:
        dist.barrier()  # no rank creates the log before every rank has checked it is new
    return Logger(os.path.join(h.log_dir, f"{h.run_id}.txt"), enabled=d.is_main)


def sigterm_handler(signum, frame):
    """main's SIGTERM handler: a terminated run unwinds as Ctrl-C does (outputs closed, the partial state kept)."""
    raise KeyboardInterrupt(f"signal {signum}")


def synced_clock(d: Dist) -> float:
    """Seconds, after the device has finished its queued work (a host sync on CUDA)."""
    if d.device.type == "cuda":
        torch.cuda.synchronize(d.device)
    return time.perf_counter()


@dataclass
class RunClock:
    """The training clock every rank agrees on (refreshed on check steps) and what follows from it each step without
    a host sync: elapsed time, progress through the budget (time, or ITERATIONS) and the expected number of steps."""

    h: Hyperparameters
    budget_ms: float  # 0 = bounded by ITERATIONS alone
    agreed_ms: float = 0.0
    agreed_step: int = 0
    step_ms: float = 0.0

    def elapsed(self, step: int) -> float:
        return self.agreed_ms + (step - self.agreed_step) * self.step_ms

    def progress(self, step: int) -> float:
        return self.elapsed(step) / self.budget_ms if self.budget_ms else step / self.h.iterations

    def expected_steps(self) -> float:
        if not self.budget_ms or not self.step_ms:
            return float(self.h.iterations)
        return min(float(self.h.iterations), self.agreed_step + (self.budget_ms - self.agreed_ms) / self.step_ms)


def agree_clock(clock: RunClock, step: int, local_ms: float, bad_step: torch.Tensor, d: Dist) -> None:
    """Every rank takes the slowest rank's time (one all-reduce); a non-finite loss on any rank stops the run."""
    now = torch.tensor([local_ms, float(bad_step.item())], dtype=torch.float64)
    now = all_reduce_(now.to(d.device), "max").cpu()
    clock.step_ms = (now[0].item() - clock.agreed_ms) / (step - clock.agreed_step)
    clock.agreed_ms, clock.agreed_step = now[0].item(), step
    if now[1] >= 0:
        raise NonFiniteLoss(
            f"training loss became non-finite at step {int(now[1])}; lower MATRIX_LR / SCALAR_LR or check the data"
        )


def use_bf16(h: Hyperparameters, device: torch.device) -> bool:
    return device.type == "cuda" if h.autocast_bf16 < 0 else bool(h.autocast_bf16)


def amp_context(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA (or when forced); a no-op context in float32 otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def compile_enabled(h: Hyperparameters, d: Dist) -> bool:
    return d.device.type == "cuda" if h.compile < 0 else bool(h.compile)


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
    except OSError as e:  # a read-only folder, a full disk: the user's to fix, and nothing half-written is left
        raise UserError(f"{path}: cannot write it ({e.strerror or e}); nothing was left under that name") from None
    finally:
        if tmp.exists():
            tmp.unlink()


# =====================================================================================================================
# 3. DATA: the official shard format (SPEC section 2) and the training / validation token streams
# =====================================================================================================================

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4
SHARD_TOKEN_DTYPE = np.dtype("<u2")
BOS_ID = 1
TRAIN_GLOB = "fineweb_train_*.bin"  # a dataset folder's shards, train and val
VAL_GLOB = "fineweb_val_*.bin"
VAL_BYTES_MARK = "_val_bytes_"  # CaseOps val byte sidecars: fineweb_val_bytes_000000.bin beside fineweb_val_000000.bin


class ShardError(UserError):
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
        raise ShardError(
            f"{path}: file is {size} bytes but the header says {n} tokens, "
            f"which needs {SHARD_HEADER_BYTES + 2 * n} bytes (truncated or corrupt)"
        )
    return n


def load_shard(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a shard's tokens (uint16, read-only, no copy) after validating it (and its ids, given a vocab)."""
    n = read_shard_header(path)
    if n == 0:
        return np.zeros(0, dtype=SHARD_TOKEN_DTYPE)
    tokens = np.memmap(path, dtype=SHARD_TOKEN_DTYPE, mode="r", offset=SHARD_HEADER_BYTES, shape=(n,))
    if vocab_size is not None and int(tokens.max()) >= vocab_size:
        bad = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"{path}: token id {int(tokens[bad])} at position {bad} is >= vocab size {vocab_size}")
    return tokens


def list_shards(pattern: str) -> list[Path]:
    """Sorted shards matching `pattern`; CaseOps byte sidecars (fineweb_val_* matches them) only if it names them."""
    sidecars = VAL_BYTES_MARK in Path(pattern).name
    files = sorted(Path(p) for p in glob.glob(pattern) if sidecars or VAL_BYTES_MARK not in Path(p).name)
    if not files:
        raise ShardError(f"no shard files match {pattern!r}")
    return files


def load_token_split(pattern: str, vocab_size: int | None = None) -> np.ndarray:
    """Concatenate every shard matching `pattern` (the val split) into one uint16 array, checking token ids."""
    parts = [load_shard(p) for p in list_shards(pattern)]
    tokens = np.concatenate(parts) if len(parts) > 1 else np.array(parts[0])
    if vocab_size is not None and tokens.size and int(tokens.max()) >= vocab_size:
        bad = int(np.argmax(tokens >= vocab_size))
        raise ShardError(f"{pattern}: token id {int(tokens[bad])} at position {bad} is >= vocab size {vocab_size}")
    return tokens


class DistributedTokenLoader:
    """Reads the training shards in order, wrapping around. Each step every rank reads the same global span and keeps
    its own slice, so the global batch is identical for any world size and accumulation split. Every shard's header
    is checked on construction, its token ids when first read; the state is two ints: a warm-up rolls back exactly."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device, vocab_size: int | None = None):
        self.files, self.vocab_size = list_shards(pattern), vocab_size
        self.rank, self.world_size, self.device = rank, world_size, device
        if sum(read_shard_header(f) for f in self.files) == 0:
            raise ShardError(f"{pattern}: the {len(self.files)} train shard(s) hold no tokens")
        self.file_idx, self.pos = 0, 0
        self.tokens = load_shard(self.files[0], vocab_size)

    def state_dict(self) -> dict[str, int]:
        return {"file_idx": self.file_idx, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["file_idx"] != self.file_idx:
            self.tokens = load_shard(self.files[state["file_idx"]], self.vocab_size)
        self.file_idx, self.pos = state["file_idx"], state["pos"]

    def take(self, n: int, overlap: int = 0) -> np.ndarray:
        """Return the next n tokens; the last `overlap` of them are read again by the next call (y's last target
        is x's next input, so consecutive steps tile the stream exactly)."""
        out, need = [], n
        while need > 0:
            if self.pos >= len(self.tokens):
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_shard(self.files[self.file_idx], self.vocab_size), 0
                continue
            chunk = self.tokens[self.pos : self.pos + need]
            out.append(chunk)
            self.pos += len(chunk)
            need -= len(chunk)
        self.pos -= overlap  # the last chunk holds >= 1 token of the current file, so this stays in it
        return np.concatenate(out) if len(out) > 1 else np.array(out[0])

    def next_batch(self, global_tokens: int, seq_len: int, accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y) of shape (B, seq_len) for one micro-step of this rank."""
        local = global_tokens // (self.world_size * accum_steps)
        span = self.take(local * self.world_size + 1, overlap=1)
        start = self.rank * local
        chunk = torch.from_numpy(span[start : start + local + 1].astype(np.int64))
        x, y = chunk[:-1].view(-1, seq_len), chunk[1:].view(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def train_loader(h: Hyperparameters, d: Dist) -> DistributedTokenLoader:
    """The run's loader, after every train shard's token ids are checked against the vocab (check_shard_ids)."""
    pattern = os.path.join(h.data_path, TRAIN_GLOB)
    loader = DistributedTokenLoader(pattern, d.rank, d.world_size, d.device, h.model.vocab_size)
    check_shard_ids(loader.files, h.model.vocab_size, d)
    return loader


SHARD_ID_CHECK_TOKENS = 1 << 24  # tokens read at a time by check_shard_ids (32 MiB of uint16)


def check_shard_ids(files: list[Path], vocab_size: int, d: Dist) -> None:
    """Every train shard's token ids checked against the vocab before training, not minutes in: each rank reads its
    share in bounded chunks, and every rank raises the error of the first bad shard."""
    first_bad = len(files)
    for i in range(d.rank, len(files), d.world_size):
        tokens = load_shard(files[i])
        if any(int(tokens[a : a + SHARD_ID_CHECK_TOKENS].max()) >= vocab_size
               for a in range(0, len(tokens), SHARD_ID_CHECK_TOKENS)):  # fmt: skip
            first_bad = i
            break
    first_bad = int(all_reduce_(torch.tensor([first_bad], dtype=torch.int64, device=d.device), "min").item())
    if first_bad < len(files):
        load_shard(files[first_bad], vocab_size)  # raises the ShardError naming the file, the id and its position
        raise ShardError(f"{files[first_bad]}: a token id is >= vocab size {vocab_size}")  # not reached


# =====================================================================================================================
# 4. MODEL: the record's network (GPT -> Block -> Attention / MLP), attention backends, init, parameter roles
# =====================================================================================================================

# Every parameter carries a role that routes it to an optimiser and a quantiser:
#   attn, mlp -> Muon, int6 matrices;  embed, head -> Adam, int7/int8;  control -> Adam, passthrough.
ROLES = ("attn", "mlp", "embed", "head", "control")
CHECKPOINT_FORMAT = "pgolf-float-checkpoint"
CHECKPOINT_VERSION = 1
BIGRAM_HASH_MULT = 1_000_003  # BIGRAM_HASH index: (previous * this + current) mod the table size


def tag(p: nn.Parameter, role: str) -> nn.Parameter:
    assert role in ROLES, role
    p.role = role
    return p


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """Bias-free linear layer with an fp32 master weight cast to the activation dtype (bf16 under autocast)."""

    def __init__(self, in_features: int, out_features: int, role: str, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=False)
        tag(self.weight, role)
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))


def rotate_half_dims(x: torch.Tensor, rope_dims: int, base: float) -> torch.Tensor:
    """Partial RoPE on (B, H, T, D): rotate the first `rope_dims` dims of each head, pass the rest through."""
    T, rope_dims = x.size(-2), rope_dims or x.size(-1)  # 0: the whole head
    half = rope_dims // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, device=x.device, dtype=torch.float32) / half))
    angles = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv_freq)  # (T, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:rope_dims], x[..., rope_dims:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


# Document-isolated attention (DOC_ISOLATION=1) without a dense mask: the batch's rows are flattened into one sequence
# cut at every row start and every BOS (cumulative offsets, cu_seqlens) and a varlen kernel attends causally inside
# each piece (~0.28 of the T x T square on FineWeb at T = 2048; causal is 0.5). SDPA with the dense (B, 1, T, T) mask
# stays the CPU path and the reference every varlen backend is tested against.
VARLEN_ATTNS = ("global", "mla")  # ATTN kinds the varlen path serves (windows and linear attention keep the mask)


class Segments(NamedTuple):
    """What a varlen kernel needs: the offsets (capacity + 1,) int32 (the first `count` + 1 real, the rest B*T), the
    number of real pieces (a device scalar), the longest piece possible (the row length, a constant) and the backend."""

    cu: torch.Tensor
    count: torch.Tensor
    max_len: int
    backend: str


@dataclass
class AttentionChoice:
    """The attention kernel of this process: chosen once at start-up (select_attention), read by GPT.segments."""

    backend: str = "sdpa"  # sdpa | fa3 | torch | reference
    segment_tokens: int = 128
    reason: str = "the default"


ATTENTION = AttentionChoice()


def segment_capacity(rows: int, T: int, segment_tokens: int) -> int:
    """Pieces a batch of `rows` rows of T tokens has room for: each row's start plus one BOS per `segment_tokens`
    tokens after it (documents that short on average never occur in FineWeb, whose median is ~650 tokens)."""
    return min(rows * T, rows * (1 + -(-(T - 1) // segment_tokens)))


def build_cu_seqlens(idx: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets (capacity + 1,) int32, pieces) of (B, T) tokens flattened, a piece from every row start and every BOS;
    padded with empty pieces to shapes fixed by (B, T, capacity), no host sync: a compiled graph never recompiles."""
    T = idx.size(1)
    starts = (idx == BOS_ID) | (torch.arange(T, device=idx.device) == 0)
    cum = starts.reshape(-1).cumsum(0)  # pieces begun up to each token
    want = torch.arange(1, capacity + 2, device=idx.device)  # offset i: where piece i + 1 begins (B*T if none)
    return torch.searchsorted(cum, want, out_int32=True), cum[-1]


def _varlen_fa3(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segments) -> torch.Tensor:
    from flash_attn_interface import flash_attn_varlen_func

    out = flash_attn_varlen_func(q, k, v, cu_seqlens_q=seg.cu, cu_seqlens_k=seg.cu, max_seqlen_q=seg.max_len,
                                 max_seqlen_k=seg.max_len, causal=True)  # fmt: skip
    return out[0] if isinstance(out, tuple) else out  # some releases return (out, lse)


def _varlen_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segments) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, seg.cu, seg.cu, seg.max_len, seg.max_len, window_size=(-1, 0),
                       enable_gqa=q.size(1) != k.size(1))  # fmt: skip


def _varlen_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segments) -> torch.Tensor:
    """The varlen contract in plain PyTorch: causal SDPA on each piece the offsets name, one at a time."""
    bounds, pieces = seg.cu.tolist(), []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))  # (1, heads, length, head_dim)
            y = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=q.size(1) != k.size(1))
            pieces.append(y[0].transpose(0, 1))
    return torch.cat(pieces)


VARLEN_KERNELS = {"fa3": _varlen_fa3, "torch": _varlen_torch, "reference": _varlen_reference}
VARLEN_OFF_CUDA = {"reference"}  # backends that also run on CPU tensors (the others are CUDA kernels)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seg: Segments) -> torch.Tensor:
    """Causal attention inside each piece of `seg`, as SDPA with the document mask: q (B, H, T, hd), k and v
    (B, Hkv, T, hd) -> (B, H, T, hd). The flash kernels take bf16/fp16 only: they compute float32 inputs in bf16."""
    B, H, T, hd = q.shape
    capacity = seg.cu.numel() - 1
    if seg.backend != "reference":  # a device-side check: no host sync, and still no silent merge of documents
        torch._assert_async(seg.count <= capacity, segment_overflow(-1, capacity))
    elif int(seg.count) > capacity:  # eager: a plain error
        raise UserError(segment_overflow(int(seg.count), capacity))
    dtype = q.dtype if q.dtype in (torch.bfloat16, torch.float16) or seg.backend == "reference" else torch.bfloat16
    flat = [t.transpose(1, 2).reshape(B * T, t.size(1), hd).to(dtype) for t in (q, k, v)]  # (B*T, heads, hd)
    y = VARLEN_KERNELS[seg.backend](*flat, seg)
    return y.to(q.dtype).view(B, T, H, hd).transpose(1, 2)


def segment_overflow(count: int, capacity: int) -> str:
    have = f"{count} pieces (row starts and documents), more" if count >= 0 else "more pieces (row starts, documents)"
    return (f"a batch held {have} than the varlen offsets' {capacity} places (documents shorter than "
            f"VARLEN_SEGMENT_TOKENS={ATTENTION.segment_tokens} tokens on average): lower VARLEN_SEGMENT_TOKENS or set "
            "ATTN_BACKEND=sdpa")  # fmt: skip


def varlen_support(device: torch.device) -> dict[str, str | None]:
    """For each varlen backend: None when it runs on `device`, else why it does not."""
    if device.type != "cuda":
        return {"fa3": "needs a CUDA GPU", "torch": "needs a CUDA GPU", "reference": None}
    major, minor = torch.cuda.get_device_capability(device)
    gpu = f"this GPU is sm{major}{minor}"
    try:
        import flash_attn_interface  # noqa: F401

        fa3 = None if major == 9 else f"flash_attn_interface's kernels are Hopper's (sm90), {gpu}"
    except Exception as e:  # not installed, or built for another torch / CUDA
        fa3 = f"flash_attn_interface does not import ({type(e).__name__}: {str(e)[:120]})"
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401

        tv = None if major >= 8 else f"torch's flash kernels need sm80 or newer, {gpu}"
    except ImportError:
        tv = f"torch {torch.__version__} has no torch.nn.attention.varlen"
    return {"fa3": fa3, "torch": tv, "reference": None}


def select_attention(h: Hyperparameters, d: Dist, support: dict[str, str | None] | None = None) -> AttentionChoice:
    """The attention kernel of the run, from ATTN_BACKEND (one named that cannot run here is refused). auto, for
    document isolation on a CUDA GPU under bf16: FA3's varlen kernel (Hopper, the record's), else torch's, else SDPA."""
    m, want, tokens = h.model, h.attn_backend, h.varlen_segment_tokens
    support = varlen_support(d.device) if support is None else support
    if want == "sdpa":
        return AttentionChoice("sdpa", tokens, "ATTN_BACKEND=sdpa")
    if not (m.doc_isolation and m.attn in VARLEN_ATTNS):  # not served by a varlen kernel
        if want != "auto":
            here = f"here DOC_ISOLATION={m.doc_isolation}, ATTN={m.attn}"
            raise UserError(f"ATTN_BACKEND={want}: the varlen kernels serve DOC_ISOLATION=1 with ATTN=global or mla "
                            f"({here}); use ATTN_BACKEND=auto or sdpa")  # fmt: skip
        why = "no DOC_ISOLATION: causal SDPA" if not m.doc_isolation else f"ATTN={m.attn}: SDPA with its mask"
        return AttentionChoice("sdpa", tokens, why)
    if want != "auto":
        if support[want] is not None:
            raise UserError(f"ATTN_BACKEND={want}: {support[want]}; ATTN_BACKEND=auto picks what runs here")
        return AttentionChoice(want, tokens, f"ATTN_BACKEND={want}")
    if d.device.type != "cuda":
        return AttentionChoice("sdpa", tokens, "CPU: SDPA with the dense document mask")
    if not use_bf16(h, d.device):
        return AttentionChoice("sdpa", tokens, "AUTOCAST_BF16=0: the flash kernels compute in bf16 only")
    for name, what in (("fa3", "FA3 varlen (flash_attn_interface)"), ("torch", "torch.nn.attention.varlen")):
        if support[name] is None:
            return AttentionChoice(name, tokens, f"auto: {what}")
    why = f"auto: no varlen kernel (fa3: {support['fa3']}; torch: {support['torch']})"
    return AttentionChoice("sdpa", tokens, f"{why}: SDPA with the dense document mask, several times the work")


def use_attention(choice: AttentionChoice) -> None:
    """Make `choice` this process's attention (every GPT reads ATTENTION when it builds its masks)."""
    ATTENTION.backend, ATTENTION.segment_tokens, ATTENTION.reason = choice.backend, choice.segment_tokens, choice.reason


class Attention(nn.Module):
    """Causal GQA with QK-norm, per-head QK gain, partial RoPE, optional XSA and a sigmoid output gate per head."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        dim, self.num_heads, self.num_kv_heads = c.model_dim, c.num_heads, c.num_kv_heads
        self.head_dim = dim // c.num_heads
        self.rope_dims, self.rope_base, self.xsa, self.gate_inputs = c.rope_dims, c.rope_base, c.xsa, c.gate_inputs
        kv_dim = c.num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, "attn")
        self.mla, self.linear = c.attn == "mla", c.attn == "linear"
        if self.mla:  # K and V from a latent of rank r; the rotated key dims from x directly, shared by the heads
            rank = c.mla_rank or dim // 4
            self.c_kv = CastedLinear(dim, rank, "attn")
            self.c_kr = CastedLinear(dim, c.rope_dims, "attn")
            self.c_k = CastedLinear(rank, c.num_kv_heads * (self.head_dim - c.rope_dims), "attn")
        else:
            self.c_k = CastedLinear(dim, kv_dim, "attn")
        self.c_v = CastedLinear(rank if self.mla else dim, kv_dim, "attn")
        self.proj = CastedLinear(dim, dim, "attn", zero_init=True)
        self.q_gain = tag(nn.Parameter(torch.full((c.num_heads,), float(c.qk_gain_init))), "control")
        self.gate = CastedLinear(c.gate_inputs, c.num_heads, "control", zero_init=True) if c.attn_out_gate else None
        self.gate_scale = c.attn_gate_scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        q = self.c_q(x).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, hd)
        if self.mla:
            k, v = mla_keys_values(self, x)
        else:  # (B, Hkv, T, hd) each
            k, v = (linear(x).view(B, T, Hkv, hd).transpose(1, 2) for linear in (self.c_k, self.c_v))
        q = rotate_half_dims(rms_norm(q), self.rope_dims, self.rope_base)
        k = rotate_half_dims(rms_norm(k), self.rope_dims, self.rope_base)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        if self.linear:
            y = linear_attention(q, k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1), mask)
        elif isinstance(mask, Segments):  # document isolation through a varlen kernel (GPT.attention_masks)
            y = varlen_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, mask, is_causal=mask is None, enable_gqa=H != Hkv)  # (B,H,T,hd)
        if self.xsa:  # remove each head's component along its own token's (normalised) value vector
            vn = (rms_norm(v) * hd**-0.5).repeat_interleave(H // Hkv, dim=1)  # unit rows; rms_norm keeps bf16
            y = y - (y * vn).sum(-1, keepdim=True) * vn
        y = y.transpose(1, 2)  # (B, T, H, hd)
        if self.gate is not None:  # the record's sparse gate: sigmoid(scale * w . x[:k]) per head, 0.5 at init
            y = y * torch.sigmoid(self.gate_scale * self.gate(x[..., : self.gate_inputs])).unsqueeze(-1)
        return self.proj(y.reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        hidden, self.glu = int(c.mlp_mult * c.model_dim), c.mlp_act == "swiglu"
        self.fc = CastedLinear(c.model_dim, hidden * (2 if self.glu else 1), "mlp")  # swiglu: [Wa; Wb]
        self.proj = CastedLinear(hidden, c.model_dim, "mlp", zero_init=True)
        self.slope = c.leaky_slope if c.mlp_act == "leaky_relu2" else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.glu:
            a, b = self.fc(x).chunk(2, dim=-1)
            return self.proj(F.silu(a) * b)
        return self.proj(F.leaky_relu(self.fc(x), self.slope).square())


class Block(nn.Module):
    """Pre-norm block over a tuple of residual lanes. Sequential (one lane; two are averaged first): x += a*attn(n(x));
    x += m*mlp(n(x)). Parallel (two lanes, the record's blocks from PARALLEL_START): attention reads lane 0 and the MLP
    lane 1, both outputs go to both lanes through learned 2x2 post-lambdas, each lane scaled by its residual lambda
    (init 1.1). x0 mixing blends attention's input with the normalised embedding; LN scale: norms x 1/sqrt(index+1)."""

    def __init__(self, index: int, c: ModelConfig):
        super().__init__()
        dim = c.model_dim
        self.attn, self.mlp, self.parallel = Attention(c), MLP(c), 0 <= c.parallel_start <= index
        self.norm_scale = 1.0 / math.sqrt(index + 1) if c.ln_scale else 1.0
        self.local = c.attn in ("local", "sparse") or c.attn == "alternating" and (c.num_layers - 1 - index) % 2 == 1
        self.attn_scale = tag(nn.Parameter(torch.ones(dim)), "control")
        self.mlp_scale = tag(nn.Parameter(torch.ones(dim)), "control")
        mix = torch.stack((torch.ones(dim), torch.zeros(dim)))  # (2, dim): weights of x and of x0
        self.resid_mix = tag(nn.Parameter(mix), "control") if c.x0_mix else None
        if self.parallel:
            self.resid_lambdas = tag(nn.Parameter(torch.full((2,), 1.1)), "control")  # lane 0, lane 1
            self.post_lambdas = tag(nn.Parameter(torch.ones(2, 2)), "control")  # [attn, mlp] output -> [lane 0, 1]

    def mix(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return x if self.resid_mix is None else self.resid_mix[0] * x + self.resid_mix[1] * x0

    def forward(self, lanes: tuple[torch.Tensor, ...], x0: torch.Tensor, mask: torch.Tensor | None = None):
        s = self.norm_scale
        if not self.parallel:
            x = self.mix(lanes[0] if len(lanes) == 1 else 0.5 * (lanes[0] + lanes[1]), x0)
            x = x + self.attn_scale * self.attn(rms_norm(x) * s, mask)
            return (x + self.mlp_scale * self.mlp(rms_norm(x) * s),)
        a_lane, m_lane = lanes if len(lanes) == 2 else (lanes[0], lanes[0])
        a = self.attn_scale * self.attn(rms_norm(self.mix(a_lane, x0)) * s, mask)
        m = self.mlp_scale * self.mlp(rms_norm(m_lane) * s)
        (ra, rm), p = self.resid_lambdas, self.post_lambdas
        return ra * a_lane + p[0, 0] * a + p[1, 0] * m, rm * m_lane + p[0, 1] * a + p[1, 1] * m


class SmearGate(nn.Module):
    """x_t += lam * sigmoid(w . x_t[:k]) * x_{t-1}, zero-initialised, and masked where token t is BOS so the last
    token of one document never leaks into the next."""

    def __init__(self, gate_inputs: int):
        super().__init__()
        self.w = tag(nn.Parameter(torch.zeros(gate_inputs)), "control")
        self.lam = tag(nn.Parameter(torch.zeros(1)), "control")

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, T, D): x_{t-1}, zeros at t = 0
        g = self.lam * torch.sigmoid(x[..., : self.w.numel()] @ self.w.to(x.dtype)) * (idx != BOS_ID)  # (B, T)
        return x + g.unsqueeze(-1) * prev


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, c = cfg, cfg
        self.num_layers, self.loop_start, self.loop_end = c.num_layers, c.loop_start, c.loop_end
        self.logit_softcap, self.doc_isolation, self.z_loss = c.logit_softcap, c.doc_isolation, c.z_loss
        self.window = c.attn_window if c.attn in WINDOWED else 0
        self.loops = 1  # recurrence is switched on by set_loops() (the trainer does it at LOOP_START_FRAC)
        self.register_buffer("loop_gain", torch.ones(()), persistent=False)
        self.tok_emb = nn.Embedding(c.vocab_size, c.model_dim)
        nn.init.normal_(tag(self.tok_emb.weight, "embed"), std=c.tied_embed_init_std if c.tie_embeddings else 1.0)
        self.lm_head = None if c.tie_embeddings else CastedLinear(c.model_dim, c.vocab_size, "head", zero_init=True)
        self.smear = SmearGate(c.gate_inputs) if c.smear_gate else None
        self.bigram = nn.Embedding(c.bigram_hash, c.model_dim) if c.bigram_hash else None
        self.memory = MemoryBank(c.engram_slots, c.model_dim) if c.engram_slots else None
        if self.bigram is not None:
            nn.init.zeros_(tag(self.bigram.weight, "embed"))
        self.blocks = nn.ModuleList(Block(i, c) for i in range(c.num_layers))
        # U-Net skips over the virtual layer order (the record's): the first half of the order pushes its outputs,
        # the second half pops them mirrored; counted for the training loops, so other loop counts use what exists.
        self.n_skip = len(self.layer_order(c.num_loops)) // 2 if c.unet_skips else 0
        self.skip_weights = tag(nn.Parameter(torch.ones(self.n_skip, c.model_dim)), "control") if self.n_skip else None
        gates = self.n_skip and c.skip_gates  # sigmoid(0) = 0.5: lerp(w*skip, x) is a no-op when skip == x
        self.skip_gates = tag(nn.Parameter(torch.zeros(self.n_skip, c.model_dim)), "control") if gates else None
        self.ramp, self.head_adapter = False, None  # head_adapter: TTT's per-document LoRA on the logits
        self.role_map = {name: p.role for name, p in self.named_parameters()}

    def set_loops(self, loops: int, gain: float = 1.0) -> None:
        """Run the recurrent span `loops` times; with gain < 1 the hidden state is plain + gain * (looped - plain), so
        recurrence switches on without a jump (the gain is a buffer: a compiled model follows it)."""
        self.loops = max(1, int(loops))
        self.ramp = self.loops > 1 and gain < 1.0
        self.loop_gain.fill_(gain)

    def layer_order(self, loops: int | None = None) -> list[int]:
        loops = self.loops if loops is None else loops
        if loops <= 1:
            return list(range(self.num_layers))
        span = list(range(self.loop_start, self.loop_end + 1))
        return list(range(self.loop_start)) + span * loops + list(range(self.loop_end + 1, self.num_layers))

    def stack(self, x0: torch.Tensor, order: list[int], masks: tuple = (None, None)) -> torch.Tensor:
        """The blocks in `order`; `masks`: attention masks of the global and the local blocks (None: causal)."""
        lanes, skips, n_enc = (x0,), [], len(order) // 2
        for pos, i in enumerate(order):
            k = pos - n_enc
            if self.blocks[i].parallel and len(lanes) == 1:  # both lanes start from the stream before its skip
                lanes = (lanes[0], lanes[0])
            if 0 <= k < self.n_skip and skips:  # into lane 0 only, the one attention reads (as the record)
                x, skip = lanes[0], self.skip_weights[k] * skips.pop()
                x = x + skip if self.skip_gates is None else torch.lerp(skip, x, torch.sigmoid(self.skip_gates[k]))
                lanes = (x, *lanes[1:])
            if pos == n_enc and self.memory is not None:  # the engram bank, read at the middle of the order
                lanes = (lanes[0] + self.memory(lanes[0]), *lanes[1:])
            lanes = self.blocks[i](lanes, x0, masks[self.blocks[i].local])
            if pos < n_enc and self.n_skip:
                skips.append(lanes[0])
        return lanes[0] if len(lanes) == 1 else 0.5 * (lanes[0] + lanes[1])

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)  # (B, T, D)
        if self.bigram is not None:  # hash of (previous, current) token; position 0 pairs with token 0
            prev = F.pad(idx[:, :-1], (1, 0))
            x = x + self.bigram((prev * BIGRAM_HASH_MULT + idx) % self.bigram.num_embeddings)
        if self.smear is not None:
            x = self.smear(x, idx)
        x0, masks = rms_norm(x), self.attention_masks(idx)
        x = self.stack(x0, self.layer_order(), masks)
        if self.ramp:
            plain = self.stack(x0, self.layer_order(1), masks)
            x = plain + self.loop_gain.to(x.dtype) * (x - plain)
        return rms_norm(x)

    def attention_masks(self, idx: torch.Tensor) -> tuple:
        """What the global and the local blocks' attention gets: None (causal), a dense mask or the varlen segments."""
        seg = self.segments(idx)
        if seg is not None:
            return seg, seg
        mask = self.attn_mask(idx)
        return mask, self.attn_mask(idx, local=True) if self.window else mask

    def segments(self, idx: torch.Tensor) -> Segments | None:
        """The document pieces of a (B, T) batch for the varlen kernel ATTENTION names; None when the dense mask
        serves (no document isolation, windowed or linear attention, the sdpa backend, a CUDA kernel off CUDA)."""
        backend = ATTENTION.backend
        on_device = idx.is_cuda or backend in VARLEN_OFF_CUDA
        if backend == "sdpa" or not (self.doc_isolation and self.cfg.attn in VARLEN_ATTNS and on_device):
            return None
        B, T = idx.shape
        cu, count = build_cu_seqlens(idx, segment_capacity(B, T, ATTENTION.segment_tokens))
        return Segments(cu, count, T, backend)

    def attn_mask(self, idx: torch.Tensor, local: bool = False) -> torch.Tensor | None:
        """(B or 1, 1, T, T): causal; for local blocks only the last ATTN_WINDOW tokens (ATTN=sparse adds the first
        ATTN_GLOBAL tokens and random key blocks); with DOC_ISOLATION only the token's own document (a BOS starts
        one; tokens before the first BOS of a window are one document). None: plain causal attention."""
        if not self.doc_isolation and not (local and self.window):
            return None
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        i, j = pos[:, None], pos[None, :]
        mask = i >= j
        if local and self.window:
            near = i - j < self.window
            if self.cfg.attn == "sparse":
                near = near | (j < self.cfg.attn_global) | random_blocks(self.cfg, T, idx.device)
            mask = mask & near
        if self.doc_isolation:
            doc = torch.cumsum((idx == BOS_ID).to(torch.int32), dim=1)  # (B, T)
            mask = mask & (doc[:, :, None] == doc[:, None, :])
        return mask.expand(idx.size(0), T, T).unsqueeze(1) if mask.dim() == 3 else mask[None, None]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, w.to(x.dtype)).float()
        if self.head_adapter is not None:
            logits = logits + self.head_adapter(x).float()
        if self.logit_softcap > 0:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        logits = self.project(self.hidden(idx))  # (B, T, V) fp32
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        if self.z_loss and self.training and reduction == "mean":  # training only: scores stay plain CE
            loss = loss + self.z_loss * torch.logsumexp(logits, dim=-1).square().mean()
        return loss.view(targets.shape) if reduction == "none" else loss


def build_model(cfg: ModelConfig | dict) -> GPT:
    """The network of a ModelConfig, or of the dict an artifact or checkpoint recorded (keys checked)."""
    return GPT(cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg))


def init_weights(model: GPT, h: Hyperparameters) -> None:
    """ORTHO_INIT (the record's), over the modules' own init: every block's Q, K, V and MLP-input matrix orthogonal."""
    if h.ortho_init:
        for b in model.blocks:
            for w in (b.attn.c_q.weight, b.attn.c_k.weight, b.attn.c_v.weight, b.mlp.fc.weight):
                nn.init.orthogonal_(w, gain=1.0)


def param_roles(model: nn.Module) -> dict[str, str]:
    """{name: role} from the tags; a GPT also keeps them by name (copy.deepcopy drops attributes of Parameters)."""
    by_name = getattr(model, "role_map", {})
    roles = {name: getattr(p, "role", None) or by_name.get(name) for name, p in model.named_parameters()}
    untagged = [n for n, r in roles.items() if r not in ROLES]
    if untagged:
        raise ValueError(f"parameters without a role tag: {untagged}")
    return roles


def save_checkpoint(path: str | os.PathLike, cfg: ModelConfig, state_dict: dict, hparams: dict) -> None:
    """The float weights beside the artifact (toolkit.load_checkpoint reads them back, for quantize.py/eval_bpb.py)."""
    header = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": dataclasses.asdict(cfg)}
    weights = {k: v.detach().cpu() for k, v in state_dict.items()}
    buf = io.BytesIO()
    torch.save({**header, "state_dict": weights, "hparams": hparams}, buf)
    atomic_write_bytes(path, buf.getvalue())


# =====================================================================================================================
# 5. OPTIMISERS: Muon (Newton-Schulz / Polar Express orthogonalisation) and the AdamW groups
# =====================================================================================================================

NS_CLASSIC = (3.4445, -4.7750, 2.0315)
NS_POLAR_EXPRESS = (  # the record's minimax coefficients, one tuple per step (Polar Express); more steps reuse the last
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
NS_EPS = 1e-7


def orthogonalize(g: torch.Tensor, steps: int, polar_express: bool, row_normalize: bool,
                  dtype: torch.dtype | None = None) -> torch.Tensor:  # fmt: skip
    """Approximate the polar factor U V^T of a matrix, or of each matrix of a stack (..., rows, cols), with
    Newton-Schulz iterations in `dtype` (default: bf16 on CUDA, as the record on every device; fp32 on CPU, where
    bf16 products are hundreds of times slower). MuonEq-R first divides every row by its L2 norm (taken in fp32)."""
    x = g.to(dtype or (torch.bfloat16 if g.is_cuda else torch.float32))
    if row_normalize:
        x = x / x.float().norm(dim=-1, keepdim=True).clamp_min(NS_EPS).to(x.dtype)
    transposed = x.size(-2) > x.size(-1)
    x = x.mT if transposed else x
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + NS_EPS)
    for i in range(steps):
        a, b, c = NS_POLAR_EXPRESS[min(i, len(NS_POLAR_EXPRESS) - 1)] if polar_express else NS_CLASSIC
        A = x @ x.mT
        x = a * x + (b * A + c * (A @ A)) @ x
    return x.mT if transposed else x


class Muon(torch.optim.Optimizer):
    """Momentum (optionally Nesterov) + Newton-Schulz orthogonalisation for 2-D matrices, decoupled weight decay, the
    momentum and the iteration in self.dtype (bf16 on CUDA as the record, fp32 on CPU). Matrices of one shape form one
    stack (one compiled call on CUDA); each rank orthogonalises its share, padded with zero matrices to a multiple of
    the world size, and one all-gather gives every rank every update, so the weights are the same for any world size."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool, backend_steps: int, polar_express: bool,
                 row_normalize: bool, weight_decay: float, rank: int = 0, world_size: int = 1):  # fmt: skip
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, backend_steps=backend_steps)
        defaults.update(base_lr=lr, polar_express=polar_express, row_normalize=row_normalize, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.rank, self.world_size = rank, world_size
        params = [p for group in self.param_groups for p in group["params"]]
        not_2d = [tuple(p.shape) for p in params if p.ndim != 2]
        if not_2d:
            raise ValueError(f"Muon takes 2-D matrices only, got shape {not_2d[0]}")
        cuda = any(p.is_cuda for p in params)
        self.dtype = torch.bfloat16 if cuda else torch.float32
        self.ortho = torch.compile(orthogonalize, dynamic=False) if cuda else orthogonalize

    @staticmethod
    def stacks(params: list[nn.Parameter]) -> list[list[nn.Parameter]]:
        """The parameters grouped by shape, in first-seen order (each group is orthogonalised as one stack)."""
        shapes = dict.fromkeys(p.shape for p in params)
        return [[p for p in params if p.shape == shape] for shape in shapes]

    def _buffer(self, p: nn.Parameter) -> torch.Tensor:
        buf = self.state[p].get("momentum_buffer")  # .to: one saved by a run on another device has its dtype
        buf = torch.zeros_like(p, dtype=self.dtype) if buf is None else buf.to(self.dtype)
        self.state[p]["momentum_buffer"] = buf
        return buf

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            args = (group["backend_steps"], group["polar_express"], group["row_normalize"], self.dtype)
            for params in self.stacks(group["params"]):
                n, share = len(params), -(-len(params) // self.world_size)  # matrices per rank
                grads = [torch.zeros_like(p, dtype=self.dtype) if p.grad is None else p.grad.to(self.dtype)
                         for p in params]  # fmt: skip
                # per matrix as the record: the _foreach_ form rounds a bf16 buffer differently (0.03 after one step)
                bufs = [self._buffer(p).mul_(group["momentum"]).add_(g) for p, g in zip(params, grads)]
                u = [g.add(b, alpha=group["momentum"]) for g, b in zip(grads, bufs)] if group["nesterov"] else bufs
                mine = list(u[self.rank * share : (self.rank + 1) * share])
                mine = torch.stack(mine + [torch.zeros_like(u[0])] * (share - len(mine)))  # (share, rows, cols)
                # CUDA: the stack in one (compiled) call; CPU: a matrix at a time, whose working set stays in cache
                o = self.ortho(mine, *args) if mine.is_cuda else torch.stack([self.ortho(m, *args) for m in mine])
                if self.world_size > 1:
                    parts = [torch.empty_like(o) for _ in range(self.world_size)]
                    dist.all_gather(parts, o.contiguous())
                    o = torch.cat(parts)
                scale = math.sqrt(max(1.0, params[0].size(0) / params[0].size(1)))
                if group["weight_decay"]:
                    torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])
                updates = [x.to(p.dtype) for x, p in zip(o[:n].unbind(0), params)]
                torch._foreach_add_(params, updates, alpha=-group["lr"] * scale)


def build_optimizers(model: GPT, h: Hyperparameters, d: Dist) -> list[torch.optim.Optimizer]:
    """Muon for attn/mlp matrices (OPTIMIZER=adamw: AdamW at ADAMW_MATRIX_LR), AdamW for the embed/head/control rest."""
    roles = param_roles(model)
    by_role = {r: [p for name, p in model.named_parameters() if roles[name] == r] for r in ROLES}
    matrices = by_role["attn"] + by_role["mlp"]
    embed_lr = h.tied_embed_lr if h.model.tie_embeddings else h.embed_lr
    by_role["matrix"] = matrices if h.optimizer == "adamw" else []
    settings = (("embed", embed_lr, h.embed_wd), ("head", h.head_lr, h.adam_wd), ("control", h.scalar_lr, h.adam_wd),
                ("matrix", h.adamw_matrix_lr, h.adam_wd))  # fmt: skip
    groups = [dict(params=by_role[r], lr=lr, base_lr=lr, weight_decay=wd) for r, lr, wd in settings if by_role[r]]
    optimizers = [torch.optim.AdamW(groups, betas=(h.beta1, h.beta2), eps=h.adam_eps, fused=d.device.type == "cuda")]
    if h.optimizer == "muon":
        muon = Muon(matrices, lr=h.matrix_lr, momentum=h.muon_momentum, nesterov=bool(h.muon_nesterov),
                    backend_steps=h.muon_backend_steps, polar_express=bool(h.muon_polar_express),
                    row_normalize=bool(h.muon_eq_r), weight_decay=h.muon_wd, rank=d.rank,
                    world_size=d.world_size)  # fmt: skip
        optimizers.insert(0, muon)
    seen = [id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]]
    if sorted(seen) != sorted(id(p) for p in model.parameters()):
        raise RuntimeError("optimiser groups must cover every parameter exactly once")
    return optimizers


# =====================================================================================================================
# 6. TRAINING: the LR / momentum / recurrence schedules, one step, warmup, the loop, EMA, resumable state
# =====================================================================================================================

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, for the MFU estimate


class EMA:
    """fp32 shadow of the parameters, lerped towards them after every optimiser step."""

    def __init__(self, model: nn.Module):
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in model.parameters()], 1.0 - decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))


def scaled_schedule(h: Hyperparameters, expected_steps: float) -> tuple[float, float, float]:
    """(EMA decay, Muon momentum warm-up steps, momentum cap) for `expected_steps`: as set at SCHEDULE_REFERENCE_STEPS
    (the record's 4,900), the same fraction of the run at other lengths; the momentum's horizon stays under
    MUON_MOMENTUM_HORIZON_FRAC of the run (0.97 is ~33 steps: a 130-step CPU run lost 0.1 bpb; benchmarks/README.md)."""
    if not h.schedule_reference_steps:
        return h.ema_decay, float(h.muon_momentum_warmup_steps), 1.0
    steps = max(expected_steps, 1.0)
    r = steps / h.schedule_reference_steps
    decay = max(0.0, 1.0 - (1.0 - h.ema_decay) / r) if h.ema_decay else 0.0
    cap = max(0.0, 1.0 - 1.0 / (h.muon_momentum_horizon_frac * steps)) if h.muon_momentum_horizon_frac else 1.0
    return decay, h.muon_momentum_warmup_steps * r, cap


def lr_multiplier(h: Hyperparameters, clock: RunClock, step: int) -> float:
    """1, then a linear warm-down over the last WARMDOWN_FRAC of the budget (time, or iterations) floored at MIN_LR,
    as the record does; or over the last WARMDOWN_ITERS steps when that is set (the baseline)."""
    if h.warmdown_iters > 0:
        steps_left = (clock.budget_ms - clock.elapsed(step)) / max(clock.step_ms, 1e-9) if clock.budget_ms else None
        left = (h.iterations - step if steps_left is None else steps_left) / h.warmdown_iters
    elif h.lr_schedule == "cosine":
        return h.min_lr + (1.0 - h.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(clock.progress(step), 1.0)))
    elif h.warmdown_frac > 0:
        left = (1.0 - clock.progress(step)) / h.warmdown_frac
    else:
        return 1.0
    left = min(max(left, 0.0), 1.0)
    return max(1.0 - math.sqrt(1.0 - left) if h.lr_schedule == "wsd" else left, h.min_lr)


def muon_momentum(h: Hyperparameters, step: int, warmup_steps: float, cap: float = 1.0) -> float:
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return min((1 - frac) * h.muon_momentum_warmup_start + frac * h.muon_momentum, cap)


def recurrence_gain(h: Hyperparameters, progress: float) -> float:
    """How much of the repeated passes is on: 0 before LOOP_START_FRAC, then a linear ramp over LOOP_RAMP_FRAC."""
    if h.model.num_loops <= 1 or progress < h.loop_start_frac:
        return 0.0
    return min((progress - h.loop_start_frac) / h.loop_ramp_frac, 1.0) if h.loop_ramp_frac > 0 else 1.0


def grad_accum_steps(h: Hyperparameters, d: Dist) -> int:
    accum = h.grad_accum_steps or (8 // d.world_size if 8 % d.world_size == 0 else 1)
    if h.train_batch_tokens % (d.world_size * accum * h.train_seq_len):
        raise UserError(
            f"TRAIN_BATCH_TOKENS={h.train_batch_tokens} does not split evenly over world_size "
            f"{d.world_size} x GRAD_ACCUM_STEPS {accum} x TRAIN_SEQ_LEN {h.train_seq_len}"
        )
    return accum


def train_step(model: nn.Module, loader, optimizers: list, h, d, accum_steps: int, lr_mult: float, momentum: float):
    """One optimiser step over ACCUM micro-batches; returns the mean loss as a device tensor (no host sync)."""
    bf16 = use_bf16(h, d.device)
    total = torch.zeros((), device=d.device)
    ddp = getattr(model, "_orig_mod", model)
    for micro in range(accum_steps):
        x, y = loader.next_batch(h.train_batch_tokens, h.train_seq_len, accum_steps)
        skip_sync = isinstance(ddp, nn.parallel.DistributedDataParallel) and micro < accum_steps - 1
        with ddp.no_sync() if skip_sync else contextlib.nullcontext():
            with amp_context(d.device, bf16):
                loss = model(x, y)
            (loss / accum_steps).backward()
        total += loss.detach()
    if h.grad_clip_norm > 0:
        params = [p for opt in optimizers for g in opt.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, h.grad_clip_norm)
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_mult
            if isinstance(opt, Muon):
                g["momentum"] = momentum
        opt.step()
        opt.zero_grad(set_to_none=True)
    return total / accum_steps


def warmup_and_restore(model: nn.Module, base: GPT, loader, optimizers: list, h, d, accum_steps: int, log) -> None:
    """Run WARMUP_STEPS real steps so every graph compiles (with and without recurrence), then restore weights,
    optimiser state and loader position: the timed run starts from exactly the initial state."""
    if h.warmup_steps == 0:
        return
    weights = {k: v.detach().clone() for k, v in base.state_dict().items()}
    opt_states = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
    loader_state = loader.state_dict()
    loop_settings = [(1, 1.0)]  # (loops, gain): every graph the run will use, the recurrence ramp's included
    if h.model.num_loops > 1:
        loop_settings += [(h.model.num_loops, 0.5)] * (h.loop_ramp_frac > 0) + [(h.model.num_loops, 1.0)]
    for i in range(h.warmup_steps):
        base.set_loops(*loop_settings[i * len(loop_settings) // h.warmup_steps])
        train_step(model, loader, optimizers, h, d, accum_steps, 1.0, h.muon_momentum_warmup_start)
        log(f"warmup_step:{i + 1}/{h.warmup_steps}")
    base.load_state_dict(weights)
    for opt, state in zip(optimizers, opt_states):
        opt.load_state_dict(state)
    loader.load_state_dict(loader_state)
    base.set_loops(1)


def train_flops_per_token(base: GPT, seq_len: int) -> float:
    """6 x (matrix parameters a token passes through, counting loops) + 6 x causal attention per virtual layer."""
    block_params = [sum(p.numel() for p in b.parameters() if p.ndim == 2) for b in base.blocks]
    order = base.layer_order()
    matmul = sum(block_params[i] for i in order) + base.tok_emb.weight.numel()
    return 6.0 * matmul + 6.0 * len(order) * seq_len * base.tok_emb.weight.size(1)


@dataclass
class Learner:
    """The model being trained: the module each step runs, the GPT under it, its optimisers and its EMA."""

    model: nn.Module  # DDP and/or compiled around base, or base itself
    base: GPT
    optimizers: list
    ema: EMA | None = None  # None: EMA_DECAY=0


@dataclass
class TrainStats:
    """What training hands to the phases after it (train fills the loop's part, train_phase the calibration's)."""

    steps: int
    train_ms: float  # the agreed training time
    step_ms: float  # the agreed time of one step
    stop_reason: str  # iterations | wallclock_cap | stop_after
    gain: float  # the recurrence ramp's gain at the end (-1: not started)
    hessians: dict | None = None  # GPTQ's, from calibrate (None: GPTQ=0, or already handed to the export)
    calib_ms: float | None = None  # calibrate's time (None: GPTQ=0)


def train(learner: Learner, loader, h, d, accum_steps: int, validate, log, resumed: dict | None = None) -> TrainStats:
    """The wallclock-bounded loop (from a saved state's step when resumed). The ranks read and agree the clock (a host
    sync) only on logging steps and on checks at steps 1, 2, 4, ... and ever closer as the budget runs out; between
    them every rank estimates the time alike, so all take the same decisions (LR, recurrence, stop) each step."""
    model, base, optimizers, ema = learner.model, learner.base, learner.optimizers, learner.ema
    budget_ms = 1000.0 * max(h.max_wallclock_seconds - (h.gptq_reserve_seconds if h.gptq else 0.0), 0.0)
    clock = RunClock(h, budget_ms if h.max_wallclock_seconds > 0 else 0.0)
    step, train_ms, next_check, stop_reason, gain = 0, 0.0, 1, "", -1.0
    if resumed is not None:
        step, gain = resumed["step"], resumed["gain"]
        base.set_loops(h.model.num_loops if gain > 0 else 1, max(gain, 0.0))
    bad_step = torch.full((), -1, device=d.device, dtype=torch.int64)
    t0 = synced_clock(d)
    while True:
        last = step >= h.iterations or bool(stop_reason)
        if validate is not None and h.val_loss_every > 0 and (last or step % h.val_loss_every == 0):
            train_ms += 1000.0 * (synced_clock(d) - t0)
            res = validate(base)
            log(
                f"step:{step}/{h.iterations} val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f} "
                f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms"
            )
            t0 = synced_clock(d)
        if last:
            break
        if h.stop_after and step >= h.stop_after:
            stop_reason = "stop_after"
            break
        if gain < 1.0 and (new := recurrence_gain(h, clock.progress(step))) != gain:
            if gain <= 0.0 < new:
                log(f"recurrence_on step:{step} train_time:{clock.elapsed(step):.0f}ms")
            base.set_loops(h.model.num_loops if new > 0 else 1, new)
            gain = new
        ema_decay, momentum_steps, momentum_cap = scaled_schedule(h, clock.expected_steps())
        lr, momentum = lr_multiplier(h, clock, step), muon_momentum(h, step, momentum_steps, momentum_cap)
        loss = train_step(model, loader, optimizers, h, d, accum_steps, lr, momentum)
        if ema is not None:
            ema.update(base, ema_decay)
        step += 1
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step, bad_step)
        log_now = step % h.train_log_every == 0 or step == h.iterations
        if not (log_now or step >= next_check):
            continue
        agree_clock(clock, step, train_ms + 1000.0 * (synced_clock(d) - t0), bad_step, d)
        if log_now:
            log(train_line(base, h, d, clock, step, loss))
        next_check = step + max(1, min(h.train_log_every, step, int(0.5 * (clock.expected_steps() - step))))
        if clock.budget_ms and clock.agreed_ms + clock.step_ms > clock.budget_ms:  # the next step would end past it
            stop_reason = "wallclock_cap"
            log(f"stopping_early: wallclock_cap train_time:{clock.agreed_ms:.0f}ms step:{step}/{h.iterations}")
    log(f"schedule expected_steps:{clock.expected_steps():.0f} ema_decay:{ema_decay:.6f} "
        f"muon_momentum_warmup_steps:{momentum_steps:.1f} muon_momentum_cap:{momentum_cap:.4f} "
        f"recurrence_gain:{max(gain, 0.0):.3f}")  # fmt: skip
    return TrainStats(step, clock.agreed_ms, clock.step_ms, stop_reason or "iterations", gain)


def train_line(base: GPT, h: Hyperparameters, d: Dist, clock: RunClock, step: int, loss: torch.Tensor) -> str:
    tok_s = h.train_batch_tokens * step / max(clock.agreed_ms / 1000.0, 1e-9)
    name = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else ""
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), 0.0)
    line = f"step:{step}/{h.iterations} train_loss:{loss.item():.4f} train_time:{clock.agreed_ms:.0f}ms "
    line += f"step_avg:{clock.agreed_ms / step:.2f}ms tok_s:{tok_s:.0f}"
    if peak:
        line += f" mfu:{100 * tok_s * train_flops_per_token(base, h.train_seq_len) / peak / d.world_size:.1f}%"
    return line


RESUME_FORMAT = "pgolf-resume-state"
RESUME_FREE = {"resume_from", "stop_after", "run_id", "log_dir", "artifact_path", "overwrite"}  # may differ


def resume_path(h: Hyperparameters) -> Path:
    return Path(artifact_path_of(h)).with_suffix(".resume.pt")


def save_resume_state(h, d: Dist, base: GPT, optimizers: list, ema, loader, stats: TrainStats, log: Logger) -> None:
    """What the loop carries between steps, with the settings and the source's hash, for RESUME_FROM (rank 0 writes)."""
    state = dict(format=RESUME_FORMAT, source_sha256=hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
                 config=h.flat(), step=stats.steps, gain=stats.gain, model=base.state_dict(),
                 optimizers=[o.state_dict() for o in optimizers], ema=None if ema is None else ema.shadow,
                 loader=loader.state_dict(), rng=torch.get_rng_state())  # fmt: skip
    path = resume_path(h)
    if d.rank == 0:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())
    log(f"stopped_after step:{stats.steps}/{h.iterations} resume_state:{path} (continue with RESUME_FROM={path})")


def resume_state(h, base: GPT, optimizers: list, ema, loader, log: Logger) -> dict:
    """Load what save_resume_state wrote into the freshly built run; any mismatch is refused in one line (UserError)."""
    if h.max_wallclock_seconds > 0:
        raise UserError("RESUME_FROM continues a non-record run: set MAX_WALLCLOCK_SECONDS=0 (a record-track run is "
                        "bounded by its wallclock and cannot be split; run it whole)")  # fmt: skip
    try:
        state = torch.load(h.resume_from, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a state
        raise UserError(f"RESUME_FROM={h.resume_from}: not a readable resume state ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise UserError(f"RESUME_FROM={h.resume_from}: not a {RESUME_FORMAT} file (STOP_AFTER writes one)")
    try:
        return _load_resume_state(state, h, base, optimizers, ema, loader, log)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:  # a damaged state
        why = " ".join(str(e).split())[:300]
        raise UserError(f"RESUME_FROM={h.resume_from}: not a complete resume state ({type(e).__name__}: {why}); "
                        "use the file STOP_AFTER wrote, unchanged") from None  # fmt: skip


def _load_resume_state(state: dict, h, base: GPT, optimizers: list, ema, loader, log: Logger) -> dict:
    if state["source_sha256"] != hashlib.sha256(Path(__file__).read_bytes()).hexdigest():
        raise UserError(f"RESUME_FROM={h.resume_from} was written by another version of train_gpt.py")
    ours = h.flat()
    differ = sorted(k for k in set(ours) | set(state["config"]) if k not in RESUME_FREE
                    and ours.get(k) != state["config"].get(k))  # fmt: skip
    if differ:
        raise UserError(f"RESUME_FROM={h.resume_from} ran other settings: " + ", ".join(
            f"{k.upper()}={state['config'].get(k)!r} there, {ours.get(k)!r} here" for k in differ[:6]))  # fmt: skip
    files, at = loader.files, state["loader"]
    i, pos = at["file_idx"], at["pos"]
    if not (type(i) is type(pos) is int and 0 <= i < len(files) and 0 <= pos <= read_shard_header(files[i])):
        raise UserError(f"RESUME_FROM={h.resume_from}: its loader stands at shard {i!r} token {pos!r}, past the "
                        f"{len(files)} train shards here: resume on the data it ran on")  # fmt: skip
    ema_ok = ema is None or len(state["ema"]) == len(ema.shadow)
    if type(state["step"]) is not int or len(state["optimizers"]) != len(optimizers) or not ema_ok:
        raise ValueError("its step, optimisers or EMA do not match this run")
    base.load_state_dict(state["model"])
    for opt, s in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(s)
        for p, kept in opt.state.items():
            if any(isinstance(v, torch.Tensor) and v.dim() and v.shape != p.shape for v in kept.values()):
                raise ValueError(f"an optimiser state of another shape than its {tuple(p.shape)} parameter")
    if ema is not None:
        torch._foreach_copy_(ema.shadow, state["ema"])
    loader.load_state_dict(at)
    torch.set_rng_state(state["rng"])
    log(f"resumed_from:{h.resume_from} step:{state['step']}")
    return state


def train_phase(h: Hyperparameters, d: Dist, accum: int, loader, tables, val_tokens, log: Logger) -> tuple:
    """Build, compile and train the model; return (base model with the exported weights, compile flag, stats)."""
    base = build_model(h.model)
    init_weights(base, h)
    base = base.to(d.device)
    log(f"model_params:{sum(p.numel() for p in base.parameters())}")
    optimizers = build_optimizers(base, h, d)
    compile_on = compile_enabled(h, d)
    model: nn.Module = base
    if d.enabled:  # DDP first, then compile: the graph splits at DDP's buckets, whose all-reduce overlaps the backward
        ids = [d.local_rank] if d.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    if compile_on:
        model = torch.compile(model, dynamic=False)
    eval_loops = h.model.effective_eval_loops

    def validate(m: GPT) -> EvalResult:  # leaves m as it found it: training, its loops and gain
        loops, gain = m.loops, float(m.loop_gain)
        m.eval()
        m.set_loops(eval_loops)
        res = eval_flat(m, val_tokens, tables, h, d)
        m.set_loops(loops, gain)
        m.train()
        return res

    ema = EMA(base) if h.ema_decay > 0 else None
    resumed = resume_state(h, base, optimizers, ema, loader, log) if h.resume_from else None
    if resumed is None:
        warmup_and_restore(model, base, loader, optimizers, h, d, accum, log)
    stats = train(Learner(model, base, optimizers, ema), loader, h, d, accum, validate, log, resumed)
    if stats.stop_reason == "stop_after":
        save_resume_state(h, d, base, optimizers, ema, loader, stats, log)
        return base, compile_on, stats
    if d.device.type == "cuda":
        allocated, reserved = torch.cuda.max_memory_allocated() // 2**20, torch.cuda.max_memory_reserved() // 2**20
        log(f"peak memory allocated: {allocated} MiB reserved: {reserved} MiB")
    base.eval()
    base.set_loops(eval_loops)
    raw = copy.deepcopy(base) if ema is not None else None
    if ema is not None:
        base.load_state_dict(ema.state_dict(), strict=False)  # the EMA's parameters (buffers stay)
    stats.hessians, stats.calib_ms = calibrate(base, h, d, stats, log)  # training data: right after the loop
    if raw is not None:
        res = eval_flat(raw, val_tokens, tables, h, d)
        log(f"pre_ema val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f}")
    return base, compile_on, stats


# =====================================================================================================================
# 7. EXPORT: quantisation (SDClip, percentile, GPTQ), LQER, calibration (Hessians), fitting under the byte cap
# =====================================================================================================================

FP16_TINY = torch.finfo(torch.float16).tiny  # smallest normal fp16: floor of every stored scale
FP16_SCALE_MAX = 60_000.0  # ceiling of every stored fp16 scale (below fp16's largest finite value, 65,504)
PERCENTILE_Q = 0.9999984  # QUANT_CLIP=percentile (the official baseline's export): rows clipped at this quantile of |w|
PERCENTILE_KEEP_NUMEL = 65_536  # QUANT_CLIP=percentile also keeps matrices of at most this many elements in fp16
LQER_BITS = 4  # the low-rank factor B: ints in [-8, 7], scale absmax / 7.5 per group (A: int2, one scale)
LQER_GROUP = 64
GPTQ_CALIB_MAX_RANK_TOKENS = 65_536  # calibration tokens per rank and batch
GPTQ_DAMP_RETRIES = 4  # Cholesky failure: multiply the damping by 10 and retry


def int_max(bits: int) -> int:
    """The largest code of a signed bits-bit integer (symmetric range [-int_max, int_max]): 127 at 8 bits."""
    return 2 ** (bits - 1) - 1


def sdclip_scale(w: torch.Tensor, k: float, bits: int, mantissa_bits: int = 0) -> torch.Tensor:
    """SDClip, the record's rule: per-row fp16 scale k*std / int_max(bits) (unbiased std; a constant row gets 1),
    rounded to mantissa_bits significant bits when > 0 (QUANT_SCALE_BITS, not the record's: half the scale stream)."""
    std = w.float().std(dim=1, correction=1) if w.size(1) > 1 else torch.zeros(w.size(0), device=w.device)
    scale = torch.where(std > 0, k * std / int_max(bits), torch.ones_like(std)).clamp(FP16_TINY, FP16_SCALE_MAX)
    if mantissa_bits <= 0:
        return scale.half().clamp_min(FP16_TINY)
    m, e = torch.frexp(scale.double())
    return torch.ldexp(torch.round(m * 2**mantissa_bits) / 2**mantissa_bits, e).clamp(FP16_TINY).half()


def percentile_clip(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(w clipped per row at its PERCENTILE_Q quantile of |w|, fp32 row scale): the official baseline's int8 rule,
    which rounds with the fp32 scale and stores it in fp16."""
    qmax = int_max(bits)
    clip = torch.quantile(w.float().abs(), PERCENTILE_Q, dim=1)
    w = torch.maximum(torch.minimum(w.float(), clip[:, None]), -clip[:, None])
    return w, (clip / qmax).clamp_min(1.0 / qmax)


def quantize_rtn(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = int_max(bits)
    return torch.clamp(torch.round(w.float() / scale.float()[:, None]), -qmax, qmax).to(torch.int8)


def gptq_quantize(
    w: torch.Tensor, H: torch.Tensor, scale: torch.Tensor, bits: int, block: int = 128, damp: float = 0.01
) -> torch.Tensor:
    """Full-Hessian GPTQ (SPEC section 6) with a fixed per-row scale; returns int8 codes shaped like w. Columns go in
    descending diag(H) order; each one's rounding error is pushed onto the later columns through U, the upper Cholesky
    factor of the damped H^-1 (lazily, once per block, beyond the current block). Runs in w's dtype (>= fp32)."""
    dtype = torch.promote_types(w.dtype, torch.float32)
    W, H = w.to(dtype).clone(), H.to(device=w.device, dtype=dtype).clone()
    s = scale.to(device=w.device, dtype=dtype)
    qmax, cols = int_max(bits), W.size(1)
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    # the record's column order: the damped diagonal, sorted unstably (its order of tied columns)
    perm = torch.argsort(H.diagonal() + damp * H.diagonal().mean(), descending=True)
    W, H = W[:, perm], H[perm][:, perm]
    eye = torch.eye(cols, device=w.device, dtype=dtype)
    for attempt in range(GPTQ_DAMP_RETRIES):
        L, info = torch.linalg.cholesky_ex(H + damp * 10**attempt * H.diagonal().mean() * eye)
        if info == 0:
            break
    else:
        raise ArithmeticError(f"GPTQ: the Hessian stays singular after damping up to {damp * 10**attempt}")
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    Q = torch.empty_like(W)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        Wb, Ub, Eb = W[:, i1:i2].clone(), U[i1:i2, i1:i2], torch.empty_like(W[:, i1:i2])
        for j in range(i2 - i1):
            Q[:, i1 + j] = q = torch.clamp(torch.round(Wb[:, j] / s), -qmax, qmax)
            Eb[:, j] = err = (Wb[:, j] - q * s) / Ub[j, j]
            Wb[:, j:] -= err[:, None] * Ub[j, j:]
        W[:, i2:] -= Eb @ U[i1:i2, i2:]
    return Q[:, torch.argsort(perm)].to(torch.int8)


def hessian_error(w: torch.Tensor, w_hat: torch.Tensor, H: torch.Tensor) -> float:
    """Output error on the calibration inputs relative to the output energy: tr(E H E^T) / tr(W H W^T)."""
    w, e = w.float(), (w - w_hat).float()
    return float(((e @ H) * e).sum() / ((w @ H) * w).sum().clamp_min(1e-30))


def _quant_groups(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The record's LQER B: ints in [-2^(bits-1), 2^(bits-1) - 1] with one fp16 scale absmax / (2^(bits-1) - 0.5) per
    LQER_GROUP consecutive values (flattened; a short last group is zero-padded, a shape the record never ran)."""
    flat = x.float().reshape(-1)
    g = F.pad(flat, (0, -flat.numel() % LQER_GROUP)).view(-1, LQER_GROUP)
    half = 2 ** (bits - 1)
    s = (g.abs().amax(1) / (half - 0.5)).clamp_min(FP16_TINY).half()
    q = torch.clamp(torch.round(g / s.float()[:, None]), -half, half - 1).to(torch.int8)
    return q.reshape(-1)[: flat.numel()], s


def _dequant_groups(q: torch.Tensor, s: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    g = F.pad(q.float(), (0, -q.numel() % LQER_GROUP)).view(-1, LQER_GROUP) * s.float()[:, None]
    return g.reshape(-1)[: q.numel()].view(shape)


def dequantize_entry(e: dict) -> torch.Tensor:
    m = e["meta"]
    if m["store"] != "q":
        return e["data"].to(STORE_DTYPES[m["dtype"]]).reshape(m["shape"])
    w = e["q"].float() * e["scale"].float()[:, None]
    if m.get("lqer"):
        (rows, cols), r = m["shape"], m["lqer"]
        w = w + (e["la"].float().view(rows, r) * e["la_s"].float()) @ _dequant_groups(e["lb"], e["lb_s"], (r, cols))
    return w.to(STORE_DTYPES[m["dtype"]])


def _quant_setting(role: str, h: Hyperparameters) -> tuple[int, float]:
    bits = h.quant_matrix_bits if role in ("attn", "mlp") else h.quant_embed_bits
    return bits, {"attn": h.clip_k_attn, "mlp": h.clip_k_mlp}.get(role, h.clip_k_embed)


def quantize_state_dict(state_dict: dict, roles: dict, h: Hyperparameters, hessians: dict | None = None) -> list[dict]:
    """Quantise per role (SDClip RTN; GPTQ where a Hessian is given and GPTQ=1, the tied embedding included, as the
    record; LQER on the LQER_TOP worst matrices) into storage entries in stream order."""
    if missing := sorted(set(roles) - set(state_dict)):
        raise ArtifactError(
            f"state_dict lacks {len(missing)} tensor(s) of the model, e.g. {missing[:3]}: "
            "the checkpoint does not match the model config"
        )
    entries, floats = [], {}
    for name in sorted(state_dict, key=lambda n: (STORE_ORDER.index(roles.get(n, "buffer")), n)):
        t, role = state_dict[name].detach(), roles.get(name, "buffer")
        meta = {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "role": role}
        if meta["dtype"] not in STORE_DTYPES:
            raise ArtifactError(f"tensor {name} has dtype {t.dtype}, which the artifact cannot store")
        if name.endswith("attn.gate.weight") and t.ndim == 2:  # the record's attention gate: int8, absmax per row
            scale = (t.float().abs().amax(1) / 127).clamp(FP16_TINY, FP16_SCALE_MAX).half()
            meta.update(store="q", bits=8, k=0.0, method="absmax")
            entries.append({"meta": meta, "q": quantize_rtn(t, scale, 8).cpu(), "scale": scale.cpu()})
            continue
        kept = h.quant_clip == "percentile" and t.numel() <= PERCENTILE_KEEP_NUMEL  # the official size rule
        if kept or not (role in QUANT_ROLES and t.ndim == 2 and t.is_floating_point()):  # else by role, any size
            wide = role == "buffer" or role == "control" and h.control_bits == 32
            store = "raw" if not t.is_floating_point() else "f32" if wide else "f16"
            data = t.cpu() if store == "raw" else t.cpu().to(torch.float32 if store == "f32" else torch.float16)
            entries.append({"meta": {**meta, "store": store}, "data": data})
            continue
        bits, k = _quant_setting(role, h)
        w, H = t.float(), (hessians or {}).get(name)
        if h.quant_clip == "percentile":
            (w, scale), k = percentile_clip(w, bits), 0.0
        else:
            scale = sdclip_scale(w, k, bits, h.quant_scale_bits)
        if H is not None and h.gptq:
            q, method = gptq_quantize(w.to(H.device), H, scale.half(), bits, h.gptq_block, h.gptq_damp), "gptq"
        else:  # the percentile rule rounds with its fp32 scale
            q, method = quantize_rtn(w, scale, bits), "rtn"
        meta.update(store="q", bits=bits, k=k, method=method)
        entries.append({"meta": meta, "q": q.cpu(), "scale": scale.half().cpu()})
        floats[name] = w
    if h.lqer_rank > 0:
        _add_lqer(entries, floats, h.lqer_rank, h.lqer_top)
    return entries


def _add_lqer(entries: list[dict], floats: dict[str, torch.Tensor], rank: int, top: int) -> None:
    """LQER (the record's asymmetric form): a rank-r SVD E ~ A @ B of the quantisation error E = W - W_hat of the `top`
    matrices with the largest errors; A = U*S in int2 ([-2, 1], one fp16 scale per matrix), B = Vh by _quant_groups."""
    errors = {
        n: floats[n] - dequantize_entry(e).to(floats[n].device) for e in entries if (n := e["meta"]["name"]) in floats
    }
    worst = set(sorted(errors, key=lambda n: -float(errors[n].norm()))[:top])
    for e in [e for e in entries if e["meta"]["name"] in worst]:
        U, S, Vh = torch.linalg.svd(errors[e["meta"]["name"]], full_matrices=False)
        r = min(rank, S.numel())
        A = U[:, :r] * S[:r]
        sa = (A.abs().amax() / 1.5).clamp(FP16_TINY, FP16_SCALE_MAX).half().reshape(1)
        e["la"], e["la_s"] = torch.clamp(torch.round(A / sa.float()), -2, 1).to(torch.int8).reshape(-1).cpu(), sa.cpu()
        e["lb"], e["lb_s"] = (x.cpu() for x in _quant_groups(Vh[:r], LQER_BITS))
        e["meta"]["lqer"] = r


def calibration_tokens(h: Hyperparameters, d: Dist) -> int:
    """Tokens per rank in one calibration batch: a whole number of sequences, at most GPTQ_CALIB_MAX_RANK_TOKENS."""
    per_rank = min(h.train_batch_tokens // d.world_size, GPTQ_CALIB_MAX_RANK_TOKENS)
    return max(per_rank // h.train_seq_len, 1) * h.train_seq_len


def calibration_budget(h: Hyperparameters, d: Dist, step_ms: float) -> int:
    """How many calibration batches fit in GPTQ_RESERVE_SECONDS, from the measured training step time: a batch is
    one forward (a third of a step's forward and backward) plus the X^T X sums, counted as half a step per token."""
    if not h.max_wallclock_seconds or not step_ms:
        return h.gptq_calib_batches
    batch_ms = 0.5 * step_ms * calibration_tokens(h, d) * d.world_size / h.train_batch_tokens
    return max(1, min(h.gptq_calib_batches, int(1000 * h.gptq_reserve_seconds / max(batch_ms, 1e-9))))


def calibration_batches(h: Hyperparameters, d: Dist, n: int) -> Iterator[torch.Tensor]:
    """n batches (B, T) of token ids from the TRAINING shards (never val), a slice per rank."""
    loader = train_loader(h, d)
    for _ in range(n):
        yield loader.next_batch(calibration_tokens(h, d) * d.world_size, h.train_seq_len, 1)[0]


@torch.no_grad()
def collect_hessians(model: nn.Module, batches: Iterable[torch.Tensor], roles: dict[str, str], d: Dist) -> dict:
    """H = mean X^T X of the inputs of every attn/mlp matrix (a looped block adds every pass) and of the output head
    or tied embedding (the final hidden states), all-reduced over ranks. Pass the uncompiled model."""
    out_name = next((n for want in ("head", "embed") for n, r in roles.items() if r == want), None)
    sums: dict[str, tuple[torch.Tensor, int]] = {}  # name -> (sum of X^T X, rows of X)

    def add(name: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.size(-1)).float()
        xtx, n = sums.get(name, (0.0, 0))
        sums[name] = (x.T @ x + xtx, n + x.size(0))

    hooks = []
    for mname, mod in model.named_modules():
        pname = f"{mname}.weight".removeprefix("_orig_mod.")
        if isinstance(mod, nn.Linear) and roles.get(pname) in ("attn", "mlp"):
            hooks.append(mod.register_forward_hook(lambda _m, inp, _o, p=pname: add(p, inp[0])))
    try:
        for x in batches:
            with amp_context(d.device, d.device.type == "cuda"):
                hid = model.hidden(x)
            if out_name is not None:
                add(out_name, hid)
    finally:
        for hk in hooks:
            hk.remove()
    return {
        name: all_reduce_(xtx) / all_reduce_(torch.tensor([float(n)], device=xtx.device)).clamp_min(1.0)
        for name, (xtx, n) in sorted(sums.items())
    }


def calibrate(base: GPT, h: Hyperparameters, d: Dist, stats: TrainStats, log: Logger) -> tuple:
    """(GPTQ's Hessians, ms taken) from as many training batches as fit the reserve ((None, None): GPTQ=0); the
    compliance line says whether training plus calibration (training data read) stayed in MAX_WALLCLOCK_SECONDS."""
    if not h.gptq:
        return None, None
    n = calibration_budget(h, d, stats.step_ms)
    t0 = synced_clock(d)
    hessians = collect_hessians(base, calibration_batches(h, d, n), param_roles(base), d)
    calib_ms = 1000 * (synced_clock(d) - t0)
    log(f"gptq_calibration_time:{calib_ms:.0f}ms batches:{n}/{h.gptq_calib_batches}")
    if h.max_wallclock_seconds:
        total, limit = stats.train_ms + calib_ms, 1000 * h.max_wallclock_seconds
        log(f"compliance training_data_time:{total:.0f}ms (train {stats.train_ms:.0f} + calibration "
            f"{calib_ms:.0f}) limit:{limit:.0f}ms within:{int(total <= limit)}")  # fmt: skip
    return hessians, calib_ms


FIT_K_MAX = 4.0  # TARGET_BYTES scales every role's clip k by one multiplier in [1, FIT_K_MAX]
FIT_FIRST = 1.01  # the first multiplier tried past 1 (then doubled in log space until the artifact fits)
FIT_STEPS = 12  # at most this many bisection steps in log space ...
FIT_SLACK = 0.001  # ... stopping once the artifact is within 0.1% under the budget (each step is a full encode)


def fit_artifact(state: dict, roles: dict, cfg: ModelConfig, h: Hyperparameters, hessians: dict | None, budget: int):
    """(blob, entries, settings) of the artifact at CLIP_K_* as set when it fits `budget` model bytes, else at the
    multiplier of every k (FIT_*) that lands it just under: a larger k spreads the integers over fewer levels, so the
    artifact shrinks; k is never lowered (that would clip more, not help). An encode takes a minute at full size."""

    def attempt(mult: float) -> tuple[bytes, list[dict], Hyperparameters]:
        ks = {f"clip_k_{r}": getattr(h, f"clip_k_{r}") * mult for r in ("attn", "mlp", "embed")}
        hh = dataclasses.replace(h, **ks)
        return (*build_artifact(state, roles, cfg, hh, hessians), hh)

    best = attempt(1.0)
    if len(best[0]) <= budget:
        return best
    lo, hi, top = 0.0, math.log(FIT_FIRST), math.log(FIT_K_MAX)
    while len((best := attempt(math.exp(hi)))[0]) > budget:
        if hi >= top:
            raise UserError(
                f"TARGET_BYTES={h.target_bytes} cannot be met: even with every clip k x{FIT_K_MAX} the model takes "
                f"{len(best[0])} bytes, {len(best[0]) - budget} over its {budget}-byte share; lower QUANT_*_BITS, "
                "shrink the model or raise TARGET_BYTES (the float checkpoint is saved for quantize.py fit)"
            )
        lo, hi = hi, min(2 * hi, top)
    for _ in range(FIT_STEPS):
        if len(best[0]) >= budget * (1 - FIT_SLACK):
            break
        mid = (lo + hi) / 2
        if len((fit := attempt(math.exp(mid)))[0]) <= budget:
            best, hi = fit, mid
        else:
            lo = mid
    return best


def export_phase(base: GPT, hessians: dict | None, h: Hyperparameters, d: Dist, source: bytes, log: Logger) -> tuple:
    """Checkpoint and artifact, written atomically by rank 0; every rank reads the artifact back from disk."""
    state = {k: v.detach() for k, v in base.state_dict().items()}
    artifact_path = artifact_path_of(h)
    error = None
    if d.is_main:  # alone (the byte-target search takes many encodes); the others wait, then all read the file back
        try:
            save_checkpoint(Path(artifact_path).with_suffix(".ckpt.pt"), h.model, state, h.flat())
            write_artifact(state, param_roles(base), h, hessians, source, artifact_path, log)
        except Exception as e:  # the other ranks learn of it (instead of waiting); rank 0 raises it below
            error = e
    if wait_for_main(error is not None, d):
        raise error if d.is_main else UserError("rank 0 could not write the artifact (its log says why)")
    log(f"artifact_path:{artifact_path}")
    blob = Path(artifact_path).read_bytes()  # every rank scores what is on disk
    sizes = size_report(len(blob), source.decode("utf-8"), h.code_policy)
    counted = ("code_bytes", "model_bytes", "total_bytes", "limit", "under_limit")
    log(" ".join(f"{k}:{int(sizes[k])}" for k in counted) + f" code_policy:{sizes['code_policy']}")
    log(f"code_bytes_raw:{sizes['code_bytes_raw']} code_bytes_packed:{sizes['code_bytes_packed']}")
    if h.preset == "baseline":  # the official script's size lines too, so its users find what they look for
        log(f"Serialized model int8+zlib: {sizes['model_bytes']} bytes")
        log(f"Code size: {sizes['code_bytes']} bytes")
        log(f"Total submission size int8+zlib: {sizes['total_bytes']} bytes")
    return blob, sizes


# =====================================================================================================================
# 8. ARTIFACT FORMAT: the frame, header and streams, the codecs (zstd / lzma / zlib / rANS), reading back, the
#    packed code and the size report
# =====================================================================================================================

# An artifact is a frame (ARTIFACT_FRAME) and the compressed payload: u32 header length, a JSON header (model config;
# each tensor's name, shape, dtype, role and storage: int bits, SDClip k and method, or float passthrough; the byte
# streams), then the streams, grouped by kind so the codec sees similar bytes together (ints by role, fp16 scales,
# passthrough, LQER factors). Reading parses JSON and raw bytes only: nothing in an artifact is executed or unpickled.
ARTIFACT_MAGIC = b"PGQA"
ARTIFACT_VERSION = 4  # 4: int codes rANS-coded when smaller; 3: LQER A int2; 2: header and streams in separate frames
ARTIFACT_PART = struct.Struct("<BII")  # per part: method (0 the codec, 1 rANS), stored bytes, raw bytes
ARTIFACT_FRAME = struct.Struct("<4sBBQ16s")  # magic, version, codec id, payload bytes, blake2b-128 of all the rest
ARTIFACT_CODECS = {"zstd": 1, "lzma": 2, "zlib": 3}
ARTIFACT_MAX_PAYLOAD = 1 << 28  # 256 MiB, 16x the byte cap: a declared payload above it is refused before inflating
ARTIFACT_MAX_HEADER = 1 << 24  # JSON header bytes (a model's is tens of KB): bounds what json.loads builds
ARTIFACT_MAX_TENSORS = 1 << 16  # header entries (1,024 blocks of a dozen tensors fit)
QUANT_ROLES = ("attn", "mlp", "embed", "head")  # large 2-D matrices of these roles are stored as integers
STORE_ORDER = ("attn", "mlp", "embed", "head", "control", "buffer")  # tensor order inside every stream
STREAM_WIDTHS = {"q": 1, "scale": 2, "f16": 2, "f32": 4, "raw": 1, "lqer_q": 1, "lqer_s": 2}  # byte-shuffle width
STORE_DTYPES = {
    n: getattr(torch, n) for n in ("float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
}


def entry_parts(e: dict) -> list[tuple[str, torch.Tensor]]:
    """(stream, tensor) of every stored part of an artifact entry (codes, scales, factors ...), in stream order."""
    return [(stream, e[key]) for stream, key, _, _ in _part_specs(e["meta"])]


def _part_specs(m: dict) -> list[tuple[str, str, torch.dtype, list[int]]]:
    """(stream, key, stored dtype, shape) of every part of a tensor, from its header entry alone."""
    if m["store"] != "q":
        dtype = {"f16": torch.float16, "f32": torch.float32}.get(m["store"], STORE_DTYPES[m["dtype"]])
        return [(m["store"], "data", dtype, m["shape"])]
    (rows, cols), r = m["shape"], m.get("lqer", 0)
    specs = [("q", "q", torch.int8, [rows, cols]), ("scale", "scale", torch.float16, [rows])]
    for key, n, scales in (("la", rows * r, 1), ("lb", r * cols, -(-r * cols // LQER_GROUP))) if r else ():
        specs += [("lqer_q", key, torch.int8, [n]), ("lqer_s", key + "_s", torch.float16, [scales])]
    return specs


def _shuffle(b: bytes, width: int, inverse: bool = False) -> bytes:
    """Byte-shuffle: all first bytes of the elements, then all second bytes, ... (or the inverse)."""
    a = np.frombuffer(b, dtype=np.uint8)
    return (a.reshape(width, -1).T if inverse else a.reshape(-1, width).T).tobytes()


def _codec(name: str):
    """The module of a codec named in ARTIFACT_CODECS (COMPRESSOR is checked by Hyperparameters)."""
    if name == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ArtifactError("codec zstd is not installed: pip install zstandard (or set COMPRESSOR=lzma)") from None
        return zstandard
    return {"lzma": lzma, "zlib": zlib}[name]


def compress_bytes(data: bytes, codec: str, level: int) -> bytes:
    mod = _codec(codec)
    if codec == "zstd":
        return mod.ZstdCompressor(level=min(level, 22)).compress(data)
    if codec == "lzma":
        return mod.compress(data, preset=min(level, 9) | mod.PRESET_EXTREME)
    return mod.compress(data, min(level, 9))


def decompress_bytes(data: bytes, codec: str, size: int) -> bytes:
    mod = _codec(codec)
    try:
        if codec == "zstd":  # streamed: a frame that declares a huge content size allocates nothing for it
            return mod.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(size + 1)
        return (mod.LZMADecompressor() if codec == "lzma" else mod.decompressobj()).decompress(data, size)
    except Exception as e:
        raise ArtifactError(f"artifact payload does not decompress with {codec} ({e}): corrupt file") from None


# Recorded beside the model config: a tool rescoring the artifact alone must score at the windows the run used.
ARTIFACT_RECORDED = ("train_seq_len", "eval_seq_len")


def encode_artifact(model_config: dict, entries: list[dict], codec: str, level: int, recorded: dict | None = None):
    chunks = {s: [] for s in STREAM_WIDTHS}  # each stream's tensors' bytes, in entry order
    for e in entries:
        for stream, t in entry_parts(e):
            chunks[stream].append(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    data = {s: b"".join(c) for s, c in chunks.items()}
    header = {
        "model_config": model_config,
        "tensors": [e["meta"] for e in entries],
        "streams": [[s, len(data[s]), STREAM_WIDTHS[s]] for s in STREAM_WIDTHS],
        **({"recorded": recorded} if recorded else {}),
    }
    hbytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    parts = [struct.pack("<I", len(hbytes)) + hbytes] + [_shuffle(data[s], STREAM_WIDTHS[s]) for s in data]
    body = compress_parts(parts, codec, level, {1 + list(data).index("q"): [len(c) for c in chunks["q"]]})
    size = sum(map(len, parts))
    frame = ARTIFACT_FRAME.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, ARTIFACT_CODECS[codec], size, bytes(16))[:-16]
    return frame + hashlib.blake2b(frame + body, digest_size=16).digest() + body


def compress_parts(parts: list[bytes], codec: str, level: int, segments: dict[int, list[int]] | None = None) -> bytes:
    """A part index (count, then method, stored and raw bytes of each) and one compressed frame per non-empty part
    (one zstd-22 frame of everything swung by +-3% as the data moved a few bytes: benchmarks/README.md). A part of
    int codes (`segments`: its tensors' sizes) is also rANS-coded, a table per tensor, and kept so when smaller."""
    frames, methods = [compress_bytes(p, codec, level) if p else b"" for p in parts], [0] * len(parts)
    for i, sizes in (segments or {}).items():
        if not parts[i] or len(sizes) > ANS_MAX_SEGMENTS:
            continue
        coded = ans_encode(np.frombuffer(parts[i], np.uint8), sizes)
        if len(coded) < len(frames[i]) and len(parts[i]) <= ANS_MAX_RATIO * len(coded):  # what the reader accepts
            frames[i], methods[i] = coded, 1
    index = b"".join(ARTIFACT_PART.pack(m, len(f), len(p)) for m, f, p in zip(methods, frames, parts))
    return struct.pack("<H", len(parts)) + index + b"".join(frames)


ANS_BITS = 15  # each table's frequencies sum to 2^15
ANS_LOW = 1 << 16  # coder states live in [2^16, 2^32); 16-bit words in and out
ANS_HEAD = struct.Struct("<II")  # segments, lanes
ANS_MAX_LANES = 1024  # interleaved rANS lanes at most; ans_encode and ans_decode agree on ans_lanes(n)
ANS_LANE_SYMBOLS = 4096  # symbols per lane below which fewer lanes are used
ANS_MAX_SEGMENTS = 1024  # tables per coded part (a model has a few hundred int-coded tensors): bounds decode memory
ANS_MAX_RATIO = 1024  # symbols per coded byte a part may declare: int codes take bits each (all-zero tensors take
# none, but the 8 bytes of state per lane bound a real part's ratio to 512 up to 4M symbols): 8 KB decode 8M at most


def _ans_tables(freqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(freq, cum, symbol of each slot) per table, (tables, 256) / (tables, 2^ANS_BITS)."""
    freq = np.stack(freqs).astype(np.int64)
    cum = np.cumsum(freq, axis=1) - freq
    slots = np.stack([np.repeat(np.arange(256), f) for f in freq]).astype(np.uint8)
    return freq, cum, slots


def ans_lanes(n: int) -> int:
    """How many interleaved lanes code n symbols: one per ANS_LANE_SYMBOLS, between 1 and ANS_MAX_LANES."""
    return int(min(ANS_MAX_LANES, max(1, n // ANS_LANE_SYMBOLS)))


def ans_encode(sym: np.ndarray, sizes: list[int]) -> bytes:
    """rANS over byte symbols with one static table per segment (a tensor's int codes), in lanes interleaved symbol
    by symbol so numpy codes a whole row of lanes per step: within 0.1% of the order-0 entropy of each tensor."""
    M, n = 1 << ANS_BITS, len(sym)
    seg = np.repeat(np.arange(len(sizes)), sizes)
    freqs, head = [], [ANS_HEAD.pack(len(sizes), lanes := ans_lanes(n))]
    for a, b in zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes)):
        counts = np.bincount(sym[a:b], minlength=256).astype(np.int64)
        f = np.where(counts > 0, np.maximum(1, counts * M // max(int(counts.sum()), 1)), 0)
        f[np.argmax(f)] += M - f.sum()  # the most frequent symbol absorbs the rounding
        assert f.sum() == M and (f[counts > 0] >= 1).all(), "rANS table"
        lo, hi = int(np.flatnonzero(f)[0]), int(np.flatnonzero(f)[-1])
        head.append(struct.pack("<IBB", b - a, lo, hi) + f[lo : hi + 1].astype("<u2").tobytes())
        freqs.append(f)
    freq, cum, _ = _ans_tables(freqs)
    steps = -(-n // lanes)
    x, out, cnt = np.full(lanes, ANS_LOW, np.uint64), np.zeros((lanes, steps), np.uint16), np.zeros(lanes, np.int64)
    for t in range(steps - 1, -1, -1):
        a, b = t * lanes, min(t * lanes + lanes, n)
        f, c = freq[seg[a:b], sym[a:b]].astype(np.uint64), cum[seg[a:b], sym[a:b]].astype(np.uint64)
        xa = x[: b - a]
        r = np.flatnonzero(xa >= (f << np.uint64(32 - ANS_BITS)))  # renormalise: emit the low 16 bits
        out[r, cnt[r]], cnt[r], xa[r] = xa[r] & np.uint64(0xFFFF), cnt[r] + 1, xa[r] >> np.uint64(16)
        x[: b - a] = (xa // f << np.uint64(ANS_BITS)) + xa % f + c
    words = b"".join(out[j, : cnt[j]][::-1].astype("<u2").tobytes() for j in range(lanes))
    return b"".join(head) + x.astype("<u4").tobytes() + cnt.astype("<u4").tobytes() + words


def ans_decode(blob: bytes, n: int) -> bytes:
    """The n byte symbols ans_encode coded into blob; anything that is not such a coding (tables that do not sum to
    2^15, reads past a lane's words, states that do not return to their start) is an ArtifactError."""
    M, pos = 1 << ANS_BITS, ANS_HEAD.size
    n_seg, lanes = ANS_HEAD.unpack_from(blob)
    if not 0 < lanes <= ANS_MAX_LANES or not 0 < n_seg <= ANS_MAX_SEGMENTS:
        raise ValueError("bad rANS header")
    if n > ANS_MAX_RATIO * len(blob) or lanes != ans_lanes(n):  # before allocating for n symbols
        raise ValueError(f"{len(blob)} coded bytes cannot hold {n} symbols in {lanes} lanes (ans_encode uses "
                         f"{ans_lanes(n)}, at most {ANS_MAX_RATIO} symbols a byte)")  # fmt: skip
    freqs, sizes = [], []
    for _ in range(n_seg):
        size, lo, hi = struct.unpack_from("<IBB", blob, pos)
        f = np.zeros(256, np.int64)
        f[lo : hi + 1] = np.frombuffer(blob, "<u2", hi - lo + 1, pos + 6) if hi >= lo else []
        if f.sum() != M:
            raise ValueError("a rANS table does not sum to 2^15")
        freqs.append(f)
        sizes.append(size)
        pos += 6 + 2 * (hi - lo + 1)
    if sum(sizes) != n:
        raise ValueError("rANS segments do not add up")
    freq, cum, slots = _ans_tables(freqs)
    x = np.frombuffer(blob, "<u4", lanes, pos).astype(np.uint64)
    cnt = np.frombuffer(blob, "<u4", lanes, pos + 4 * lanes).astype(np.int64)
    words = np.frombuffer(blob, "<u2", offset=pos + 8 * lanes)
    if cnt.sum() != len(words) or len(blob) != pos + 8 * lanes + 2 * len(words):
        raise ValueError("rANS word counts do not match the data")
    ptr, end = np.cumsum(cnt) - cnt, np.cumsum(cnt)
    seg, sym, steps = np.repeat(np.arange(n_seg, dtype=np.uint16), sizes), np.empty(n, np.uint8), -(-n // lanes)
    for t in range(steps):
        a, b = t * lanes, min(t * lanes + lanes, n)
        xa, sg = x[: b - a], seg[a:b]
        slot = (xa & np.uint64(M - 1)).astype(np.int64)
        s = slots[sg, slot]
        xa = freq[sg, s].astype(np.uint64) * (xa >> np.uint64(ANS_BITS)) + slot.astype(np.uint64)
        xa -= cum[sg, s].astype(np.uint64)
        r = np.flatnonzero(xa < ANS_LOW)
        if (ptr[r] >= end[r]).any():
            raise ValueError("a rANS lane reads past its words")
        xa[r], ptr[r] = (xa[r] << np.uint64(16)) | words[ptr[r]].astype(np.uint64), ptr[r] + 1
        x[: b - a], sym[a:b] = xa, s
    if (x != ANS_LOW).any() or (ptr != end).any():
        raise ValueError("rANS states do not return to their start")
    return sym.tobytes()


def decompress_parts(body: bytes, codec: str, size: int) -> bytes:
    """The concatenated raw parts of a compress_parts body whose raw parts add up to `size` bytes."""
    try:
        (n_parts,) = struct.unpack_from("<H", body)
        index = [ARTIFACT_PART.unpack_from(body, 2 + i * ARTIFACT_PART.size) for i in range(n_parts)]
        pos = 2 + n_parts * ARTIFACT_PART.size
        if sum(c for _, c, _ in index) != len(body) - pos or sum(r for _, _, r in index) != size:
            raise ValueError("part sizes do not add up")
        if any(m not in (0, 1) for m, _, _ in index):
            raise ValueError("unknown part method")
    except (struct.error, ValueError) as e:
        raise ArtifactError(f"artifact part index is malformed ({e}): corrupt or not ours") from None
    parts = []
    for method, comp, raw in index:
        chunk, pos = body[pos : pos + comp], pos + comp
        try:  # decompress_bytes raises its own ArtifactError
            part = b"" if not raw else ans_decode(chunk, raw) if method == 1 else decompress_bytes(chunk, codec, raw)
        except (struct.error, ValueError, IndexError) as e:
            raise ArtifactError(f"artifact's rANS-coded part is malformed ({e}): corrupt file") from None
        if len(part) != raw:
            raise ArtifactError(f"artifact part inflates to {len(part)} bytes, expected {raw}: corrupt file")
        parts.append(part)
    return b"".join(parts)


class ArtifactFrame(NamedTuple):
    version: int  # artifact format version
    codec: str  # a key of ARTIFACT_CODECS
    payload_bytes: int  # the uncompressed payload


def read_frame(blob: bytes) -> ArtifactFrame:
    """Verify an artifact's frame (magic, version, codec, checksum over the whole blob, payload limit) and return it."""
    if len(blob) < ARTIFACT_FRAME.size:
        raise ArtifactError(
            f"artifact is {len(blob)} bytes, shorter than its {ARTIFACT_FRAME.size}-byte frame (truncated?)"
        )
    magic, version, codec_id, size, digest = ARTIFACT_FRAME.unpack_from(blob)
    if magic != ARTIFACT_MAGIC:
        raise ArtifactError(
            f"not a quantised artifact: magic {magic!r}, expected {ARTIFACT_MAGIC!r} (a float "
            "checkpoint is read with load_checkpoint)"
        )
    if version != ARTIFACT_VERSION:
        raise ArtifactError(
            f"artifact format version {version} is not readable by this train_gpt.py "
            f"(it reads version {ARTIFACT_VERSION}); use the train_gpt.py that wrote it"
        )
    codec = {v: k for k, v in ARTIFACT_CODECS.items()}.get(codec_id)
    if codec is None:
        raise ArtifactError(f"artifact uses unknown codec id {codec_id}")
    body = blob[ARTIFACT_FRAME.size :]
    if hashlib.blake2b(blob[: ARTIFACT_FRAME.size - 16] + body, digest_size=16).digest() != digest:
        raise ArtifactError(f"artifact checksum mismatch ({len(blob)} bytes): the file is truncated or corrupt")
    if size > ARTIFACT_MAX_PAYLOAD:
        raise ArtifactError(f"artifact claims a {size}-byte payload, over the {ARTIFACT_MAX_PAYLOAD}-byte limit")
    return ArtifactFrame(version, codec, size)


def decode_artifact(blob: bytes) -> tuple[dict, list[dict], dict]:
    """Verify and parse an artifact into (model_config, storage entries, recorded settings) without executing
    anything from it (recorded: ARTIFACT_RECORDED's values; {} in an artifact written before them)."""
    frame = read_frame(blob)
    payload = decompress_parts(blob[ARTIFACT_FRAME.size :], frame.codec, frame.payload_bytes)
    try:
        (hlen,) = struct.unpack_from("<I", payload)
        if hlen > ARTIFACT_MAX_HEADER:
            raise ValueError(f"a {hlen}-byte header, over the {ARTIFACT_MAX_HEADER}-byte limit")
        header = json.loads(payload[4 : 4 + hlen])
        model_config, metas, stream_info = header["model_config"], header["tensors"], header["streams"]
        if not isinstance(metas, list) or len(metas) > ARTIFACT_MAX_TENSORS:
            raise ValueError(f"the tensor list is not a list of at most {ARTIFACT_MAX_TENSORS} entries")
        recorded = header.get("recorded", {})
        known = isinstance(recorded, dict) and set(recorded) <= set(ARTIFACT_RECORDED)
        if not known or not all(type(v) is int and v >= 0 for v in recorded.values()):
            raise ValueError(f"bad recorded settings {recorded!r}")
        pos, streams = 4 + hlen, {}
        for s, n, width in stream_info:
            if s not in STREAM_WIDTHS or width != STREAM_WIDTHS[s] or not 0 <= n <= len(payload) - pos:
                raise ValueError(f"bad stream {s!r}")
            streams[s], pos = _shuffle(payload[pos : pos + n], width, inverse=True), pos + n
        if pos != len(payload) or not isinstance(model_config, dict):
            raise ValueError("payload length does not match its streams")
        cursor, entries = dict.fromkeys(streams, 0), []
        for m in metas:
            q_ok = m["store"] != "q" or len(m["shape"]) == 2 and 2 <= m["bits"] <= 8 and m.get("lqer", 0) >= 0
            if m["store"] not in ("q", "f16", "f32", "raw") or m["dtype"] not in STORE_DTYPES or not q_ok:
                raise ValueError(f"bad storage {m['store']!r}/{m['dtype']!r} for {m['name']!r}")
            e = {"meta": m}
            for stream, key, dtype, shape in _part_specs(m):
                n = math.prod(shape) * dtype.itemsize
                if min(shape, default=0) < 0 or cursor[stream] + n > len(streams[stream]):
                    raise ValueError(f"tensor {m['name']!r} overruns stream {stream!r}")
                chunk = torch.tensor(np.frombuffer(streams[stream], np.uint8, n, cursor[stream]))  # a copy
                e[key], cursor[stream] = chunk.view(dtype).reshape(shape), cursor[stream] + n
            entries.append(e)
        if any(cursor[s] != len(streams[s]) for s in streams):
            raise ValueError("streams hold bytes no tensor claims")
    except Exception as e:
        raise ArtifactError(f"artifact header is malformed ({type(e).__name__}: {e}): corrupt or not ours") from None
    return model_config, entries, recorded


def build_artifact(state_dict: dict, roles: dict, cfg: ModelConfig, h: Hyperparameters, hessians=None) -> tuple:
    """Quantise a float state_dict and encode it: (artifact bytes, storage entries)."""
    entries = quantize_state_dict(state_dict, roles, h, hessians)
    recorded = {k: getattr(h, k) for k in ARTIFACT_RECORDED}
    return encode_artifact(dataclasses.asdict(cfg), entries, h.compressor, h.compress_level, recorded), entries


def read_artifact(blob: bytes) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """(model config, dequantised float state_dict, recorded settings) of an artifact; the state is strict-loadable
    into build_model(config)."""
    model_config, entries, recorded = decode_artifact(blob)
    return artifact_config(model_config, entries), {e["meta"]["name"]: dequantize_entry(e) for e in entries}, recorded


def artifact_config(model_config: dict, entries: list[dict]) -> ModelConfig:
    """A decoded artifact's model config, checked against the tensors its header lists (shapes only, on the meta
    device: before anything is dequantised or built)."""
    cfg = ModelConfig.from_dict(model_config, "the artifact's model config")
    check_shapes(cfg, {e["meta"]["name"]: torch.empty(e["meta"]["shape"], device="meta") for e in entries}, "artifact")
    return cfg


def is_artifact(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(ARTIFACT_MAGIC)) == ARTIFACT_MAGIC


def write_artifact(state: dict, roles: dict, h: Hyperparameters, hessians, source: bytes, path: str, log: Logger):
    """Quantise (landing under TARGET_BYTES when set), write atomically, log the storage of every role."""
    if h.target_bytes:
        budget = h.target_bytes - size_report(0, source.decode("utf-8"), h.code_policy)["code_bytes"]
        blob, entries, fit = fit_artifact(state, roles, h.model, h, hessians, budget)
        log(f"target_bytes:{h.target_bytes} model_budget:{budget} model_bytes:{len(blob)} "
            f"slack:{budget - len(blob)} ({(budget - len(blob)) / budget:.3%}) clip_k_attn:{fit.clip_k_attn:.4f} "
            f"clip_k_mlp:{fit.clip_k_mlp:.4f} clip_k_embed:{fit.clip_k_embed:.4f}")  # fmt: skip
    else:
        blob, entries = build_artifact(state, roles, h.model, h, hessians)
    atomic_write_bytes(path, blob)
    for role in dict.fromkeys(e["meta"]["role"] for e in entries):
        ms = [e["meta"] for e in entries if e["meta"]["role"] == role]
        how = {key: "/".join(sorted({str(m[key]) for m in ms if key in m})) or "-" for key in ("bits", "k")}
        log(
            f"quant_role:{role} tensors:{len(ms)} params:{sum(math.prod(m['shape']) for m in ms)} "
            f"bits:{how['bits']} k:{how['k']} method:{'/'.join(sorted({m.get('method', m['store']) for m in ms}))}"
        )


def load_artifact_model(blob: bytes, expected: ModelConfig | None = None) -> tuple[GPT, ModelConfig]:
    """Build the model an artifact describes and load its weights strictly (one-line errors on any mismatch)."""
    cfg, state, _ = read_artifact(blob)  # its shapes already checked against cfg
    if expected is not None and cfg != expected:
        diff = [
            f"{k}={v!r} (expected {getattr(expected, k)!r})" for k, v in vars(cfg).items() if v != getattr(expected, k)
        ]
        raise ArtifactError(f"artifact does not match the model config: {', '.join(diff[:4])}")
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model, cfg


def check_shapes(cfg: ModelConfig, state: dict, what: str) -> None:
    """Check a file's tensors against the model its config describes, built on the meta device (nothing allocated;
    seconds at 1,024 blocks), after a cheap count that refuses a config claiming more than the file holds."""
    have = sum(math.prod(t.shape) for t in state.values())
    least = cfg.vocab_size * cfg.model_dim + cfg.num_layers * 2 * cfg.model_dim**2  # the embedding; c_q, proj a block
    if least > have or 4 * cfg.num_layers > len(state):  # and a block has at least 4 tensors
        raise ArtifactError(
            f"{what}'s config describes {cfg.num_layers} blocks of width {cfg.model_dim} and a {cfg.vocab_size}-token "
            f"vocabulary, at least {least:,} parameters, but the file holds {have:,} in {len(state)} tensors: its "
            "config does not describe its tensors (corrupt or crafted)"
        )
    with torch.device("meta"):
        want = {n: tuple(t.shape) for n, t in build_model(cfg).state_dict().items()}
    got = {n: tuple(t.shape) for n, t in state.items()}
    bad = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
    if bad:
        raise ArtifactError(
            f"{what} tensors do not fit the model its config describes: "
            + ", ".join(f"{n} {got.get(n)} vs {want.get(n)}" for n in bad[:3])
            + " (file shape vs model shape)"
        )


PACK_STUB = 'import lzma,base64\nexec(lzma.decompress(base64.b85decode("{}")))\n'


def strip_docstrings(source: str) -> str:
    """A script with its docstrings and comments stripped (parsed and unparsed by ast): what pack_source packs. Any
    change here changes every packed size, and records/rules.py checks a log's packed size by this function."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        scope = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        if scope and ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def pack_source(source: str) -> str:
    """Self-extracting form of a script: strip_docstrings, lzma, base85, a two-line exec stub."""
    packed = lzma.compress(strip_docstrings(source).encode(), preset=9 | lzma.PRESET_EXTREME)
    return PACK_STUB.format(base64.b85encode(packed).decode())


def size_report(model_bytes: int, source: str, policy: str) -> dict:
    """Artifact size under a code-bytes policy: raw (the readable file) or packed (its self-extracting form)."""
    raw, packed = len(source.encode()), len(pack_source(source).encode())
    code = raw if policy == "raw" else packed
    return {
        "code_bytes": code,
        "code_bytes_raw": raw,
        "code_bytes_packed": packed,
        "model_bytes": model_bytes,
        "total_bytes": code + model_bytes,
        "limit": BYTE_LIMIT,
        "under_limit": code + model_bytes <= BYTE_LIMIT,
        "code_policy": policy,
    }


# =====================================================================================================================
# 9. SCORING: the byte rule of bits per byte (SPEC section 3), the score ledger, flat / sliding evaluation and
#    test-time training (SGD phases, LoRA)
# =====================================================================================================================

SPACE_PIECE = "\u2581"
PROOF_DOCS = 64  # val documents a tokenizer is proved on when no manifest records its hash


class ByteTables(NamedTuple):
    """The byte rule per token id (build_byte_tables); with CASEOPS=1 target_bytes (load_val_bytes) counts instead."""

    base: np.ndarray  # int16: the UTF-8 bytes of the piece without its leading space
    space: np.ndarray  # bool: the piece has a leading space
    boundary: np.ndarray  # bool: a control, unknown or unused id (no leading space is counted after it)
    target_bytes: np.ndarray | None = None  # CASEOPS=1: bytes of the target at each val position


def build_byte_tables(sp, vocab_size: int) -> ByteTables:
    """A target y after input x carries base[y] + (space[y] and not boundary[x]) bytes, summing to the UTF-8 length of
    the normalised text; ids past the tokenizer's vocab (embedding padding) are boundaries with 0 bytes."""
    n = int(sp.vocab_size())
    if vocab_size < n:
        raise UserError(f"VOCAB_SIZE={vocab_size} is smaller than the tokenizer's vocabulary ({n})")
    if sp.piece_to_id(SPACE_PIECE) == sp.unk_id() or sp.id_to_piece(sp.piece_to_id(SPACE_PIECE)) != SPACE_PIECE:
        raise UserError(
            'tokenizer has no standalone "\u2581" piece: spaces would be miscounted; retrain it with the '
            "official settings (data/tokenizer.py)"
        )
    base = np.zeros(vocab_size, dtype=np.int16)
    space = np.zeros(vocab_size, dtype=np.bool_)
    boundary = np.ones(vocab_size, dtype=np.bool_)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        piece = sp.id_to_piece(i)
        if sp.is_byte(i):
            base[i] = 1
        else:
            space[i] = piece.startswith(SPACE_PIECE)
            base[i] = len(piece.removeprefix(SPACE_PIECE).encode("utf-8"))
    return ByteTables(base, space, boundary)


def proof_documents(val_tokens: np.ndarray, max_docs: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the BOS-delimited documents prove_tokenizer checks: the first `max_docs` (0 = all), without
    the last one when there are others (a prefix of the stream may cut it inside a multi-byte character)."""
    starts = np.flatnonzero(np.asarray(val_tokens) == BOS_ID)
    ends = np.append(starts[1:], len(val_tokens))
    if len(starts) > 1:
        starts, ends = starts[:-1], ends[:-1]
    return (starts[:max_docs], ends[:max_docs]) if max_docs else (starts, ends)


def prove_tokenizer(
    sp, val_tokens: np.ndarray, *, tokenizer="the tokenizer", source="the val shards", max_docs=0, threads=1
) -> None:
    """Prove by content that `sp` made `val_tokens`, with no manifest: each proof document decoded and encoded again
    gives back its tokens with the right tokenizer (every document of the official val prefix), while a look-alike
    of the same vocab size decodes them into other text that re-encodes differently. UserError names both files."""
    starts, ends = proof_documents(val_tokens, max_docs)
    if not len(starts):
        raise UserError(f"{source}: no BOS (id {BOS_ID}) in the val tokens, so {tokenizer} cannot be proved on them")
    docs = [val_tokens[a + 1 : b].tolist() for a, b in zip(starts.tolist(), ends.tolist())]
    bad = [i for i, (want, got) in enumerate(zip(docs, sp.encode(sp.decode(docs), num_threads=threads))) if got != want]
    if bad:
        raise UserError(
            f"{tokenizer} is not the tokenizer {source} were made with: {len(bad)} of {len(docs)} val documents do "
            f"not re-encode to their tokens (first: document {bad[0]}); use the tokenizer the shards were made with"
        )


CASEOPS_OPERATORS = "\ue001\ue002\ue003\ue004"  # TITLE, ALLCAPS, CAPNEXT, ESC of the lossless case transform


def is_caseops_tokenizer(sp) -> bool:
    return all(sp.piece_to_id(op) != sp.unk_id() for op in CASEOPS_OPERATORS)


def load_val_bytes(h: Hyperparameters, val_glob: str, sp, tokenizer_path: str, n_tokens: int) -> np.ndarray | None:
    """CASEOPS=1: the original text's bytes carried by each val position, from the byte sidecars beside the val
    shards (the byte rule on the transformed pieces would count the case operators); None without CaseOps."""
    if bool(h.caseops) != is_caseops_tokenizer(sp):
        raise UserError(
            f"TOKENIZER_PATH={tokenizer_path} is a CaseOps tokenizer: set CASEOPS=1 (bytes come from the val byte "
            "sidecars)" if not h.caseops else f"CASEOPS=1 but TOKENIZER_PATH={tokenizer_path} has no case operator "
            "pieces: use the CaseOps tokenizer the data was exported with (data/tokenizer.py --caseops), or CASEOPS=0"
        )  # fmt: skip
    if not h.caseops:
        return None
    pattern = str(Path(val_glob).with_name(Path(val_glob).name.replace("_val_", VAL_BYTES_MARK, 1)))
    try:
        counts = load_token_split(pattern)
    except ShardError as e:
        raise UserError(f"CASEOPS=1: {e} (data/export.py --caseops writes the val byte sidecars)") from None
    if len(counts) != n_tokens:
        raise UserError(f"{pattern}: {len(counts)} byte counts for {n_tokens} val tokens (sidecars of other data)")
    return counts


def count_target_bytes(x: np.ndarray, y: np.ndarray, tables: ByteTables) -> int:
    """Bytes carried by targets y given inputs x (same shape), in int64 (by the tables' per-token rule)."""
    return int(tables.base[y].astype(np.int64).sum() + (tables.space[y] & ~tables.boundary[x]).sum())


def check_tokenizer_matches_data(sp, tokenizer_path: str, val_glob: str, val_tokens: np.ndarray) -> None:
    """A wrong tokenizer of the right vocab size would silently mis-count bytes, so it must have the sha256 the shards'
    manifest records (data/export.py) or, with none (the official download), pass prove_tokenizer on PROOF_DOCS docs."""
    manifest = Path(val_glob).parent / "manifest.json"
    try:
        expected = json.loads(manifest.read_text())["tokenizer"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        if np.count_nonzero(val_tokens == BOS_ID) < 2:
            return  # no complete document to prove it on (a tiny val split): nothing can be said by content
        return prove_tokenizer(sp, val_tokens, tokenizer=tokenizer_path, source=val_glob, max_docs=PROOF_DOCS)
    got = hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest()
    if got != expected:
        raise UserError(
            f"TOKENIZER_PATH={tokenizer_path} (sha256 {got[:12]}…) is not the tokenizer the shards in "
            f"{manifest.parent} were made with (sha256 {expected[:12]}…, {manifest})"
        )


def load_validation(h: Hyperparameters, tokenizer_path: str | None = None, val_glob: str | None = None):
    """(byte tables, val tokens ready to score): the val split loaded with its ids checked, the tokenizer checked
    against it, capped by VAL_MAX_TOKENS and truncated as the official loader does unless INCLUDE_TAIL=1."""
    import sentencepiece as spm

    tokenizer_path = tokenizer_path or h.tokenizer_path
    if not Path(tokenizer_path).is_file():
        raise UserError(f"TOKENIZER_PATH={tokenizer_path}: no such file (data/download.py fetches it)")
    val_glob = val_glob or os.path.join(h.data_path, VAL_GLOB)
    try:
        sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    except (RuntimeError, OSError) as e:  # sentencepiece's error for a file that is not a model
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"TOKENIZER_PATH={tokenizer_path}: not a SentencePiece model ({why})") from None
    tables = build_byte_tables(sp, h.model.vocab_size)
    val_tokens = load_token_split(val_glob, h.model.vocab_size)
    check_tokenizer_matches_data(sp, tokenizer_path, val_glob, val_tokens)
    val_bytes = load_val_bytes(h, val_glob, sp, tokenizer_path, len(val_tokens))
    if h.val_max_tokens:
        val_tokens = val_tokens[: h.val_max_tokens + 1]
    if h.ttt_mode == "sgd" and h.ttt_chunk_tokens >= len(val_tokens) - 1:
        raise UserError(f"TTT_CHUNK_TOKENS={h.ttt_chunk_tokens} holds the whole val split ({len(val_tokens) - 1} "
                        "targets): SGD TTT would never train; use a smaller chunk")  # fmt: skip
    val_tokens = prepare_val_tokens(val_tokens, h.effective_eval_seq_len, bool(h.include_tail))
    if val_bytes is not None:
        tables = tables._replace(target_bytes=val_bytes[: len(val_tokens)])
    return tables, val_tokens


# Target position t (1 <= t < N) is the prediction of val[t] from val[:t]; a window starting at s reads val[s:s+L],
# predicts positions s+1 .. s+L and scores the range [lo, hi) it is given. A ScoreLedger counts every score: TTT may
# train only on targets already scored (rules 3 and 4 of SPEC section 1), and no result exists unless every target
# was scored exactly once across all ranks.
TTT_LORA_BETAS = (0.0, 0.99)  # AdamW of the LoRA adapters (the record's)
TTT_LORA_KINDS = ("q", "v", "k", "mlp", "o")  # adapted maps after the logits', in the record's order (its draws')
PROGRESS_EVERY_S = 30.0  # at most one progress line this often while scoring
PAD_MODES = ("edge", "constant", "constant")  # a padding window of a plan: the last start, the empty range [0, 0)


@dataclass
class EvalResult:
    val_loss: float  # nats per target
    val_bpb: float
    targets: int
    bytes: int
    seconds: float  # the scoring loop only (TTT training included), not setup
    target_losses: np.ndarray | None = field(default=None, repr=False)  # CE per target position, when asked for
    updates: list[tuple[int, int]] = field(default_factory=list, repr=False)  # TTT: target ranges each step used


def prepare_val_tokens(tokens: np.ndarray, seq_len: int, include_tail: bool) -> np.ndarray:
    """The official truncation to ((N-1)//seq_len)*seq_len + 1 tokens (seq_len > 0), or all N with include_tail."""
    n = len(tokens)
    if n < seq_len + 1:
        raise UserError(
            f"the val split has {n} tokens, fewer than one window of {seq_len} + 1: use a longer val "
            f"split or a smaller EVAL_SEQ_LEN"
        )
    keep = n if include_tail else (n - 1) // seq_len * seq_len + 1
    return np.ascontiguousarray(tokens[:keep], dtype=np.uint16)


def sliding_plan(n: int, window: int, stride: int) -> np.ndarray:
    """Rows (starts, lo, hi), one column per window: its start and the target range [lo, hi) it scores, tiling
    positions 1..n-1 exactly once. Windows start every `stride` tokens; the first scores all its targets, later ones
    their last `stride`, and one final window ending at the last target scores whatever is left."""
    if stride <= 0:
        raise UserError(f"EVAL_STRIDE={stride}: the stride must be positive")
    if stride > window:
        raise UserError(
            f"EVAL_STRIDE={stride} is longer than the window EVAL_SEQ_LEN={window}: targets between "
            f"windows would go unscored; use a stride <= the window"
        )
    if n < window + 1:
        raise UserError(f"{n} val tokens are fewer than one window of {window} + 1")
    last = n - 1 - window
    starts = np.unique(np.append(np.arange(0, last + 1, stride), last)).astype(np.int64)
    hi = starts + window + 1
    return np.stack((starts, np.concatenate(([1], hi[:-1])), hi))


def document_spans(val_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target ranges [lo, hi) of the documents: each starts at a BOS (or at position 0) and runs to the next BOS,
    which it predicts as its last target, so the ranges tile 1..n-1 and no context crosses a document."""
    lo = np.concatenate(([1], np.flatnonzero(val_tokens[1:-1] == BOS_ID) + 2)).astype(np.int64)
    return lo, np.append(lo[1:], len(val_tokens))


def rank_share(n_items: int, d: Dist) -> slice:
    """This rank's contiguous share of n_items (every item owned by exactly one rank)."""
    return slice(n_items * d.rank // d.world_size, n_items * (d.rank + 1) // d.world_size)


class ScoreLedger:
    """Score sums (loss in float64) plus how many times each target position was scored: the legality guard."""

    def __init__(
        self,
        val_tokens: np.ndarray,
        tables: ByteTables,
        d: Dist,
        keep_losses: bool = False,
        progress: Callable[[str], None] | None = None,
        progress_every: float = PROGRESS_EVERY_S,
    ):
        bad = np.flatnonzero(val_tokens >= len(tables.base))
        if bad.size:
            raise UserError(
                f"val token id {val_tokens[bad[0]]} at position {bad[0]} is outside the vocabulary "
                f"(size {len(tables.base)}): the val shards do not belong to this tokenizer/model"
            )
        self.val, self.tables, self.d = val_tokens, tables, d
        self.counts = np.zeros(len(val_tokens), dtype=np.uint8)  # times this rank scored each position
        self.seen = np.zeros(len(val_tokens), dtype=np.uint8)  # times scored by any rank, as far as this rank knows
        self.loss = torch.zeros((), dtype=torch.float64, device=d.device)
        self.losses = np.zeros(len(val_tokens)) if keep_losses else None
        self.updates: list[tuple[int, int]] = []  # target ranges each TTT gradient used, in order
        self.progress, self.progress_every, self.done = progress, progress_every, 0
        self.t0 = self.last = time.perf_counter()

    def score(self, ce: torch.Tensor, first: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
        """Add per-token losses ce (B, L) of windows whose column 0 predicts position first[i]; only positions in
        [lo[i], hi[i]) count. Returns that (B, L) mask."""
        pos = first[:, None] + np.arange(ce.size(1))
        keep = (pos >= lo[:, None]) & (pos < hi[:, None])
        mask = torch.from_numpy(keep).to(ce.device)
        self.loss += torch.where(mask, ce.detach().double(), 0.0).sum()
        np.add.at(self.counts, pos[keep], 1)
        np.add.at(self.seen, pos[keep], 1)
        if self.losses is not None:
            self.losses[pos[keep]] = ce.detach().double().cpu().numpy()[keep]
        if self.progress is not None:
            self.report(int(keep.sum()))
        return mask

    def report(self, scored: int) -> None:
        """A progress line (this rank's share: fraction, elapsed, ETA) at most every progress_every seconds."""
        self.done, now = self.done + scored, time.perf_counter()
        if now - self.last >= self.progress_every:
            share = (len(self.val) - 1) / self.d.world_size
            frac, self.last = min(self.done / share, 1.0), now
            eta = f"{(now - self.t0) * (1 - frac) / frac:.0f}s" if frac > 0 else "?"
            self.progress(f"{frac:.1%} of {share:,.0f} targets, elapsed {now - self.t0:.0f}s, eta {eta}")

    def sync(self, lo: int, hi: int) -> None:
        """Learn from all ranks which positions in [lo, hi) were scored (every rank must call this)."""
        t = torch.from_numpy(self.counts[lo:hi].astype(np.int32)).to(self.d.device)
        self.seen[lo:hi] = all_reduce_(t).cpu().numpy().astype(np.uint8)

    def check_trainable(self, lo: int | np.ndarray, hi: int | np.ndarray) -> None:
        """The guard: a gradient may use targets [lo, hi) (one range, or arrays of them) only if each was already
        scored, exactly once. Position 0 is never scored, so lo < 1 fails too."""
        for a, b in zip(np.atleast_1d(lo).tolist(), np.atleast_1d(hi).tolist()):
            bad = np.flatnonzero(self.seen[a:b] != 1)
            if bad.size:
                p = a + int(bad[0])
                raise AssertionError(
                    f"TTT legality: an update would train on target position {p} (range [{a}, {b}))"
                    f" that has been scored {int(self.seen[p])} times"
                )
            self.updates.append((a, b))

    def result(self, seconds: float) -> EvalResult:
        """All-reduce; once every target is known scored exactly once, targets and bytes are the whole split's."""
        counts = all_reduce_(torch.from_numpy(self.counts).to(self.d.device)).cpu().numpy()
        bad = np.flatnonzero(counts != (np.arange(len(counts)) > 0))  # position 0 is context only, never a target
        if bad.size:
            p = int(bad[0])
            raise AssertionError(f"scoring covered target position {p} {int(counts[p])} times (must be exactly once)")
        loss = float(all_reduce_(self.loss.clone()).item())
        losses = None
        if self.losses is not None:
            losses = all_reduce_(torch.from_numpy(self.losses).to(self.d.device)).cpu().numpy()
        targets = len(self.val) - 1
        if self.tables.target_bytes is not None:  # CaseOps: the byte sidecar's count for every target position
            nbytes = int(self.tables.target_bytes[1 : len(self.val)].astype(np.int64).sum())
        else:
            nbytes = count_target_bytes(self.val[:-1], self.val[1:], self.tables)
        return EvalResult(loss / targets, loss / (math.log(2) * nbytes), targets, nbytes, seconds, losses, self.updates)


def _windows(vt: torch.Tensor, starts: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Inputs, targets and the mask of real targets (B, max length) of windows val[s : s+L]; columns past a window's
    length are padding (token 0), which a causal model never lets reach the columns before them."""
    cols = torch.arange(int(lengths.max()) + 1, device=vt.device)
    idx = torch.as_tensor(starts, device=vt.device)[:, None] + cols  # (B, L+1)
    real = cols <= torch.as_tensor(lengths, device=vt.device)[:, None]
    w = torch.where(real, vt[idx.clamp_(max=vt.numel() - 1)], 0)
    return w[:, :-1], w[:, 1:], real[:, 1:]


def _per_token_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: Hyperparameters, d: Dist) -> torch.Tensor:
    with amp_context(d.device, use_bf16(h, d.device)):
        return model(x, y, reduction="none").float()  # (B, L) from the soft-capped fp32 logits


def _score_windows(
    model: nn.Module, vt: torch.Tensor, ledger: ScoreLedger, plan: np.ndarray, h: Hyperparameters, d: Dist
) -> None:
    """Score the windows of `plan` (rows starts, lo, hi), h.effective_eval_seq_len long, h.eval_batch_seqs a forward."""
    B = h.eval_batch_seqs
    with torch.inference_mode():
        for i in range(0, plan.shape[1], B):
            # a short last batch is padded with rows that score nothing ([0, 0)): one shape, one compiled graph
            s, a, b = (np.pad(v, (0, B - len(v)), mode=m) for v, m in zip(plan[:, i : i + B], PAD_MODES))
            x, y, _ = _windows(vt, s, np.full(B, h.effective_eval_seq_len))
            ledger.score(_per_token_ce(model, x, y, h, d), s + 1, a, b)


def eval_sliding(
    model: nn.Module, val_tokens: np.ndarray, tables: ByteTables, h: Hyperparameters, d: Dist, **ledger_kw
) -> EvalResult:
    """Windows of h.effective_eval_seq_len every h.eval_stride tokens, each target scored once with >= window -
    stride tokens of context (SPEC section 7)."""
    plan = sliding_plan(len(val_tokens), h.effective_eval_seq_len, h.eval_stride)
    ledger = ScoreLedger(val_tokens, tables, d, **ledger_kw)
    vt = torch.from_numpy(val_tokens.astype(np.int64)).to(d.device)
    was_training = model.training
    model.eval()
    t0 = synced_clock(d)
    _score_windows(model, vt, ledger, plan[:, rank_share(plan.shape[1], d)], h, d)
    seconds = synced_clock(d) - t0
    model.train(was_training)
    return ledger.result(seconds)


def eval_flat(
    model: nn.Module, val_tokens: np.ndarray, tables: ByteTables, h: Hyperparameters, d: Dist, **ledger_kw
) -> EvalResult:
    """Non-overlapping windows of h.effective_eval_seq_len (with INCLUDE_TAIL, one last window ending at the final
    token scores the remainder): sliding with stride = window."""
    flat = dataclasses.replace(h, eval_stride=h.effective_eval_seq_len)
    return eval_sliding(model, val_tokens, tables, flat, d, **ledger_kw)


# The SGD shared by score-first TTT (_ttt_sgd) and the phases of phased TTT (_ttt_phase): every parameter, momentum
# TTT_MOMENTUM, the LR cosine over the chunks, gradients all-reduced over the ranks and clipped at TTT_GRAD_CLIP.
def _ttt_optimizer(net: nn.Module, lr: float, h: Hyperparameters) -> tuple[list[nn.Parameter], torch.optim.SGD]:
    params = list(net.requires_grad_(True).parameters())
    return params, torch.optim.SGD(params, lr=lr, momentum=h.ttt_momentum)


def _ttt_cosine_lr(lr: float, chunk: int, n_chunks: int) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * chunk / max(n_chunks - 1, 1)))


def _ttt_sgd_step(opt: torch.optim.SGD, params: list[nn.Parameter], h: Hyperparameters) -> None:
    flat = all_reduce_(torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in params]))
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p)
    if h.ttt_grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, h.ttt_grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _ttt_sgd(net: nn.Module, vt: torch.Tensor, ledger: ScoreLedger, h: Hyperparameters, d: Dist) -> None:
    """Score-first full-parameter TTT: per chunk of h.ttt_chunk_tokens targets, score its sliding windows (split over
    ranks), then, unless it is the last chunk, train on exactly those scored targets for h.ttt_epochs SGD steps."""
    window = h.effective_eval_seq_len
    plan = sliding_plan(vt.numel(), window, h.eval_stride or window)
    chunks = np.split(plan, np.flatnonzero(np.diff((plan[1] - 1) // h.ttt_chunk_tokens)) + 1, axis=1)
    params, opt = _ttt_optimizer(net, h.ttt_lr, h)
    for c, chunk in enumerate(chunks):
        _score_windows(net, vt, ledger, chunk[:, rank_share(chunk.shape[1], d)], h, d)
        lo, hi = int(chunk[1, 0]), int(chunk[2, -1])
        ledger.sync(lo, hi)
        if c == len(chunks) - 1 or h.ttt_epochs == 0:
            continue
        opt.param_groups[0]["lr"] = _ttt_cosine_lr(h.ttt_lr, c, len(chunks))
        seq_lo = np.arange(lo, hi, window)
        seq_lo = seq_lo[rank_share(len(seq_lo), d)]
        seq_hi = np.minimum(seq_lo + window, hi)
        ledger.check_trainable(seq_lo, seq_hi)
        for _ in range(h.ttt_epochs):
            with torch.enable_grad():
                for i in range(0, len(seq_lo), h.eval_batch_seqs):
                    a, b = seq_lo[i : i + h.eval_batch_seqs], seq_hi[i : i + h.eval_batch_seqs]
                    x, y, real = _windows(vt, a - 1, b - a)
                    ce = _per_token_ce(net, x, y, h, d)
                    (torch.where(real, ce, 0.0).sum() / (hi - lo)).backward()
            _ttt_sgd_step(opt, params, h)


def _lora_targets(model: GPT) -> list[tuple[str, int, nn.Module | None, int, int, int]]:
    """(kind, block, module, in, out, passes) of every adapted map in the record's order: the logits (module None), then
    Q, V, K, the MLP and O of each block that runs. O, as the MLP's, reads the module's normalised input and adds to
    its output (as the record's); a looped block has one adapter per pass (as the record's slot per virtual layer)."""
    order, dim = model.layer_order(), model.tok_emb.embedding_dim
    out = [("head", -1, None, dim, model.tok_emb.num_embeddings, 1)]
    for kind in TTT_LORA_KINDS:
        for i, b in enumerate(model.blocks):
            if i in order:
                m = {"q": b.attn.c_q, "v": b.attn.c_v, "k": b.attn.c_k, "mlp": b.mlp, "o": b.attn}[kind]
                n_in = m.in_features if isinstance(m, nn.Linear) else dim
                n_out = m.out_features if isinstance(m, nn.Linear) else m.proj.out_features
                out.append((kind, i, m, n_in, n_out, order.count(i)))
    return out


def _lora_init(model: GPT, n: int, rank: int, key: int) -> list[torch.Tensor]:
    """Fresh A tensors (passes, n, in, rank) of every target, U(-1/sqrt(in), 1/sqrt(in)) on the CPU from a generator
    seeded with `key`, drawn in the record's order and shapes (the logits', then each kind over the virtual layers in
    order, (n, rank, in) each): the values the record's BatchedTTTLoRA draws after torch.manual_seed(key)."""
    gen, order, targets = torch.Generator().manual_seed(key), model.layer_order(), _lora_targets(model)
    out = [torch.empty(passes, n, n_in, rank) for _, _, _, n_in, _, passes in targets]
    where = {(t[0], t[1]): j for j, t in enumerate(targets)}
    draws = [(where[kind, i], order[:s].count(i)) for kind in TTT_LORA_KINDS for s, i in enumerate(order)]
    for j, k in [(0, 0), *draws]:  # (target, pass)
        bound = 1.0 / math.sqrt(targets[j][3])
        out[j][k] = torch.empty(n, rank, targets[j][3]).uniform_(-bound, bound, generator=gen).transpose(1, 2)
    return out


def _lora_key(h: Hyperparameters, phase: int, what: str, index: int) -> int:
    """The seed of fresh adapters from SEED, the phase and their use (a chain or a batch); never the rank."""
    digest = hashlib.blake2b(f"ttt-lora {h.seed} {phase} {what} {index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def _attach_lora(
    model: GPT, docs: np.ndarray, h: Hyperparameters, a: list[torch.Tensor] | None = None, key: int = 0
) -> Iterator[list[nn.Parameter]]:
    """Per-document low-rank adapters hooked into `model` for a batch of len(docs) rows while the context lasts (it
    gives their parameters, pairs A, B). Row b gets out += alpha/r * (x_b @ A_b) @ B_b on every target (_lora_targets).
    B starts at zero, so a fresh adapter is the unadapted model; A is `a` (carried over from an earlier batch) or drawn
    from `key`."""
    n, r, scale, device = len(docs), h.ttt_lora_rank, h.ttt_lora_alpha / h.ttt_lora_rank, model.tok_emb.weight.device
    a = a if a is not None else [nn.Parameter(t.to(device)) for t in _lora_init(model, n, r, key)]
    params, handles, calls = [], [], {}

    def delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xs = x.reshape(n, -1, x.size(-1))  # (docs, tokens, in)
        return scale * torch.bmm(torch.bmm(xs, a.to(x.dtype)), b.to(x.dtype))

    for j, (_, _, mod, _, n_out, passes) in enumerate(_lora_targets(model)):
        b = nn.Parameter(torch.zeros(passes, n, r, n_out, device=device))
        params += [a[j], b]
        if mod is None:
            model.head_adapter = lambda x, a=a[j], b=b, v=n_out: delta(x, a[0], b[0]).view(*x.shape[:-1], v)
            continue

        def hook(mod: nn.Module, inputs: tuple, out: torch.Tensor, a=a[j], b=b, key=j) -> torch.Tensor:
            k = calls.get(key, 0)  # the pass of this block within the current forward
            calls[key] = k + 1
            return out + delta(inputs[0], a[k], b[k]).view(out.shape)

        handles.append(mod.register_forward_hook(hook))
    handles.append(model.register_forward_pre_hook(lambda m, args: calls.clear()))
    try:
        yield params
    finally:
        for handle in handles:
            handle.remove()
        model.head_adapter = None


def _lora_batch(net: GPT, fwd: nn.Module, vt: torch.Tensor, ledger: ScoreLedger, lo0: np.ndarray, hi0: np.ndarray,
                a: list[torch.Tensor] | None, key: int, h: Hyperparameters, d: Dist) -> None:  # fmt: skip
    """One batch of documents (target ranges [lo0, hi0), one row each): each step scores the next h.ttt_lora_chunk
    targets of every document with its context (that document only, at most one window back), then takes one AdamW
    step on exactly those targets of the documents that have more to score (as the record, never on a document's
    last chunk). `fwd` is `net` or its compiled form (the adapters hook into `net`). A given `a` is trained in place."""
    window, chunk = h.effective_eval_seq_len, h.ttt_lora_chunk
    with _attach_lora(net, lo0, h, a, key) as params, _lora_masks(net):
        opt = torch.optim.AdamW(params, lr=h.ttt_lora_lr, betas=TTT_LORA_BETAS, eps=1e-10, weight_decay=h.ttt_lora_wd,
                                fused=True)  # fmt: skip
        for k in range(-(-int((hi0 - lo0).max()) // chunk)):
            lo = np.minimum(lo0 + k * chunk, hi0)
            hi = np.minimum(lo + chunk, hi0)
            starts = np.maximum(lo0 - 1, hi - 1 - window)  # the window ends at the chunk's last target
            x, y, _ = _windows(vt, starts, np.maximum(hi - 1 - starts, 1))
            with torch.enable_grad():
                ce = _per_token_ce(fwd, x, y, h, d)
                keep = ledger.score(ce, starts + 1, lo, hi)  # scored with the adapters as they are, before the step
                more = hi < hi0
                if not more.any():
                    break
                ledger.check_trainable(lo[more], hi[more])
                mean = torch.where(keep, ce, 0.0).sum(1) / keep.sum(1).clamp(min=1)
                torch.where(torch.from_numpy(more).to(ce.device), mean, 0.0).sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)


def _phase_pieces(x: np.ndarray, window: int) -> np.ndarray:
    """Starts of the pieces attention is cut into in a packed row of tokens (the record's varlen cut): at the row's
    start, at every BOS, and every `window` tokens after each of those."""
    bounds = np.union1d([0], np.flatnonzero(x == BOS_ID))
    return np.concatenate([np.arange(s, e, window) for s, e in zip(bounds, np.append(bounds[1:], len(x)))])


def _deal_longest_first(costs: np.ndarray, workers: int) -> np.ndarray:
    """The worker of each item, dealt longest first to the least loaded so far (the lowest on ties): LPT balancing."""
    costs = np.asarray(costs, dtype=np.float64)
    load, owner = [0.0] * workers, np.empty(len(costs), dtype=np.int64)
    for i in np.argsort(-costs, kind="stable").tolist():
        owner[i] = min(range(workers), key=lambda w: (load[w], w))
        load[owner[i]] += costs[i]
    return owner


def _piece_masks(net: GPT, row: torch.Tensor, cuts: np.ndarray) -> tuple:
    """The attention masks of a row whose attention is cut at `cuts` (piece starts): a varlen kernel's offsets where
    the attention kind takes them (the CUDA backend chosen, else the reference loop over pieces: no dense mask), else
    a dense mask (causal, within a piece, and the local blocks' own window)."""
    L, device = row.size(1), row.device
    if net.cfg.attn in VARLEN_ATTNS:
        backend = ATTENTION.backend if ATTENTION.backend in ("fa3", "torch") and row.is_cuda else "reference"
        bounds = np.append(cuts, L)
        cu = torch.as_tensor(bounds, dtype=torch.int32, device=device)
        seg = Segments(cu, torch.tensor(len(cuts), device=device), int(np.diff(bounds).max()), backend)
        return seg, seg
    piece = torch.from_numpy(np.repeat(np.arange(len(cuts)), np.diff(np.append(cuts, L)))).to(device)
    pos = torch.arange(L, device=device)
    mask = ((pos[:, None] >= pos[None, :]) & (piece[:, None] == piece[None, :]))[None, None]
    return mask, (mask & net.attn_mask(row, local=True)) if net.window else mask


def _ttt_phase(net: GPT, vt: torch.Tensor, ledger: ScoreLedger, lo: np.ndarray, hi: np.ndarray, h: Hyperparameters,
               d: Dist) -> None:  # fmt: skip
    """A phase of phased TTT, the record's global SGD on documents already scored (target ranges [lo, hi), in this
    order), joined into one stream, each from its BOS to its last target (the next document's BOS, so each join is a
    BOS -> BOS pair that is no val target). The stream is cut into chunks of TTT_CHUNK_TOKENS, every chunk but the
    last (never trained on, as the record) into rows of the eval length (a shorter remainder is dropped), and each
    h.eval_batch_seqs rows are one SGD step on the mean loss of their targets (_phase_step)."""
    ledger.sync(0, len(ledger.val))  # which targets any rank has scored
    window, size = h.effective_eval_seq_len, h.ttt_chunk_tokens
    at = np.concatenate(([0], np.cumsum(hi - lo + 1)))  # where each document starts in the stream
    stream = torch.cat([vt[a - 1 : b] for a, b in zip(lo.tolist(), hi.tolist())]) if len(lo) else vt[:0]
    tokens = stream.cpu().numpy()
    params, opt = _ttt_optimizer(net, h.ttt_phase_lr, h)
    n_chunks, rows = -(-(len(stream) - 1) // size), size // window
    for c in range(n_chunks - 1 if rows else 0):
        opt.param_groups[0]["lr"] = _ttt_cosine_lr(h.ttt_phase_lr, c, n_chunks)
        for _ in range(h.ttt_phase_epochs):
            for s in range(0, rows, h.eval_batch_seqs):
                u, v = c * size + s * window, c * size + min(s + h.eval_batch_seqs, rows) * window
                _phase_step(net, stream[u : v + 1], tokens[u:v], u, at, lo, ledger, h, d)
                _ttt_sgd_step(opt, params, h)
    net.requires_grad_(False)


def _phase_step(net: GPT, part: torch.Tensor, x: np.ndarray, u: int, at: np.ndarray, lo: np.ndarray,
                ledger: ScoreLedger, h: Hyperparameters, d: Dist) -> None:  # fmt: skip
    """This rank's share of one phase step on stream[u : u + len(x) + 1] (`part`; `x` its inputs on the host): the
    gradient of (its targets' summed loss) / (the step's target count), accumulated into the parameters. The rows
    are one packed sequence cut as the record's varlen cut (_phase_pieces); the pieces are dealt to the ranks longest
    first, each with the token before it when SmearGate reads one, so the gradient does not depend on the world size."""
    cuts = _phase_pieces(x, h.effective_eval_seq_len)
    ends = np.append(cuts[1:], len(x))
    mine = np.flatnonzero(_deal_longest_first(ends - cuts, d.world_size) == d.rank)
    if not len(mine):
        return
    spans = []  # (start, end, trained) of the row's pieces in x
    for k in mine.tolist():
        a, b = int(cuts[k]), int(ends[k])
        if a > 0 and x[a] != BOS_ID and (not spans or spans[-1][1] != a):  # SmearGate reads the token before
            spans.append((a - 1, a, False))
        spans.append((a, b, True))
    index = torch.from_numpy(np.concatenate([np.arange(a, b) for a, b, _ in spans])).to(part.device)
    row, target = part[index][None], part[index + 1][None]
    for a, b in zip(cuts[mine].tolist(), ends[mine].tolist()):  # the val targets this step trains on
        docs = np.arange(np.searchsorted(at, u + a, "right") - 1, np.searchsorted(at, u + b, "left"))
        s, e = np.maximum(u + a, at[docs]), np.minimum(u + b, at[docs + 1] - 1)  # each document's last token
        shift, ok = lo[docs] - at[docs], s < e  # ... predicts the next one's BOS: no val target
        ledger.check_trainable(shift[ok] + s[ok], shift[ok] + e[ok])
    masks = _piece_masks(net, row, np.cumsum([0] + [b - a for a, b, _ in spans[:-1]]))
    with _masks_of(net, masks), torch.enable_grad():
        ce = _per_token_ce(net, row, target, h, d)[0]
        keep = torch.from_numpy(np.concatenate([np.full(b - a, t) for a, b, t in spans])).to(ce.device)
        (torch.where(keep, ce, 0.0).sum() / len(x)).backward()


def _ttt_queue(lo: np.ndarray, hi: np.ndarray, h: Hyperparameters) -> tuple[list[np.ndarray], np.ndarray]:
    """Batches of h.ttt_lora_docs documents in the order they are processed, each in its row order, and each
    document's place in the order the batches were cut from. TTT_ORDER=length (the record's): the documents sorted
    by length (ties in stream order) are cut into batches from the shortest, and the batch holding the longest
    document goes first (ties in cut order); a batch's rows stay shortest first. stream: consecutive documents."""
    n, size = len(lo), h.ttt_lora_docs
    order = np.argsort(hi - lo, kind="stable") if h.ttt_order == "length" else np.arange(n)
    batches = [order[i : i + size] for i in range(0, n, size)]
    if h.ttt_order == "length":
        longest = np.array([-(hi - lo)[b].max() for b in batches])
        batches = [batches[i] for i in np.argsort(longest, kind="stable")]
    return batches, np.argsort(order)  # the inverse permutation of `order`


def _batch_cost(n_targets: np.ndarray, h: Hyperparameters) -> float:
    """Token-rows a batch of documents (their target counts) runs through the model: its rows at each step's width."""
    steps = np.arange(1, -(-int(n_targets.max()) // h.ttt_lora_chunk) + 1)
    return len(n_targets) * float(np.minimum(steps * h.ttt_lora_chunk, h.effective_eval_seq_len).sum())


def _ttt_plan(sizes: list[int], costs: list[float], h: Hyperparameters) -> list[tuple[list[list[int]], int]]:
    """The record's schedule played with a cost model (_batch_cost) instead of clocks, so it is the same on any number
    of GPUs: TTT_LORA_CHAINS workers each take the next batch of the queue when free (ties to the lower worker); one
    chain is the record on one GPU. TTT_MODE=phased: boundaries at TTT_PHASES equal steps up to min(TTT_PHASE_DOCS,
    documents); once the finished documents reach the next one, every worker stops after its batch in hand and the
    phase trains on that many finished documents (a phase due when no batch is left is left out). Returns the segments
    between phases: (each chain's batches, in order; the documents the phase after it trains on, 0 for none)."""
    k = h.ttt_lora_chains
    limit = min(sum(sizes), h.ttt_phase_docs) if h.ttt_mode == "phased" else 0
    bounds = [limit * (p + 1) // h.ttt_phases for p in range(h.ttt_phases)] if limit else []
    plan, done, q, start = [], 0, 0, 0.0
    while True:  # a segment: the workers take batches until every one has stopped, for a phase or at the end
        chains, free, hand, working, pausing = [[] for _ in range(k)], [start] * k, [-1] * k, set(range(k)), False
        while working:
            w = min(working, key=lambda w: (free[w], w))  # the next to be free: its batch in hand is done
            if hand[w] >= 0 and len(plan) < len(bounds):
                done += sizes[hand[w]]
                pausing = pausing or (done >= bounds[len(plan)] and q < len(sizes))
            if pausing or q == len(sizes):
                working.remove(w)
                continue
            chains[w].append(q)
            hand[w], free[w], q = q, free[w] + costs[q], q + 1
        plan.append((chains, bounds[len(plan)] if pausing else 0))
        if not pausing:
            return plan
        start = max(free)


def _ttt_lora(net: GPT, vt: torch.Tensor, ledger: ScoreLedger, h: Hyperparameters, d: Dist, fwd: nn.Module) -> None:
    """LoRA TTT, the record's procedure: documents (split at BOS) in batches of h.ttt_lora_docs (_ttt_queue), scored
    and adapted per document (_lora_batch) along chains of batches (_ttt_plan); TTT_MODE=phased: between segments
    of the plan the model itself trains on documents already scored (_ttt_phase). Along a chain A carries over from
    batch to batch (TTT_LORA_WARM_A; B and AdamW start afresh each batch) and starts fresh after each phase; a batch
    of another size (the short one) gets fresh A and leaves its chain's alone, as the record. Chains go to ranks
    longest first; every draw is seeded by SEED, the phase and the chain or batch (_lora_key): the score depends on
    TTT_LORA_CHAINS, never on the world size. All ranks meet at each phase. `fwd`: `net` or its compiled form."""
    lo, hi = document_spans(vt.cpu().numpy())
    batches, place = _ttt_queue(lo, hi, h)
    costs = [_batch_cost(hi[b] - lo[b], h) for b in batches]
    net.requires_grad_(False)
    scored = []
    for p, (chains, phase_docs) in enumerate(_ttt_plan([len(b) for b in batches], costs, h)):
        owner = _deal_longest_first(np.array([sum(costs[q] for q in c) for c in chains]), d.world_size)
        for c in np.flatnonzero(owner == d.rank).tolist():
            full = [len(batches[q]) == h.ttt_lora_docs for q in chains[c]]
            warm = None  # the chain's A, trained in place batch after batch
            if h.ttt_lora_warm_a and any(full):  # drawn at the phase's start, as the record's reusable adapters
                key = _lora_key(h, p, "chain", c)
                warm = [nn.Parameter(t.to(vt.device)) for t in _lora_init(net, h.ttt_lora_docs, h.ttt_lora_rank, key)]
            for q, is_full in zip(chains[c], full):
                _lora_batch(net, fwd, vt, ledger, lo[batches[q]], hi[batches[q]], warm if is_full else None,
                            _lora_key(h, p, "batch", q), h, d)  # fmt: skip
        scored += [batches[q] for c in chains for q in c]
        if phase_docs:
            docs = np.concatenate(scored)
            docs = docs[np.argsort(place[docs], kind="stable")][:phase_docs]
            _ttt_phase(net, vt, ledger, lo[docs], hi[docs], h, d)


@contextlib.contextmanager
def _masks_of(net: GPT, masks: tuple):
    """Within (never nested), `net` attends with `masks` whatever its input (an attribute shadowing its method)."""
    net.attention_masks = lambda idx: masks
    try:
        yield
    finally:
        del net.attention_masks


def _lora_masks(net: GPT) -> contextlib.AbstractContextManager:
    """A LoRA row holds one document (padding after it), so attention kinds the varlen path serves run plain causal
    (None, None: the record's dense flash call); windowed and linear attention keep the model's masks."""
    return _masks_of(net, (None, None)) if net.cfg.attn in VARLEN_ATTNS else contextlib.nullcontext()


def compile_lora(net: GPT, h: Hyperparameters, d: Dist, backend: str = "inductor") -> nn.Module:
    """The LoRA TTT forward compiled with dynamic shapes (a batch's rows and width vary; the adapters are new
    tensors each batch, hooks that read them do not recompile), warmed up on random tokens at the narrowest and the
    widest step before any scoring clock starts, as the record compiles its TTT forward."""
    fwd = torch.compile(net, dynamic=True, backend=backend)
    net.requires_grad_(False)
    gen = torch.Generator().manual_seed(h.seed)
    for width in (h.ttt_lora_chunk, h.effective_eval_seq_len):
        ids = torch.randint(0, net.tok_emb.num_embeddings, (h.ttt_lora_docs, width + 1), generator=gen).to(d.device)
        with _attach_lora(net, np.arange(h.ttt_lora_docs), h), _lora_masks(net), torch.enable_grad():
            _per_token_ce(fwd, ids[:, :-1], ids[:, 1:], h, d).mean().backward()
    return fwd


def eval_ttt(
    model: nn.Module, val_tokens: np.ndarray, tables: ByteTables, h: Hyperparameters, d: Dist, **ledger_kw
) -> EvalResult:
    """Score-first test-time training (h.ttt_mode sgd, lora or phased) on a copy of the model; the caller's is
    untouched. On CUDA (COMPILE) the LoRA forward is compiled before the clock starts."""
    if h.ttt_mode not in ("sgd", "lora", "phased"):
        raise UserError(f"TTT_MODE={h.ttt_mode!r}: eval_ttt needs sgd, lora or phased")
    if h.ttt_mode != "sgd" and h.ttt_lora_chunk > h.effective_eval_seq_len:
        raise UserError(f"TTT_LORA_CHUNK={h.ttt_lora_chunk} is longer than the window {h.effective_eval_seq_len}")
    ledger = ScoreLedger(val_tokens, tables, d, **ledger_kw)
    net = copy.deepcopy(getattr(model, "_orig_mod", model)).eval()
    vt = torch.from_numpy(val_tokens.astype(np.int64)).to(d.device)
    fwd = compile_lora(net, h, d) if h.ttt_mode != "sgd" and compile_enabled(h, d) else net
    t0 = synced_clock(d)
    if h.ttt_mode == "sgd":
        _ttt_sgd(net, vt, ledger, h, d)
    else:
        _ttt_lora(net, vt, ledger, h, d, fwd)
    return ledger.result(synced_clock(d) - t0)


def score(
    model: nn.Module,
    label: str,
    val_tokens: np.ndarray,
    tables: ByteTables,
    h: Hyperparameters,
    d: Dist,
    log: Logger,
    mode: str = "flat",
) -> tuple[str, EvalResult]:
    """Score a model flat, sliding or with TTT (mode), logging the score line, its _exact twin and progress lines."""
    progress = (lambda m: log(f"progress {label}: {m}")) if d.is_main else None
    fn = {"flat": eval_flat, "sliding": eval_sliding, "ttt": eval_ttt}[mode]
    res = fn(model, val_tokens, tables, h, d, progress=progress)
    for line in score_lines(label, res, f" stride:{h.eval_stride}" if mode == "sliding" else ""):
        log(line)
    return label, res


def score_lines(label: str, res: EvalResult, extra: str = "", exact_extra: str = "") -> tuple[str, str]:
    """The conventional score line (4 decimals, what records parse) and its _exact twin (8 decimals)."""
    return (
        f"{label} val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f}{extra} eval_time:{1000 * res.seconds:.0f}ms",
        f"{label}_exact val_loss:{res.val_loss:.8f} val_bpb:{res.val_bpb:.8f}{exact_extra}",
    )


def score_phase(
    blob: bytes, h: Hyperparameters, d: Dist, compile_on: bool, tables: ByteTables, val_tokens, log: Logger
) -> list:
    """Load the artifact strictly and score it flat, sliding and (TTT_MODE) with test-time training."""
    qmodel = load_artifact_model(blob, h.model)[0].to(d.device).eval()
    qmodel.set_loops(h.model.effective_eval_loops)
    scored = qmodel
    if compile_on:  # compile on random tokens (never val) before any scoring clock starts
        scored = torch.compile(qmodel, dynamic=False)
        with torch.inference_mode(), amp_context(d.device, use_bf16(h, d.device)):  # the same guards as scoring
            shape = (h.eval_batch_seqs, h.effective_eval_seq_len + 1)
            warm = torch.randint(0, h.model.vocab_size, shape, device=d.device)
            scored(warm[:, :-1], warm[:, 1:], reduction="none")
    tag_ = "final_int8_zlib" if h.preset == "baseline" else f"final_int{h.quant_matrix_bits}"  # the official name
    results = [score(scored, f"{tag_}_roundtrip", val_tokens, tables, h, d, log)]
    if h.eval_stride:
        results.append(score(scored, f"{tag_}_sliding_window", val_tokens, tables, h, d, log, "sliding"))
    if h.ttt_mode != "off":
        results.append(score(qmodel, f"{tag_}_ttt", val_tokens, tables, h, d, log, "ttt"))
    return results


def check_finite(scored: list[tuple[str, EvalResult]], h: Hyperparameters) -> None:
    """A run whose score is not a number fails (exit 2, no run_summary), naming the stage that went non-finite."""
    for name, r in scored:
        if not (math.isfinite(r.val_loss) and math.isfinite(r.val_bpb)):
            stage = (f"test-time training (TTT_MODE={h.ttt_mode}: lower its learning rate)" if name.endswith("_ttt")
                     else "trained float model" if name == "final_float" else "quantised artifact")  # fmt: skip
            raise UserError(f"{name} val_loss:{r.val_loss} val_bpb:{r.val_bpb}: the {stage} scores non-finite; "
                            "no run_summary is written")  # fmt: skip


# =====================================================================================================================
# 10. RUN: the log header, the memory check before any GPU time, output checks, run() wiring the phases, main()
# =====================================================================================================================


def describe_device(d: Dist) -> str:
    if d.device.type == "cuda":
        props = torch.cuda.get_device_properties(d.device)
        return f"{props.name} x{d.world_size} ({props.total_memory / 2**30:.0f} GiB each)"
    return f"cpu {platform.processor() or platform.machine()} threads:{torch.get_num_threads()} x{d.world_size}"


def git_commit() -> str:
    """HEAD of the repository around this file when the file is tracked there and byte-identical to HEAD's copy, else
    "unknown": a copied or edited script run inside another repository must not claim that repository's commit."""
    here = Path(__file__).resolve()

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=here.parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        top, head = git("rev-parse", "--show-toplevel"), git("rev-parse", "HEAD")
        if not (top and head):
            return "unknown"
        committed = git("rev-parse", f"HEAD:{here.relative_to(Path(top).resolve()).as_posix()}")
        return head if committed and committed == git("hash-object", str(here)) else "unknown"
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown"


def log_header(log: Logger, src: bytes, h: Hyperparameters, d: Dist, accum_steps: int) -> dict:
    """The log opens with the exact source that ran (a records tool compares it to the submitted file), then the
    environment and every setting. Returns the environment, which the run summary repeats."""
    log(f"==== train_gpt.py source sha256:{hashlib.sha256(src).hexdigest()} bytes:{len(src)} ====", console=False)
    log(src.decode("utf-8").removesuffix("\n"), console=False)
    log("==== end of source ====", console=False)
    env = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda or "none")
    env.update(device=describe_device(d), git_commit=git_commit())
    log(f"run_id:{h.run_id}")
    log(f"python:{env['python']} torch:{env['torch']} cuda:{env['cuda']}")
    log(f"device:{env['device']}")
    log(f"world_size:{d.world_size} grad_accum_steps:{accum_steps}")
    log(f"git_commit:{env['git_commit']}")
    for name, value in h.flat().items():
        log(f"{name}:{value}")
    return env


# Activations saved for the backward, measured on CPU under bf16 autocast in eager mode at the default shape: 667 KB
# per token over 17 virtual layers of width 512, about 76 bytes per (token, virtual layer, model dim); the LoRA TTT
# backward saves about as much (0.88x). Compiled graphs save fewer (fused element-wise chains): COMPILED_ACT_FRACTION
# is an estimate, to be replaced by a GPU measurement.
ACT_BYTES = 76
COMPILED_ACT_FRACTION = 0.5
INFER_ACT_BYTES = 48  # per (token, model dim) live at once without autograd: lanes, x0, a block's q/k/v/MLP (estimate)
LOGIT_BYTES = 12  # per (token, vocab entry): fp32 logits, their soft-capped copy, their gradient
LORA_STATE_BYTES = 16  # per adapter parameter: fp32 value, gradient, AdamW's two moments
MEMORY_OVERHEAD, CONTEXT_BYTES = 1.15, 1 << 30  # allocator caching and fragmentation; the CUDA context
MEMORY_REMEDY = {  # what to change when a phase does not fit, by phase
    "train": "raise GRAD_ACCUM_STEPS (now {accum}) or lower TRAIN_BATCH_TOKENS",
    "ramp": "set LOOP_RAMP_FRAC=0 (the ramp runs the plain and the looped stack together), raise GRAD_ACCUM_STEPS "
    "(now {accum}) or lower TRAIN_BATCH_TOKENS",
    "looped": "raise GRAD_ACCUM_STEPS (now {accum}), lower TRAIN_BATCH_TOKENS or NUM_LOOPS",
    "score": "lower EVAL_BATCH_SEQS (now {eval_batch_seqs})",
    "ttt_lora": "lower TTT_LORA_DOCS (now {ttt_lora_docs}) or TTT_LORA_RANK",
    "ttt_sgd": "lower EVAL_BATCH_SEQS (now {eval_batch_seqs})",
}


def memory_estimate(h: Hyperparameters, world_size: int, accum: int, compiled: bool, bf16: bool,
                    attention: str = "sdpa", scores: bool = False) -> dict[str, dict[str, float]]:  # fmt: skip
    """Bytes per GPU of each phase that runs (train, ramp, looped, score, ttt_lora, ttt_sgd): its activations, logits,
    weights and optimiser state, adapters, and the dense attention mask where SDPA takes one (`attention` is the
    backend; a varlen kernel needs none), with overheads, in "total". scores: the attention also materialises its
    fp32 (B, H, T, T) scores, kept for the backward in every layer (SDPA's math kernel with a mask: the CPU path)."""
    m = h.model
    with torch.device("meta"):
        model = build_model(m)
    n_params = sum(p.numel() for p in model.parameters())
    act_bytes = ACT_BYTES * (1 if bf16 else 2)
    dense = m.doc_isolation and attention == "sdpa" or model.window > 0  # a (B, 1, T, T) mask, and its bias per layer

    def phase(rows: int, T: int, layers: int, train: bool, fraction: float = 1.0, extra: float = 0.0) -> dict:
        tokens = rows * T
        act = tokens * layers * m.model_dim * act_bytes * fraction if train else tokens * m.model_dim * INFER_ACT_BYTES
        mask = rows * T * T * (1 + 2 * (layers if train else 1)) if dense else 0  # bool mask; bf16 bias per layer
        mask += rows * m.num_heads * T * T * 4 * (layers if train else 1) if scores else 0
        parts = {"activations": act, "logits": tokens * m.vocab_size * LOGIT_BYTES, "attention_mask": mask,
                 "weights_and_optimisers": n_params * STATE_BYTES, "adapters": extra}  # fmt: skip
        return {**parts, "total": sum(parts.values()) * MEMORY_OVERHEAD + CONTEXT_BYTES}

    rows = max(h.train_batch_tokens // (world_size * accum * h.train_seq_len), 1)
    frac = COMPILED_ACT_FRACTION if compiled else 1.0
    plain, looped = len(model.layer_order(1)), len(model.layer_order(m.num_loops))
    out = {"train": phase(rows, h.train_seq_len, plain, True, frac)}
    if m.num_loops > 1:
        out["looped"] = phase(rows, h.train_seq_len, looped, True, frac)
        if h.loop_ramp_frac > 0:
            out["ramp"] = phase(rows, h.train_seq_len, plain + looped, True, frac)  # 11 + 17 layers at the frontier
    T, eval_order = h.effective_eval_seq_len, model.layer_order(m.effective_eval_loops)
    eval_layers = len(eval_order)
    out["score"] = phase(h.eval_batch_seqs, T, eval_layers, False)
    if h.ttt_mode in ("lora", "phased"):  # every row as long as a window: the batch is padded to its longest
        blocks = [model.blocks[i] for i in eval_order]
        per_doc = sum(sum(t.in_features + t.out_features for t in (b.attn.c_q, b.attn.c_k, b.attn.c_v, b.attn.proj))
                      + 2 * m.model_dim for b in blocks) + m.model_dim + m.vocab_size  # fmt: skip
        adapters = h.ttt_lora_docs * h.ttt_lora_rank * per_doc * LORA_STATE_BYTES
        out["ttt_lora"] = phase(h.ttt_lora_docs, T, eval_layers, True, frac, adapters)
    if h.ttt_mode in ("sgd", "phased"):  # sgd: EVAL_BATCH_SEQS windows per rank; phased: a share of them
        rows = h.eval_batch_seqs if h.ttt_mode == "sgd" else -(-h.eval_batch_seqs // world_size)
        out["ttt_sgd"] = phase(rows, T, eval_layers, True)
    return out


def check_memory(h: Hyperparameters, d: Dist, accum: int, gpu_bytes: int | None = None,
                 ram_bytes: int | None = None) -> dict | None:  # fmt: skip
    """Refuse a config any of whose phases is estimated not to fit, before any work, naming the phase and what to
    change (MEMORY_CHECK=0: log only). On CUDA (or given `gpu_bytes`) against the GPU's memory; on CPU against this
    machine's memory (or `ram_bytes`) shared by its WORLD_SIZE processes, float32, eager, SDPA's math kernel with its
    scores. Returns the GPU estimate (None on CPU)."""
    if d.device.type == "cuda" or gpu_bytes is not None:
        compiled = h.compile != 0  # -1: on for CUDA
        est = memory_estimate(h, d.world_size, accum, compiled, use_bf16(h, torch.device("cuda")), ATTENTION.backend)
        have, where = gpu_bytes or torch.cuda.get_device_properties(d.device).total_memory, "GPU"
        room = f"the GPU has {have / 2**30:.0f} GiB"
    else:
        est = memory_estimate(h, d.world_size, accum, bool(h.compile > 0), False, "sdpa", scores=True)
        ram = ram_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        have, where = ram // max(d.world_size, 1), "process"
        room = f"this process's share of the machine's memory is {have / 2**30:.0f} GiB"
    name, worst = max(est.items(), key=lambda kv: kv[1]["total"])
    if worst["total"] > have and h.memory_check:
        gib = {k: f"{v / 2**30:.0f}" for k, v in worst.items()} | {"total": f"{worst['total'] / 2**30:.1f}"}
        remedy = MEMORY_REMEDY[name].format(accum=accum, **h.flat())
        raise UserError(
            f"the {name} phase needs about {gib['total']} GiB per {where} (activations {gib['activations']}, logits "
            f"{gib['logits']}, attention mask {gib['attention_mask']}, adapters {gib['adapters']}) but {room}: "
            f"{remedy}, or keep COMPILE and AUTOCAST_BF16 on (MEMORY_CHECK=0 runs anyway)"
        )
    return est if where == "GPU" else None


def check_outputs(h: Hyperparameters) -> str:
    """Before any work: the log is new, the artifact and its checkpoint replace nothing unless OVERWRITE=1 (and
    never a file that is not an artifact), and both folders can be written. Returns the artifact path."""
    log_path = os.path.join(h.log_dir, f"{h.run_id}.txt")
    if os.path.exists(log_path):
        raise UserError(f"RUN_ID={h.run_id}: {log_path} already exists; choose a new RUN_ID (one log per run)")
    artifact = artifact_path_of(h)
    for path in (artifact, str(Path(artifact).with_suffix(".ckpt.pt"))):
        if Path(path).is_dir() or Path(path).exists() and path == artifact and not is_artifact(path):
            raise UserError(f"ARTIFACT_PATH={artifact}: {path} exists and is not an artifact; refusing to replace it")
        if Path(path).exists() and not h.overwrite:
            raise UserError(f"ARTIFACT_PATH={artifact}: {path} exists; choose another path or set OVERWRITE=1")
    if h.stop_after and resume_path(h).exists() and not h.overwrite:
        raise UserError(f"STOP_AFTER: {resume_path(h)} exists; choose another ARTIFACT_PATH or set OVERWRITE=1")
    for folder, name in ((h.log_dir, "LOG_DIR"), (str(Path(artifact).parent), "ARTIFACT_PATH")):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{name}: cannot create {folder} ({e.strerror})") from None
        if not os.access(folder, os.W_OK):
            raise UserError(f"{name}: {folder} is not writable")
    return artifact


def run(h: Hyperparameters, d: Dist) -> None:
    torch.manual_seed(h.seed)
    np.random.seed(h.seed)
    if d.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accum = grad_accum_steps(h, d)
    attention = select_attention(h, d)  # before any model is built or compiled
    use_attention(attention)
    memory = check_memory(h, d, accum)
    check_outputs(h)  # every check that needs no model runs before the log exists: a failed start burns no RUN_ID
    tables, val_tokens = load_validation(h)
    loader = train_loader(h, d)
    log = open_log(h, d)
    source = Path(__file__).read_bytes()  # read once: the log and the size line describe the same bytes
    try:
        environment = log_header(log, source, h, d, accum)
        log(f"attention_backend:{attention.backend} ({attention.reason})")
        if memory is not None:
            log("memory_estimate " + " ".join(f"{k}:{v['total'] / 2**30:.1f}GiB" for k, v in memory.items()))
        base, compile_on, stats = train_phase(h, d, accum, loader, tables, val_tokens, log)
        if stats.stop_reason == "stop_after":
            log("run_stopped")
            return
        scored = [score(base, "final_float", val_tokens, tables, h, d, log)]
        check_finite(scored, h)
        hessians, stats.hessians = stats.hessians, None  # the export's alone: freed with it
        blob, sizes = export_phase(base, hessians, h, d, source, log)
        scored += score_phase(blob, h, d, compile_on, tables, val_tokens, log)
        check_finite(scored, h)
        results = [r for _, r in scored[1:]]
        log(f"val_targets:{results[-1].targets} val_bytes:{results[-1].bytes}")
        eval_ms = 1000 * sum(r.seconds for r in results)
        log(f"eval_time_total:{eval_ms:.0f}ms")
        within = int(eval_ms <= EVAL_LIMIT_MS)
        log(f"compliance evaluation_time:{eval_ms:.0f}ms limit:{EVAL_LIMIT_MS}ms within:{within}")
        log(f"train_steps:{stats.steps} train_time_total:{stats.train_ms:.0f}ms")
        scores = [
            dict(name=n, val_loss=r.val_loss, val_bpb=r.val_bpb, eval_time_ms=1000 * r.seconds) for n, r in scored
        ]
        summary = dict(format="pgolf-run-summary", version=1, run_id=h.run_id, seed=h.seed, preset=h.preset)
        summary.update(world_size=d.world_size, **environment, source_sha256=hashlib.sha256(source).hexdigest())
        summary.update(sizes, train_steps=stats.steps, train_time_ms=stats.train_ms, stop_reason=stats.stop_reason)
        summary.update(gptq_calibration_ms=stats.calib_ms, scores=scores, final=scores[-1]["name"], config=h.flat())
        summary.update(val_targets=results[-1].targets, val_bytes=results[-1].bytes, eval_time_total_ms=eval_ms)
        log("run_summary " + json.dumps(summary, sort_keys=True, separators=(",", ":")))
        log("run_complete")
    except BaseException as e:  # every failure is in the log too; user errors as one line, bugs with a traceback
        log(f"error: {e}" if isinstance(e, UserError) else "".join(traceback.format_exception(e)).rstrip(), False)
        raise
    finally:
        log.close()


def main() -> None:
    if sys.argv[1:]:
        if set(sys.argv[1:]) & {"-h", "--help"}:
            print(settings_help())
            return
        print(f"error: train_gpt.py takes no arguments ({' '.join(sys.argv[1:])}): every setting is an environment "
              "variable; see python train_gpt.py --help", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    signal.signal(signal.SIGTERM, sigterm_handler)
    try:
        h = Hyperparameters.from_env()
        d = init_distributed(h.device, h.dist_timeout_seconds)
        run(h, d)
        if d.enabled:  # no rank tears its process group down while another still talks to it (gloo aborts then)
            dist.barrier()
    except UserError as e:  # only the user's mistakes become one line (exit 2, as the tools); anything else: traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the log is intact and no artifact was half-written", file=sys.stderr)
        sys.exit(130)
    finally:
        cleanup_distributed()


# =====================================================================================================================
# 11. VARIANTS: features off the record's path, each reached from it by one dispatch line
# =====================================================================================================================

LINEAR_ATTN_CHUNK = 64  # ATTN=linear: positions per chunk of the chunked form


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Causal linear attention, (B, H, T, D) each: y_t = sum_s a_ts v_s / sum_s a_ts with a_ts = phi(q_t).phi(k_s),
    phi = elu + 1, over s <= t. Without a mask in chunks: quadratic inside a chunk, a running sum of phi(k)^T v
    across them (O(T)); with a mask (document isolation, windows) the same sums over the mask, quadratically."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    if mask is not None:
        a = (q @ k.transpose(-1, -2)) * mask
        return (a @ v) / a.sum(-1, keepdim=True)
    B, H, T, D = q.shape
    C = LINEAR_ATTN_CHUNK
    n = -(-T // C)
    q, k, v = (F.pad(t, (0, 0, 0, n * C - T)).view(B, H, n, C, t.size(-1)) for t in (q, k, v))
    a = (q @ k.transpose(-1, -2)) * torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    kv, ks = k.transpose(-1, -2) @ v, k.sum(-2)  # per chunk: (B, H, n, D, Dv), (B, H, n, D)
    state, zsum = kv.cumsum(2) - kv, ks.cumsum(2) - ks  # everything in the chunks before
    num = a @ v + q @ state
    den = a.sum(-1) + (q * zsum[..., None, :]).sum(-1)
    return (num / den[..., None]).reshape(B, H, n * C, -1)[:, :, :T]


class MemoryBank(nn.Module):
    """Engram-style memory: learned (key, value) slots; each token reads softmax(n(x) K^T / sqrt(width)) V, scaled by
    a per-dimension gate that starts at zero (so the bank starts switched off)."""

    def __init__(self, slots: int, dim: int):
        super().__init__()
        self.keys = CastedLinear(dim, slots, "attn")
        self.values = CastedLinear(slots, dim, "attn")
        self.gate = tag(nn.Parameter(torch.zeros(dim)), "control")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.keys(rms_norm(x)) / math.sqrt(x.size(-1)), dim=-1)
        return self.gate * self.values(w)


# ATTN=mla: keys and values from a low-rank latent (Attention builds c_kv, c_kr and a latent-sized c_k for it).
def mla_keys_values(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Hkv, T, hd) each: K = [rotated dims from x, shared by the heads; the rest from the latent], V from it."""
    B, T, _ = x.shape
    Hkv, hd = attn.num_kv_heads, attn.head_dim
    lat, rd = attn.c_kv(x), attn.rope_dims
    k_rope = attn.c_kr(x).view(B, T, 1, rd).expand(B, T, Hkv, rd)
    k = torch.cat((k_rope, attn.c_k(lat).view(B, T, Hkv, hd - rd)), dim=-1).transpose(1, 2)
    v = attn.c_v(lat).view(B, T, Hkv, hd).transpose(1, 2)
    return k, v


# ATTN=sparse (BigBird): the random key blocks added to the local window and the global tokens.
RANDOM_BLOCKS_HASH = (1_000_003, 7_919, 2_654_435_761)  # (query block, key block, mix) multipliers of the pick


def random_blocks(cfg: ModelConfig, T: int, device: torch.device) -> torch.Tensor:
    """(T, T): for each block of ATTN_BLOCK queries, ATTN_RANDOM_BLOCKS earlier key blocks, those with the
    smallest hash of (query block, key block): fixed, the same at every step and on every rank."""
    n, bs, r = -(-T // cfg.attn_block), cfg.attn_block, cfg.attn_random_blocks
    if r == 0:
        return torch.zeros(T, T, dtype=torch.bool, device=device)
    qb, kb = torch.arange(n, device=device)[:, None], torch.arange(n, device=device)[None, :]
    qm, km, mix = RANDOM_BLOCKS_HASH
    key = ((qb * qm + kb * km) * mix) % (1 << 31)
    key = torch.where(kb < qb, key, 1 << 32)  # only earlier blocks
    pick = torch.zeros(n, n, dtype=torch.bool, device=device)
    pick.scatter_(1, key.topk(min(r, n), dim=1, largest=False).indices, True)
    pick &= kb < qb
    pos = torch.arange(T, device=device) // bs
    return pick[pos[:, None], pos[None, :]]


if __name__ == "__main__":
    main()
