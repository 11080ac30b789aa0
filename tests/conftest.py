"""Shared test helpers: the repository root and data tools on sys.path, the shared real data (../shared/data), a
small real dataset and run, and the model helpers several test modules use (never import one test module from
another: shared things live here)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
for _p in (REPO, REPO / "data"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import train_gpt as tg  # noqa: E402  (after the repository is on the path)


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the calling test with a reason when it is absent (a fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is absent (see ../shared/data/MANIFEST.md)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder (../shared/data); skips when absent."""
    return shared_path()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run in one intra-op thread: on two shared cores, two threads that fight other processes are several
    times slower than one, and results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def attention_restored():
    """The process's attention kernel (tg.ATTENTION, set by every run) is put back after each test: a test that runs
    with ATTN_BACKEND=reference must not leave the next test's model on that path."""
    before = dataclasses.replace(tg.ATTENTION)
    yield
    tg.use_attention(before)


# ---------------------------------------------------------------- a small real run

# A CPU-sized run: 2 layers looped, 64-token sequences, a few steps; every feature of the frontier stays on.
SMALL = dict(
    PRESET="tiny",
    NUM_LAYERS="3",
    MODEL_DIM="32",
    NUM_HEADS="2",
    NUM_KV_HEADS="1",
    LOOP_START="1",
    LOOP_END="1",
    PARALLEL_START="2",
    ROPE_DIMS="8",
    TRAIN_SEQ_LEN="64",
    TRAIN_BATCH_TOKENS="512",
    GRAD_ACCUM_STEPS="1",
    ITERATIONS="12",
    WARMUP_STEPS="2",
    TRAIN_LOG_EVERY="4",
    EVAL_STRIDE="32",
    EVAL_BATCH_SEQS="64",
    GPTQ_CALIB_BATCHES="2",
    VAL_MAX_TOKENS="4096",
    LOOP_START_FRAC="0.5",
)  # so that even these small matrices are stored as int6 (GPTQ)


def make_dataset(root: Path, n_docs: int = 46, train_shards: int = 3) -> dict[str, str]:
    """Real FineWeb documents in official shards under `root`: 6 val documents, the rest split into `train_shards`
    train shards, with the official sp1024 tokenizer; the settings that point a run at them."""
    import sentencepiece as spm

    import toolkit as tk
    import train_gpt as tg

    tok = shared_path("tokenizers", "fineweb_1024_bpe.model")
    docs = [json.loads(line)["text"] for line in shared_path("text", "fineweb_docs_200.jsonl").open()][:n_docs]
    ids = spm.SentencePieceProcessor(model_file=str(tok)).encode(docs)
    stream = [np.array([tg.BOS_ID, *e], dtype=np.uint16) for e in ids]
    root.mkdir(parents=True, exist_ok=True)
    tk.write_shard(root / "fineweb_val_000000.bin", np.concatenate(stream[:6]))
    for i, part in enumerate(np.array_split(np.concatenate(stream[6:]), train_shards)):
        tk.write_shard(root / f"fineweb_train_{i:06d}.bin", part)
    return {"DATA_PATH": str(root), "TOKENIZER_PATH": str(tok)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, str]:
    """make_dataset's 46 documents (6 val, 3 train shards), once per test module."""
    return make_dataset(tmp_path_factory.mktemp("ds"))


def run_inprocess(dataset, tmp_path, **over) -> tuple[str, Path]:
    env = {
        **SMALL,
        **dataset,
        "LOG_DIR": str(tmp_path / "logs"),
        "RUN_ID": "r",
        "ARTIFACT_PATH": str(tmp_path / "art" / "r.pgz"),
        **{k: str(v) for k, v in over.items()},
    }
    import train_gpt as tg

    tg.run(tg.Hyperparameters.from_env(env), tg.Dist())
    return (tmp_path / "logs" / "r.txt").read_text(), tmp_path / "art" / "r.pgz"


def metric(log: str, key: str, field: str = "val_loss") -> float:
    return float(re.findall(rf"^{key} .*?{field}:([0-9.]+)", log, re.M)[-1])


# ---------------------------------------------------------------- model helpers


def config(preset: str = "tiny", **over):
    import train_gpt as tg

    env = {"PRESET": preset, **{k.upper(): str(v) for k, v in over.items()}}
    return tg.Hyperparameters.from_env(env).model


def shape(**over):
    """A ModelConfig with only the given fields changed from the defaults (for building single modules)."""
    import train_gpt as tg

    return dataclasses.replace(tg.ModelConfig(), **over)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised gates and projections included) a random value, so that every path
    of the forward really contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


ALL_ON = dict(
    xsa=1,
    smear_gate=1,
    attn_out_gate=1,
    skip_gates=1,
    unet_skips=1,
    ln_scale=1,
    x0_mix=1,
    rope_dims=8,
    parallel_start=2,
    loop_start=1,
    loop_end=2,
    num_loops=3,
    num_layers=5,
)


def reference_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """Multi-head attention with K/V repeated per query head and an explicit causal softmax."""
    import train_gpt as tg

    B, T, D = x.shape
    H, Hkv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = (x @ attn.c_q.weight.T).view(B, T, H, hd).transpose(1, 2)
    k = (x @ attn.c_k.weight.T).view(B, T, Hkv, hd).transpose(1, 2)
    v = (x @ attn.c_v.weight.T).view(B, T, Hkv, hd).transpose(1, 2)
    q = tg.rotate_half_dims(tg.rms_norm(q), attn.rope_dims, attn.rope_base) * attn.q_gain[None, :, None, None]
    k = tg.rotate_half_dims(tg.rms_norm(k), attn.rope_dims, attn.rope_base)
    k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    y = scores.softmax(-1) @ v  # (B, H, T, hd)
    if attn.xsa:
        vn = F.normalize(v, dim=-1)
        y = y - (y * vn).sum(-1, keepdim=True) * vn
    y = y.transpose(1, 2)
    if attn.gate is not None:
        y = y * torch.sigmoid(0.5 * x[..., : attn.gate_inputs] @ attn.gate.weight.T).unsqueeze(-1)
    return y.reshape(B, T, D) @ attn.proj.weight.T
