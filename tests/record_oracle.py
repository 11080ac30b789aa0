"""The 1.0611 record's own train_gpt.py, imported in place on CPU as the oracle of the parity tests (issue 25).

The record's file is never copied: it is loaded from ../shared/data/public_records/… under a private module name.
Its CUDA-only imports get the smallest exact stand-ins: FlashAttention-3 (`flash_attn_interface`) by causal SDPA,
per document for the varlen call; Triton only needs to exist at import (its two fused kernels, the LeakyReLU² MLP
and the softcapped cross-entropy, are switched to the record's own eager formulas: MLP.use_fused = False and
fused_ce_enabled = False); its one torch.compile decorator (Newton–Schulz) is
an identity while it imports.

`record_settings()` is the record's Hyperparameters at its run's values (the README's launch line), at a shape
given by the caller; `map_record_to_ours()` copies a record model's weights into one of ours by name."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from conftest import shared_path

RECORD_DIR = ("public_records", "track_10min_16mb", "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611")

# The record's launch line (its README): the values every parity test runs the record at.
RECORD_RUN = dict(
    caseops_enabled=True, iterations=20000, max_wallclock_seconds=600.0, phased_ttt_prefix_docs=2500,
    phased_ttt_num_phases=3, embed_bits=7, matrix_lr=0.026, min_lr=0.1, mlp_clip_sigmas=11.5, attn_clip_sigmas=13.0,
    embed_clip_sigmas=14.0, grad_clip_norm=0.3, ttt_chunk_size=48, warmup_steps=20, muon_backend_steps=5,
    global_ttt_momentum=0.9, warmdown_frac=0.85, beta2=0.99, ttt_beta2=0.99, ttt_weight_decay=0.5, ttt_lora_rank=80,
    sparse_attn_gate_scale=0.5, gptq_reserve_seconds=0.5, gptq_calibration_batches=16, val_loss_every=0,
    gated_attn_quant_gate=True, sparse_attn_gate_enabled=True, gate_window=12, smear_gate_enabled=True,
    lqer_enabled=True, lqer_asym_enabled=True, lqer_rank=4, lqer_factor_bits=4, lqer_asym_group=64, lqer_top_k=3,
    fused_ce_enabled=False,  # the eager formula of its fused kernel (no Triton on CPU)
)  # fmt: skip


def _sdpa_bthd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention on FA3's (B, T, H, D) layout, GQA by repeating K/V heads (FA3's convention)."""
    rep = q.size(2) // k.size(2)
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def flash_attn_func(q, k, v, causal=True, **_):
    assert causal
    return _sdpa_bthd(q, k, v)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=True, **_):
    """(total, H, D) packed documents: causal attention inside each [cu[i], cu[i+1]) segment."""
    assert causal and torch.equal(cu_seqlens_q, cu_seqlens_k)
    out = torch.zeros_like(q)
    cu = cu_seqlens_q.tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        if b > a:
            out[a:b] = _sdpa_bthd(q[None, a:b], k[None, a:b], v[None, a:b])[0]
    return out


class _Anything(types.ModuleType):
    """A module whose every attribute is a callable no-op decorator (Triton at import time)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _any

    def jit(self, fn=None, **_):
        return fn if fn is not None else (lambda f: f)


def _any(*args, **kwargs):
    return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else _any


_MODULE = None


def _no_compile(fn=None, **_):
    return fn if fn is not None else (lambda f: f)


def load_record() -> types.ModuleType:
    """The record's train_gpt.py as a module (once per process); skips when the shared data is absent."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    path = Path(shared_path(*RECORD_DIR, "train_gpt.py"))
    shims = {
        "flash_attn_interface": types.SimpleNamespace(
            flash_attn_func=flash_attn_func, flash_attn_varlen_func=flash_attn_varlen_func
        ),
        "triton": _Anything("triton"),
        "triton.language": _Anything("triton.language"),
        "triton.tools": _Anything("triton.tools"),
        "triton.tools.tensor_descriptor": _Anything("triton.tools.tensor_descriptor"),
    }
    shims["triton"].language, shims["triton"].tools = shims["triton.language"], shims["triton.tools"]
    shims["triton.tools"].tensor_descriptor = shims["triton.tools.tensor_descriptor"]
    saved = {name: sys.modules.get(name) for name in shims}
    sys.modules.update(shims)  # only while the record imports: nothing else sees the stand-ins
    compile_, torch.compile = torch.compile, _no_compile  # its one @torch.compile (Newton-Schulz) runs eagerly
    try:
        spec = importlib.util.spec_from_file_location("record_1_0611", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        torch.compile = compile_
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    module.BOS_ID = 1  # set by its data loader on first use
    _MODULE = module
    return module


def record_settings(**shape: object) -> types.SimpleNamespace:
    """The record's Hyperparameters at its run's values, overridden by `shape` (record names)."""
    rec = load_record()
    values = {k: v for k, v in vars(rec.Hyperparameters).items() if not k.startswith("__")}
    values.update(RECORD_RUN)
    values.update(shape)
    return types.SimpleNamespace(**values)


def build_record_model(h: types.SimpleNamespace, seed: int = 0) -> torch.nn.Module:
    """The record's GPT at settings `h`, in float32 eval-ready form, its fused kernels switched to eager."""
    rec = load_record()
    torch.manual_seed(seed)
    model = rec.GPT(h)
    for block in model.blocks:
        block.mlp.use_fused = False
    return model


def map_record_to_ours(rec_model: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Copy every weight the record's model has into ours (the banks split per block); checks that every one of
    our parameters was written and that the record's unused parallel lambdas (blocks before PARALLEL_START) are the
    only record parameters left over."""
    n = rec_model.num_layers
    written: set[str] = set()
    sd = ours.state_dict()

    def put(name: str, value: torch.Tensor) -> None:
        assert sd[name].shape == value.shape, (name, sd[name].shape, value.shape)
        sd[name].copy_(value.detach())
        written.add(name)

    put("tok_emb.weight", rec_model.tok_emb.weight)
    for i in range(n):
        b, r = f"blocks.{i}.", rec_model.blocks[i]
        put(b + "attn.c_q.weight", rec_model.qo_bank[i])
        put(b + "attn.proj.weight", rec_model.qo_bank[n + i])
        put(b + "attn.c_k.weight", rec_model.kv_bank[i])
        put(b + "attn.c_v.weight", rec_model.kv_bank[n + i])
        put(b + "mlp.fc.weight", rec_model.mlp_up_bank[i])
        put(b + "mlp.proj.weight", rec_model.mlp_down_bank[i])
        put(b + "attn_scale", r.attn_scale)
        put(b + "mlp_scale", r.mlp_scale)
        put(b + "resid_mix", r.resid_mix)
        put(b + "attn.q_gain", r.attn.q_gain)
        put(b + "attn.gate.weight", r.attn.attn_gate_w)
        if b + "resid_lambdas" in sd:
            put(b + "resid_lambdas", rec_model.parallel_resid_lambdas[i])
            put(b + "post_lambdas", rec_model.parallel_post_lambdas[i])
    put("skip_weights", rec_model.skip_weights)
    put("skip_gates", rec_model.skip_gates)
    put("smear.w", rec_model.smear_gate.weight.view(-1))
    put("smear.lam", rec_model.smear_lambda)
    params = {name for name, _ in ours.named_parameters()}
    assert params <= written, sorted(params - written)


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Move every parameter off its initial value (zero-initialised projections, gates, lambdas, mixes), so that a
    parity test exercises every path: each gets seeded noise on the scale of its current values (or 0.05)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            scale = float(p.detach().float().std()) if p.numel() > 1 else 0.0
            p.add_(torch.randn(p.shape, generator=gen) * (scale if scale > 0 else 0.05))
