"""The model of train_gpt.py against hand-written references: causality, GQA, XSA, recurrence, parallel residuals,
U-Net skips, SmearGate masking, and the plain baseline with every feature off."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_ON, config, randomize, reference_attention, shape

import toolkit as tk
import train_gpt as tg


def test_shapes_and_losses():
    model = tg.build_model(config())
    idx = torch.randint(0, 1024, (2, 32))
    logits = model(idx)
    assert logits.shape == (2, 32, 1024) and logits.dtype == torch.float32
    per_token = model(idx, idx, reduction="none")
    assert per_token.shape == (2, 32)
    assert torch.allclose(model(idx, idx), per_token.mean(), atol=1e-6)
    assert logits.abs().max() <= 30.0  # soft cap
    assert torch.allclose(model.project(model.hidden(idx)), logits)


@pytest.mark.parametrize("loops", [1, 3])
def test_causality_with_every_feature_on(loops):
    model = randomize(tg.build_model(config(**ALL_ON))).eval()
    model.set_loops(loops)
    T = 24
    idx = torch.randint(2, 1024, (1, T))
    idx[0, 5] = idx[0, 13] = tg.BOS_ID
    base = model(idx)
    for t in (0, 4, 5, 12, 20):
        changed = idx.clone()
        changed[0, t + 1 :] = torch.randint(2, 1024, (T - t - 1,))
        changed[0, t + 1] = (idx[0, t + 1] + 7) % 1024
        out = model(changed)
        assert torch.allclose(out[0, : t + 1], base[0, : t + 1], atol=1e-5), f"position <= {t} saw the future"
        assert not torch.allclose(out[0, t + 1], base[0, t + 1]), "the changed token must matter"


@pytest.mark.parametrize("xsa,gate", [(False, False), (True, True)])
def test_gqa_equals_repeated_kv_attention(xsa, gate):
    torch.manual_seed(0)
    c = shape(model_dim=64, num_heads=8, num_kv_heads=2, rope_dims=4, qk_gain_init=1.5, xsa=xsa, attn_out_gate=gate)
    attn = randomize(tg.Attention(c))
    x = torch.randn(2, 16, 64)
    assert torch.allclose(attn(x), reference_attention(attn, x), atol=1e-5)


def test_xsa_output_is_orthogonal_to_own_value():
    c = shape(model_dim=32, num_heads=4, num_kv_heads=4, rope_dims=0, qk_gain_init=1.0, xsa=True, attn_out_gate=0)
    attn = randomize(tg.Attention(c))
    captured = {}
    attn.proj.register_forward_hook(lambda m, inp, out: captured.setdefault("y", inp[0]))
    x = torch.randn(1, 10, 32)
    attn(x)
    y = captured["y"].view(1, 10, 4, 8)
    v = (x @ attn.c_v.weight.T).view(1, 10, 4, 8)
    assert (y * F.normalize(v, dim=-1)).sum(-1).abs().max() < 1e-5


def test_partial_rope_leaves_tail_dims_alone_and_preserves_norms():
    x = torch.randn(1, 2, 6, 16)
    y = tg.rotate_half_dims(x, 4, 10000.0)
    assert torch.equal(y[..., 4:], x[..., 4:])
    assert torch.allclose(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)
    assert torch.equal(y[..., 0, :], x[..., 0, :])  # position 0 has angle 0


def test_recurrence_matches_hand_unrolled_reference():
    cfg = config(num_layers=4, loop_start=1, loop_end=2, num_loops=3, unet_skips=0, smear_gate=0)
    model = randomize(tg.build_model(cfg))
    model.set_loops(3)
    assert model.layer_order() == [0, 1, 2, 1, 2, 1, 2, 3]
    idx = torch.randint(2, 1024, (2, 16))  # no BOS: the blocks are called without the document mask
    x0 = tg.rms_norm(model.tok_emb(idx))
    lanes = (x0,)
    for i in [0, 1, 2, 1, 2, 1, 2, 3]:  # block 3 is parallel: two lanes from there, averaged at the end
        lanes = model.blocks[i](lanes, x0)
    assert len(lanes) == 2 and torch.allclose(model.hidden(idx), tg.rms_norm(0.5 * (lanes[0] + lanes[1])), atol=1e-5)
    model.set_loops(1)
    assert model.layer_order() == [0, 1, 2, 3]


def test_frontier_and_seed_layer_orders():
    frontier = tg.build_model(
        config("frontier", num_layers=11, model_dim=64, num_heads=4, num_kv_heads=2, vocab_size=64)
    )
    frontier.set_loops(3)
    assert frontier.layer_order() == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]  # 17 virtual layers
    h = tg.Hyperparameters.from_env({"PRESET": "seed", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2"})
    seed = tg.build_model(h.model)
    seed.set_loops(h.model.num_loops)
    assert len(seed.blocks) == 3 and len(seed.layer_order()) == 24 and h.model.eval_loops == 12
    assert all(b.parallel for b in seed.blocks)


def test_parallel_and_sequential_blocks_match_their_formulas():
    """Sequential: one lane, x0 mixed in, attention then MLP. Parallel (the record's two lanes): attention reads lane
    0 mixed with x0, the MLP reads lane 1 as it is, each lane keeps resid_lambda x itself plus both outputs weighted
    by the post-lambdas (post[0] the attention's to lane 0 and 1, post[1] the MLP's)."""
    dim = 32
    for parallel in (False, True):
        c = shape(
            model_dim=dim,
            num_heads=4,
            num_kv_heads=2,
            rope_dims=0,
            qk_gain_init=1.0,
            xsa=0,
            attn_out_gate=0,
            mlp_mult=2.0,
            ln_scale=1,
            x0_mix=1,
            parallel_start=3 if parallel else -1,
        )
        block = randomize(tg.Block(3, c))
        attn, mlp = block.attn, block.mlp
        x, x1, x0 = torch.randn(2, 8, dim), torch.randn(2, 8, dim), torch.randn(2, 8, dim)
        s = 1 / math.sqrt(4)
        mixed = block.resid_mix[0] * x + block.resid_mix[1] * x0
        if parallel:
            a = block.attn_scale * attn(tg.rms_norm(mixed) * s)
            m = block.mlp_scale * mlp(tg.rms_norm(x1) * s)
            r, p = block.resid_lambdas.tolist(), block.post_lambdas.tolist()
            want = (r[0] * x + p[0][0] * a + p[1][0] * m, r[1] * x1 + p[0][1] * a + p[1][1] * m)
            got = block((x, x1), x0)
            assert len(got) == 2 and all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))
            one = block((x,), x0)  # the first parallel block: both lanes start from the stream
            assert torch.allclose(one[1], block((x, x), x0)[1], atol=1e-6)
            fresh = tg.Block(3, c)
            assert torch.equal(fresh.resid_lambdas, torch.full((2,), 1.1)) and fresh.post_lambdas.tolist() == [
                [1, 1],
                [1, 1],
            ]
        else:
            r = mixed + block.attn_scale * attn(tg.rms_norm(mixed) * s)
            want = r + block.mlp_scale * mlp(tg.rms_norm(r) * s)
            assert torch.allclose(block((x,), x0)[0], want, atol=1e-5)
            avg = block.resid_mix[0] * (0.5 * (x + x1)) + block.resid_mix[1] * x0  # two lanes in: their mean
            r = avg + block.attn_scale * attn(tg.rms_norm(avg) * s)
            assert torch.allclose(block((x, x1), x0)[0], r + block.mlp_scale * mlp(tg.rms_norm(r) * s), atol=1e-5)


def reference_hidden(model: tg.GPT, idx: torch.Tensor, order: list[int], n_skip: int) -> torch.Tensor:
    """The record's forward written out: encoder = first half of the virtual order (pushes), decoder = the rest
    (pops, mirrored); a skip goes into lane 0 through lerp(w*skip, x, sigmoid(gate)); lanes start at the first
    parallel block, from the stream before its skip (only lane 0 gets the skip), and end as their mean."""
    x = x0 = tg.rms_norm(model.tok_emb(idx))
    lane0 = lane1 = None
    n_enc, skips = len(order) // 2, []
    for pos, i in enumerate(order):
        block = model.blocks[i]
        if block.parallel and lane0 is None:  # both lanes start from the stream before this block's skip
            lane0 = lane1 = x
        if pos >= n_enc and pos - n_enc < n_skip and skips:
            k = pos - n_enc
            s = model.skip_weights[k] * skips.pop()
            g = torch.sigmoid(model.skip_gates[k])
            if lane0 is not None:
                lane0 = g * lane0 + (1 - g) * s
            else:
                x = g * x + (1 - g) * s
        if block.parallel:
            lane0, lane1 = block((lane0, lane1), x0)
        else:
            (x,) = block((x,), x0)
        if pos < n_enc:
            skips.append(x if lane0 is None else lane0)
    return tg.rms_norm(x if lane0 is None else 0.5 * (lane0 + lane1))


def test_virtual_order_skips_and_two_lanes_match_the_record_written_out():
    """11 blocks as the record (loop 3-5 three times, parallel from 8): 17 virtual layers, 8 skips; without
    recurrence the same weights pair 5 encoder and 6 decoder layers."""
    cfg = config("frontier", model_dim=64, num_heads=4, num_kv_heads=2, rope_dims=8, vocab_size=64, smear_gate=0)
    model = randomize(tg.build_model(cfg))
    assert model.n_skip == 8 and [b.parallel for b in model.blocks].index(True) == 8
    idx = torch.randint(2, 64, (2, 12))  # no BOS: the reference calls the blocks without the document mask
    for loops in (1, 3):
        model.set_loops(loops)
        want = reference_hidden(model, idx, model.layer_order(), 8)
        assert torch.allclose(model.hidden(idx), want, atol=1e-5), loops


def test_recurrence_ramp_blends_plain_and_looped_networks():
    """At gain 0 the looped model computes exactly the plain one (no jump when recurrence switches on, although
    the virtual-order skips pair differently), at gain 1 the looped one, in between their blend."""
    model = randomize(tg.build_model(config(**ALL_ON))).eval()
    idx = torch.randint(2, 1024, (1, 16))  # no BOS: stack() is called without the mask below
    model.set_loops(1)
    plain = model.hidden(idx)
    model.set_loops(3)
    looped = model.hidden(idx)
    assert not torch.allclose(plain, looped, atol=1e-3)
    model.set_loops(3, 0.0)
    assert torch.allclose(model.hidden(idx), plain, atol=1e-6)
    model.set_loops(3, 0.25)
    x0 = tg.rms_norm(model.smear(model.tok_emb(idx), idx))
    a, b = model.stack(x0, model.layer_order(1)), model.stack(x0, model.layer_order())
    assert torch.allclose(model.hidden(idx), tg.rms_norm(a + 0.25 * (b - a)), atol=1e-6)


def test_leaky_relu_squared_mlp():
    mlp = randomize(tg.MLP(shape(model_dim=8, mlp_mult=2.0, mlp_act="leaky_relu2", leaky_slope=0.5)))
    x = torch.randn(3, 8)
    h = x @ mlp.fc.weight.T
    assert torch.allclose(mlp(x), torch.where(h > 0, h, 0.5 * h).square() @ mlp.proj.weight.T, atol=1e-6)
    relu = tg.MLP(shape(model_dim=8, mlp_mult=2.0, mlp_act="relu2"))
    assert relu.slope == 0.0


def test_unet_skips_follow_the_baseline_push_pop_order():
    cfg = config(num_layers=5, num_loops=1, smear_gate=0, skip_gates=0, parallel_start=-1)
    model = randomize(tg.build_model(cfg))
    idx = torch.randint(2, 1024, (1, 12))  # no BOS: the blocks are called without the document mask
    x = x0 = tg.rms_norm(model.tok_emb(idx))
    skips = []
    for i in range(2):  # encoder: blocks 0, 1 push
        (x,) = model.blocks[i]((x,), x0)
        skips.append(x)
    for k, i in enumerate(range(2, 5)):  # decoder: blocks 2, 3 pop (block 4 has nothing left)
        if skips:
            x = x + model.skip_weights[k] * skips.pop()
        (x,) = model.blocks[i]((x,), x0)
    assert torch.allclose(model.hidden(idx), tg.rms_norm(x), atol=1e-5)


def test_smear_gate_is_masked_at_bos():
    smear = randomize(tg.SmearGate(12))
    x = torch.randn(1, 6, 16)
    idx = torch.tensor([[5, 6, tg.BOS_ID, 7, 8, tg.BOS_ID]])
    out = smear(x, idx)
    assert torch.equal(out[0, 2], x[0, 2]) and torch.equal(out[0, 5], x[0, 5])  # BOS never sees the old doc
    assert not torch.allclose(out[0, 3], x[0, 3])
    assert torch.equal(out[0, 0], x[0, 0])  # nothing before position 0


def test_baseline_preset_is_the_plain_baseline():
    """All features off: 9 layers, relu^2 2x MLP, vocab 1024: the challenge baseline's 17,059,912 parameters."""
    h = tg.Hyperparameters.from_env({"PRESET": "baseline"})
    model = tg.build_model(h.model)
    assert sum(p.numel() for p in model.parameters()) == 17_059_912
    assert model.smear is None and model.skip_gates is None and model.layer_order() == list(range(9))
    assert all(b.attn.gate is None and not b.attn.xsa and not b.parallel and b.norm_scale == 1.0 for b in model.blocks)


def test_frontier_defaults_size():
    h = tg.Hyperparameters.from_env({})
    model = tg.build_model(h.model)
    n = sum(p.numel() for p in model.parameters())
    assert 35_500_000 < n < 36_500_000  # SPEC: 35.9M
    roles = tg.param_roles(model)
    assert roles["tok_emb.weight"] == "embed" and roles["blocks.0.mlp.fc.weight"] == "mlp"
    assert roles["blocks.0.attn.c_q.weight"] == "attn" and roles["blocks.0.attn.gate.weight"] == "control"


def test_build_model_rejects_a_foreign_config():
    cfg = dataclasses.asdict(config())
    cfg.pop("xsa")
    cfg["bogus"] = 1
    with pytest.raises(tg.UserError, match="missing \\['xsa'\\], unknown \\['bogus'\\]"):
        tg.build_model(cfg)


def test_checkpoint_round_trip(tmp_path):
    h = tg.Hyperparameters.from_env({"PRESET": "tiny"})
    model = randomize(tg.build_model(h.model))
    path = tmp_path / "m.ckpt.pt"
    tg.save_checkpoint(path, h.model, model.state_dict(), {"seed": 1})
    cfg, state, hp = tk.load_checkpoint(path)
    clone = tg.build_model(cfg)
    clone.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), clone.state_dict().values()))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(tk.UserError, match="bad.pt"):
        tk.load_checkpoint(tmp_path / "bad.pt")


def test_orthogonal_init_as_the_record():
    """ORTHO_INIT (frontier default): Q, K, V and MLP-input matrices start with orthonormal rows or columns (gain 1),
    zero-initialised projections stay zero; the baseline preset keeps the official init."""
    h = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "x"})
    torch.manual_seed(0)
    model = tg.build_model(h.model)
    tg.init_weights(model, h)
    for b in model.blocks:
        for w in (b.attn.c_q.weight, b.attn.c_k.weight, b.attn.c_v.weight, b.mlp.fc.weight):
            small = w @ w.T if w.size(0) <= w.size(1) else w.T @ w  # the smaller Gram matrix is the identity
            assert torch.allclose(small, torch.eye(small.size(0)), atol=1e-5)
        assert not b.mlp.proj.weight.any() and not b.attn.proj.weight.any()
    base = tg.Hyperparameters.from_env({"PRESET": "baseline", "RUN_ID": "x"})
    assert base.ortho_init == 0 and h.ortho_init == 1


def test_document_isolation_equals_running_each_document_alone():
    """A packed window (a BOS starts each document) scores every token as if its document ran alone; tokens before
    the first BOS are one document too. Without a BOS the mask is the causal one (dense attention)."""
    model = randomize(tg.build_model(config(**ALL_ON))).eval()
    model.set_loops(3)
    idx = torch.randint(2, 1024, (1, 30))
    idx[0, 7] = idx[0, 19] = tg.BOS_ID
    with torch.no_grad():
        packed = model(idx)
        alone = torch.cat([model(idx[:, a:b]) for a, b in ((0, 7), (7, 19), (19, 30))], dim=1)
        assert torch.allclose(packed, alone, atol=1e-4)
        plain = idx.clone()
        plain[plain == tg.BOS_ID] = 5
        dense = dataclasses.replace(model.cfg, doc_isolation=0)
        other = tg.build_model(dense).eval()
        other.load_state_dict(model.state_dict())
        other.set_loops(3)
        assert torch.allclose(model(plain), other(plain), atol=1e-5)
        assert not torch.allclose(model(idx), other(idx), atol=1e-3)  # with BOS inside, dense attention differs


@pytest.mark.parametrize("preset", list(tg.PRESETS))
def test_every_preset_builds_with_few_layers(preset):
    """Layer positions default to fractions of NUM_LAYERS and the loop span is checked only when looping is on, so
    any NUM_LAYERS >= 1 builds under every preset (issue 15), and the forward runs."""
    for n in (1, 2, 3, 4):
        env = {"PRESET": preset, "NUM_LAYERS": str(n), "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1"}
        env |= {
            "VOCAB_SIZE": "64",
            "TRAIN_SEQ_LEN": "16",
            "TRAIN_BATCH_TOKENS": "64",
            "EVAL_STRIDE": "0",
            "TTT_MODE": "off",
        }
        h = tg.Hyperparameters.from_env(env)
        model = tg.build_model(h.model)
        model.set_loops(h.model.num_loops)
        assert len(model.blocks) == n and len(model.layer_order()) >= n
        logits = model(torch.randint(0, 64, (1, 16)))
        assert logits.shape == (1, 16, 64) and torch.isfinite(logits).all()
