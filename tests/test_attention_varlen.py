"""Document-isolated attention through varlen offsets (issue 26): the offsets built from a batch name exactly the pieces
the dense document mask allows, for any layout of BOS tokens; the varlen path (here its plain-PyTorch reference, the
CUDA kernels in tests/test_gpu.py) returns what SDPA with the mask returns, through GQA, XSA, the output gate, MLA,
recurrence, the ramp and parallel lanes, forward and backward; a batch with more pieces than the offsets hold stops
with the setting named; the backend is chosen once, by rule, and refused by name when it cannot run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import config, make_dataset, metric, randomize, run_inprocess

import train_gpt as tg


@pytest.fixture
def reference_backend(monkeypatch):
    """ATTENTION set to the reference varlen backend for one test (restored after it)."""
    monkeypatch.setattr(tg.ATTENTION, "backend", "reference")
    monkeypatch.setattr(tg.ATTENTION, "segment_tokens", 4)
    return tg.ATTENTION


def pieces_of(cu: torch.Tensor, count: int, n: int) -> np.ndarray:
    """The piece index of each of n flattened tokens, read off the offsets alone."""
    bounds = cu.numpy().astype(np.int64)
    assert bounds[0] == 0 and np.all(np.diff(bounds) >= 0) and np.all(bounds[count:] == n)
    return np.searchsorted(bounds[1 : count + 1], np.arange(n), side="right")


def random_layout(rng: np.random.Generator, B: int, T: int, density: float) -> torch.Tensor:
    idx = rng.integers(2, 50, (B, T))
    idx[rng.random((B, T)) < density] = tg.BOS_ID
    return torch.from_numpy(idx)


def layouts() -> list[torch.Tensor]:
    """Random BOS layouts of many shapes and densities, and the edge cases written out."""
    rng = np.random.default_rng(0)
    out = [random_layout(rng, int(rng.integers(1, 5)), int(rng.integers(1, 40)), d)
           for _ in range(60) for d in (0.0, 0.05, 0.3, 1.0)]  # fmt: skip
    mid = torch.full((2, 16), 7)
    mid[0, 6] = mid[1, 11] = tg.BOS_ID  # windows starting mid-document: tokens before the first BOS are one piece
    at0 = mid.clone()
    at0[:, 0] = tg.BOS_ID  # a BOS at position 0 starts no second piece
    tail = torch.full((3, 9), 7)
    tail[:, -1] = tg.BOS_ID  # a document of one token at the end of each row
    pairs = torch.full((1, 12), 7)
    pairs[0, 3:5] = tg.BOS_ID  # two BOS in a row: a one-token document
    return out + [mid, at0, tail, pairs, torch.full((1, 1), tg.BOS_ID), torch.full((2, 5), tg.BOS_ID)]


def test_cu_seqlens_reproduce_the_document_mask_exactly():
    """For every layout: same piece and not later <=> the dense mask allows it; pieces are the row starts plus the
    BOS tokens after position 0; offsets past the last piece are B*T; the size depends on (B, T) alone."""
    model = tg.build_model(config(doc_isolation=1))
    for idx in layouts():
        B, T = idx.shape
        capacity = B * T  # room for every token to start a piece
        cu, count = tg.build_cu_seqlens(idx, capacity)
        count = int(count)
        assert cu.dtype == torch.int32 and cu.shape == (capacity + 1,)
        assert count == B + int((idx[:, 1:] == tg.BOS_ID).sum())
        piece = pieces_of(cu, count, B * T).reshape(B, T)
        same = piece[:, :, None] == piece[:, None, :]
        causal = np.tril(np.ones((T, T), dtype=bool))
        want = model.attn_mask(idx)[:, 0].numpy()
        np.testing.assert_array_equal(same & causal, want, err_msg=str(idx.tolist()))
        assert (piece[1:, 0] > piece[:-1, -1]).all()  # no piece crosses from one row to the next


def test_capacity_depends_on_the_shape_and_overflow_names_the_setting(reference_backend):
    """B * (1 + ceil((T-1) / VARLEN_SEGMENT_TOKENS)) places, never more than B*T; a batch that fits exactly runs, one
    more document stops with VARLEN_SEGMENT_TOKENS and ATTN_BACKEND named (never a silent merge of documents)."""
    assert tg.segment_capacity(48, 2048, 128) == 48 * 17 and tg.segment_capacity(3, 4, 128) == 6
    assert tg.segment_capacity(2, 3, 1) == 6  # capped at B*T
    model = randomize(tg.build_model(config(doc_isolation=1)))
    T = 9  # capacity per row: 1 + ceil(8 / 4) = 3 pieces
    full = torch.full((2, T), 7)
    full[:, [3, 6]] = tg.BOS_ID  # 3 pieces per row: exactly the capacity
    cu = model.segments(full).cu
    assert cu.shape == (7,) and model.segments(torch.full((2, T), 7)).cu.shape == (7,)  # the same size, any data
    model(full)
    full[0, 8] = tg.BOS_ID
    with pytest.raises(tg.UserError, match="7 pieces .* 6 places .*VARLEN_SEGMENT_TOKENS=4.*ATTN_BACKEND=sdpa"):
        model(full)


def attention_pair(c: tg.ModelConfig, idx: torch.Tensor, seed: int = 0):
    """An Attention block with random weights, its input, and its outputs and input gradients through the dense mask
    and through the reference varlen offsets."""
    attn = randomize(tg.Attention(c), seed)
    model = tg.build_model(c)
    x = torch.randn(*idx.shape, c.model_dim, generator=torch.Generator().manual_seed(seed))
    out = {}
    for name, arg in (("mask", model.attn_mask(idx)), ("varlen", model.segments(idx))):
        xi = x.clone().requires_grad_(True)
        y = attn(xi, arg)
        y.square().sum().backward()
        out[name] = (y.detach(), xi.grad, {n: p.grad.clone() for n, p in attn.named_parameters()})
        attn.zero_grad()
    return out


@pytest.mark.parametrize("over", [
    dict(),  # the frontier's attention: GQA 4/2, XSA, the sparse output gate, partial RoPE
    dict(num_kv_heads=4, xsa=0, attn_out_gate=0),  # plain multi-head
    dict(num_kv_heads=1),  # multi-query
    dict(attn="mla", mla_rank=16),
])  # fmt: skip
def test_reference_varlen_attention_equals_the_masked_attention(reference_backend, over):
    c = config(
        **{**dict(doc_isolation=1, model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, gate_inputs=8), **over}
    )
    reference_backend.segment_tokens = 1  # room for the all-BOS rows
    for idx in layouts()[-6:] + [random_layout(np.random.default_rng(1), 3, 24, 0.15)]:
        pairs = attention_pair(c, idx)
        for a, b in zip(pairs["mask"][:2], pairs["varlen"][:2]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        for name, g in pairs["mask"][2].items():  # float sums in another order: relative to the gradient's scale
            atol = 1e-4 + 1e-5 * float(g.abs().max())
            torch.testing.assert_close(pairs["varlen"][2][name], g, rtol=1e-4, atol=atol, msg=name)


def test_reference_varlen_model_equals_the_masked_model_through_the_ramp(reference_backend):
    """The frontier's structure (loops, U-Net skips, parallel lanes, SmearGate) with recurrence ramping in: the loss and
    every gradient equal the dense mask's."""
    c = config("frontier", model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, gate_inputs=8, vocab_size=64,
               num_layers=5, loop_start=1, loop_end=2, parallel_start=3)  # fmt: skip
    rng = np.random.default_rng(2)
    idx, y = random_layout(rng, 3, 20, 0.12), torch.from_numpy(rng.integers(0, 64, (3, 20)))
    results = {}
    for backend in ("sdpa", "reference"):
        reference_backend.backend = backend
        model = randomize(tg.build_model(c), 3)
        model.set_loops(3, 0.4)
        loss = model(idx, y)
        loss.backward()
        results[backend] = (loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(results["reference"][0], results["sdpa"][0], rtol=1e-6, atol=1e-6)
    assert results["reference"][1].keys() == results["sdpa"][1].keys()
    for name, g in results["sdpa"][1].items():
        torch.testing.assert_close(results["reference"][1][name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("over,backend", [
    (dict(doc_isolation=0), "reference"),  # plain causal: flash through SDPA already
    (dict(attn="local", attn_window=4), "reference"),  # windows keep the mask
    (dict(attn="linear"), "reference"),
    (dict(), "sdpa"),
    (dict(), "torch"),  # a CUDA kernel, and these tokens are on the CPU
])  # fmt: skip
def test_the_mask_serves_where_the_varlen_path_does_not_apply(monkeypatch, over, backend):
    monkeypatch.setattr(tg.ATTENTION, "backend", backend)
    model = tg.build_model(config(**{"doc_isolation": 1, **over}))
    idx = torch.full((2, 8), 7)
    assert model.segments(idx) is None
    assert not any(isinstance(m, tg.Segments) for m in model.attention_masks(idx))


def select(support=None, device="cpu", **env):
    h = tg.Hyperparameters.from_env({"RUN_ID": "x", **{k: str(v) for k, v in env.items()}})
    return tg.select_attention(h, tg.Dist(device=torch.device(device)), support)


CUDA_HAS = {"fa3": None, "torch": None, "reference": None}


def test_the_backend_is_chosen_by_rule_and_refused_by_name():
    assert select().backend == "sdpa" and "CPU" in select().reason  # here: the dense mask
    assert select(ATTN_BACKEND="reference").backend == "reference"
    with pytest.raises(tg.UserError, match="ATTN_BACKEND=fa3: needs a CUDA GPU; ATTN_BACKEND=auto"):
        select(ATTN_BACKEND="fa3")
    with pytest.raises(tg.UserError, match="ATTN_BACKEND=torch: the varlen kernels serve DOC_ISOLATION=1"):
        select(ATTN_BACKEND="torch", DOC_ISOLATION=0)
    # on a CUDA GPU (what varlen_support would say, given): FA3 first (the record's), then torch's, then the mask
    assert select(CUDA_HAS, "cuda").backend == "fa3"
    assert select({**CUDA_HAS, "fa3": "not installed"}, "cuda").backend == "torch"
    no = select({**CUDA_HAS, "fa3": "not installed", "torch": "sm75"}, "cuda")
    assert no.backend == "sdpa" and "not installed" in no.reason and "sm75" in no.reason
    assert select(CUDA_HAS, "cuda", AUTOCAST_BF16=0).backend == "sdpa"
    assert select(CUDA_HAS, "cuda", ATTN="local").backend == "sdpa"
    assert select(CUDA_HAS, "cuda", ATTN_BACKEND="torch").backend == "torch"
    with pytest.raises(tg.UserError, match="ATTN_BACKEND=fa3: flash_attn_interface does not import"):
        select({**CUDA_HAS, "fa3": "flash_attn_interface does not import (ImportError)"}, "cuda", ATTN_BACKEND="fa3")
    assert tg.varlen_support(torch.device("cpu")) == {"fa3": "needs a CUDA GPU", "torch": "needs a CUDA GPU",
                                                      "reference": None}  # fmt: skip
    with pytest.raises(tg.UserError, match="ATTN_BACKEND='flash': must be one of auto, sdpa, fa3, torch, reference"):
        select(ATTN_BACKEND="flash")


def test_a_run_logs_its_backend_and_scores_the_same_through_the_varlen_path(tmp_path):
    """train_gpt.run end to end (training with the recurrence ramp, GPTQ export, flat, sliding and phased-TTT scores)
    with ATTN_BACKEND=reference scores what the dense mask scores."""

    dataset = make_dataset(tmp_path / "data", n_docs=30, train_shards=2)
    over = dict(ITERATIONS=4, WARMUP_STEPS=1, TTT_MODE="phased", TTT_LORA_DOCS=2, TTT_PHASE_DOCS=2, TTT_PHASES=1,
                VAL_MAX_TOKENS=1024, LOOP_START_FRAC=0.25, LOOP_RAMP_FRAC=0.5, VARLEN_SEGMENT_TOKENS=4)  # fmt: skip
    logs = {b: run_inprocess(dataset, tmp_path / b, ATTN_BACKEND=b, **over)[0] for b in ("sdpa", "reference")}
    assert "attention_backend:sdpa (ATTN_BACKEND=sdpa)" in logs["sdpa"]
    assert "attention_backend:reference (ATTN_BACKEND=reference)" in logs["reference"]
    assert "recurrence_on" in logs["reference"]
    for key in ("final_float_exact", "final_int6_roundtrip_exact", "final_int6_sliding_window_exact",
                "final_int6_ttt_exact"):  # fmt: skip
        assert metric(logs["reference"], key) == pytest.approx(metric(logs["sdpa"], key), abs=1e-4), key


@pytest.mark.slow
def test_the_compiled_varlen_path_has_no_graph_break_and_never_recompiles(monkeypatch):
    """torch.compile(fullgraph=True, dynamic=False) of the model with a varlen backend that is an opaque custom op (as
    torch's and FA3's are): no graph break (the offsets, their overflow check and the pieces are traced), the same
    graph for batches with other BOS layouts, eager's output (the op computes in bf16, as the kernels do, so eager is
    the reference here; the eager path equals the mask above), and the overflow check inside the graph."""

    @torch.library.custom_op("pgolf_test::varlen", mutates_args=())
    def varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
        return tg._varlen_reference(q, k, v, tg.Segments(cu, cu[-1], max_len, "reference")).contiguous()

    @varlen_op.register_fake
    def _(q, k, v, cu, max_len):
        return torch.empty_like(q)

    monkeypatch.setitem(tg.VARLEN_KERNELS, "cpu_op", lambda q, k, v, seg: varlen_op(q, k, v, seg.cu, seg.max_len))
    monkeypatch.setattr(tg, "VARLEN_OFF_CUDA", {"reference", "cpu_op"})
    monkeypatch.setattr(tg.ATTENTION, "segment_tokens", 2)  # 2 * (1 + 8) = 18 places
    c = config("frontier", model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, gate_inputs=8, vocab_size=64,
               num_layers=4, loop_start=1, loop_end=2, parallel_start=3)  # fmt: skip
    model = randomize(tg.build_model(c)).eval()
    model.set_loops(2)
    rng = np.random.default_rng(4)
    batches = [random_layout(rng, 2, 16, density) for density in (0.1, 0.25, 0.0)]
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    with torch.no_grad():
        monkeypatch.setattr(tg.ATTENTION, "backend", "cpu_op")
        want = [model(x) for x in batches]
        got = [compiled(batches[0])]
        with torch.compiler.set_stance("fail_on_recompile"):
            got += [compiled(x) for x in batches[1:]]
            with pytest.raises(RuntimeError, match="more pieces .* 18 places .*VARLEN_SEGMENT_TOKENS=2"):
                compiled(torch.full((2, 16), tg.BOS_ID))  # 32 pieces
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
