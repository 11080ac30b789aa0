"""The seed repositories' variants (issue 10) as options of train_gpt.py, each against a slow, obviously correct
reference: SwiGLU, z-loss, local and alternating attention, BigramHash, the LR schedules and AdamW-only; every
variant is causal and round-trips through the artifact."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_ON, config, randomize, reference_attention, shape

import train_gpt as tg

VARIANTS = {
    "swiglu": dict(mlp_act="swiglu"),
    "local": dict(attn="local", attn_window=5),
    "alternating": dict(attn="alternating", attn_window=3),
    "bigram": dict(bigram_hash=97),
    "z_loss": dict(z_loss=1e-3),
    "mla": dict(attn="mla", mla_rank=16),
    "linear": dict(attn="linear"),
    "engram": dict(engram_slots=8),
    "linear_dense": dict(attn="linear", doc_isolation=0),
    "sparse": dict(attn="sparse", attn_window=3, attn_global=2, attn_block=4, attn_random_blocks=1),
}


def test_sparse_mask_is_window_global_tokens_and_random_earlier_blocks():
    """The BigBird mask written out with loops: causal, and a key is visible when it is in the window, one of the
    first ATTN_GLOBAL tokens, or in one of the ATTN_RANDOM_BLOCKS earlier key blocks (smallest hash) of the query's
    block."""
    c = dict(num_layers=2, attn="sparse", attn_window=3, attn_global=2, attn_block=4, attn_random_blocks=2)
    model = tg.build_model(config(doc_isolation=0, **c))
    T, bs = 24, 4
    got = model.attn_mask(torch.zeros(1, T, dtype=torch.long) + 5, local=True)[0, 0]
    n = T // bs
    chosen = {}
    for qb in range(n):
        hashes = sorted((((qb * 1_000_003 + kb * 7_919) * 2_654_435_761) % (1 << 31), kb) for kb in range(qb))
        chosen[qb] = {kb for _, kb in hashes[:2]}
    for i in range(T):
        for j in range(T):
            want = j <= i and (i - j < 3 or j < 2 or j // bs in chosen[i // bs])
            assert bool(got[i, j]) == want, (i, j)
    assert got.sum() > torch.ones(T, T).tril().logical_and(torch.ones(T, T).triu(-2)).sum()  # more than the band


def test_swiglu_mlp_matches_its_formula():
    mlp = randomize(tg.MLP(shape(model_dim=8, mlp_mult=2.0, mlp_act="swiglu")))
    x = torch.randn(3, 8)
    h = x @ mlp.fc.weight.T
    a, b = h[:, :16], h[:, 16:]
    want = (a * torch.sigmoid(a) * b) @ mlp.proj.weight.T
    assert mlp.fc.weight.shape == (32, 8) and torch.allclose(mlp(x), want, atol=1e-6)


def test_local_attention_equals_full_attention_with_an_explicit_band_mask():
    c = shape(model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=0, qk_gain_init=1.0, xsa=0, attn_out_gate=0)
    attn = randomize(tg.Attention(c))
    x, T, w = torch.randn(2, 12, 32), 12, 4
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    band = ((j <= i) & (i - j < w))[None, None]
    # the reference: scores over all keys, -inf outside the band (written out, not via SDPA's mask)
    B, H, Hkv, hd = 2, 4, 2, 8
    q = (x @ attn.c_q.weight.T).view(B, T, H, hd).transpose(1, 2)
    k = (x @ attn.c_k.weight.T).view(B, T, Hkv, hd).transpose(1, 2)
    v = (x @ attn.c_v.weight.T).view(B, T, Hkv, hd).transpose(1, 2)
    rope = lambda t: tg.rotate_half_dims(tg.rms_norm(t), attn.rope_dims, attn.rope_base)  # noqa: E731
    q = rope(q) * attn.q_gain[None, :, None, None]
    k, v = rope(k).repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~band, float("-inf"))
    want = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, 32) @ attn.proj.weight.T
    assert torch.allclose(attn(x, band), want, atol=1e-5)
    assert torch.allclose(attn(x, (j <= i)[None, None]), reference_attention(attn, x), atol=1e-5)


def test_local_and_alternating_blocks_and_their_masks():
    m = tg.build_model(config(num_layers=4, attn="alternating", attn_window=3, doc_isolation=0))
    assert [b.local for b in m.blocks] == [True, False, True, False]  # the last block is global
    assert not any(b.local for b in tg.build_model(config(num_layers=4)).blocks)
    idx = torch.tensor([[5, 6, 7, 8, 9]])
    band = m.attn_mask(idx, local=True)[0, 0]
    assert band.tolist()[4] == [False, False, True, True, True] and m.attn_mask(idx) is None
    iso = tg.build_model(config(num_layers=2, attn="local", attn_window=3))
    idx = torch.tensor([[5, 6, tg.BOS_ID, 8, 9]])
    assert iso.attn_mask(idx, local=True)[0, 0].tolist()[4] == [False, False, True, True, True]
    assert iso.attn_mask(idx, local=True)[0, 0].tolist()[2] == [False, False, True, False, False]  # BOS: new doc


def test_bigram_hash_adds_the_hashed_pair_vector():
    model = randomize(tg.build_model(config(num_layers=2, bigram_hash=97, smear_gate=0)))
    assert tg.build_model(config(num_layers=2, bigram_hash=97)).bigram.weight.abs().sum() == 0  # zero at init
    idx = torch.randint(2, 1024, (2, 10))
    prev = torch.cat([torch.zeros(2, 1, dtype=idx.dtype), idx[:, :-1]], dim=1)
    x = model.tok_emb(idx) + model.bigram.weight[(prev * tg.BIGRAM_HASH_MULT + idx) % 97]
    x0 = tg.rms_norm(x)
    want = tg.rms_norm(model.stack(x0, model.layer_order(), (model.attn_mask(idx), None)))
    assert torch.allclose(model.hidden(idx), want, atol=1e-5)
    assert tg.param_roles(model)["bigram.weight"] == "embed"


def test_z_loss_is_added_in_training_only():
    model = randomize(tg.build_model(config(num_layers=2, z_loss=1e-3)), seed=1)
    idx, tgt = torch.randint(2, 1024, (2, 8)), torch.randint(2, 1024, (2, 8))
    logits = model(idx)
    ce = F.cross_entropy(logits.view(-1, 1024), tgt.view(-1))
    z = torch.logsumexp(logits, dim=-1).square().mean()
    assert torch.allclose(model.train()(idx, tgt), ce + 1e-3 * z, atol=1e-5)
    assert torch.allclose(model.eval()(idx, tgt), ce, atol=1e-6)  # scoring is plain cross-entropy
    assert torch.allclose(model.train()(idx, tgt, reduction="none").mean(), ce, atol=1e-6)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_is_causal_and_round_trips_through_the_artifact(name):

    model = randomize(tg.build_model(config(**{**ALL_ON, **VARIANTS[name]}))).eval()
    model.set_loops(3)
    T = 20
    idx = torch.randint(2, 1024, (1, T))
    idx[0, 9] = tg.BOS_ID
    base = model(idx)
    for t in (3, 9, 15):
        changed = idx.clone()
        changed[0, t + 1 :] = torch.randint(2, 1024, (T - t - 1,))
        assert torch.allclose(model(changed)[0, : t + 1], base[0, : t + 1], atol=1e-5), f"{name}: saw the future"
    h = tg.Hyperparameters.from_env(
        {"PRESET": "tiny", **{k.upper(): str(v) for k, v in {**ALL_ON, **VARIANTS[name]}.items()}}
    )
    h = dataclasses.replace(h, gptq=0, target_bytes=0)
    blob, _ = tg.build_artifact(model.state_dict(), tg.param_roles(model), model.cfg, h, None)
    loaded, _ = tg.load_artifact_model(blob, model.cfg)
    assert loaded.cfg == model.cfg and set(loaded.state_dict()) == set(model.state_dict())


def test_lr_schedules():
    h = tg.Hyperparameters.from_env({"PRESET": "tiny", "ITERATIONS": "100", "WARMDOWN_FRAC": "0.5", "MIN_LR": "0"})
    clock = tg.RunClock(h, 0.0)
    lr = lambda sched, step: tg.lr_multiplier(dataclasses.replace(h, lr_schedule=sched), clock, step)  # noqa: E731
    assert lr("warmdown", 25) == 1.0 and lr("warmdown", 75) == pytest.approx(0.5)
    assert lr("wsd", 25) == 1.0 and lr("wsd", 75) == pytest.approx(1 - math.sqrt(0.5))
    assert lr("cosine", 0) == pytest.approx(1.0) and lr("cosine", 50) == pytest.approx(0.5)
    assert lr("cosine", 100) == pytest.approx(0.0, abs=1e-12)


def test_adamw_only_routes_every_parameter_to_adamw():
    h = tg.Hyperparameters.from_env({"PRESET": "tiny", "OPTIMIZER": "adamw", "ADAMW_MATRIX_LR": "0.002"})
    model = tg.build_model(h.model)
    (opt,) = tg.build_optimizers(model, h, tg.Dist())
    assert isinstance(opt, torch.optim.AdamW)
    matrix = [g for g in opt.param_groups if g["lr"] == 0.002]
    assert len(matrix) == 1 and len(matrix[0]["params"]) == sum(
        r in ("attn", "mlp") for r in tg.param_roles(model).values()
    )


@pytest.mark.parametrize("env,needle", [
    ({"ATTN": "bigbird"}, "ATTN='bigbird'"),
    ({"ATTN": "local", "ATTN_WINDOW": "0"}, "ATTN_WINDOW"),
    ({"ATTN": "local", "ATTN_WINDOW": "9999"}, "ATTN_WINDOW"),
    ({"BIGRAM_HASH": "-1"}, "BIGRAM_HASH"),
    ({"ATTN": "mla", "MLA_RANK": "65"}, "MLA_RANK"),
    ({"ATTN": "mla", "ROPE_DIMS": "0"}, "ROPE_DIMS"),
    ({"ATTN": "sparse", "ATTN_BLOCK": "0"}, "ATTN_BLOCK"),
    ({"ATTN": "sparse", "ATTN_RANDOM_BLOCKS": "-2"}, "ATTN_RANDOM_BLOCKS"),
    ({"MLP_ACT": "gelu"}, "MLP_ACT"),
    ({"LR_SCHEDULE": "linear"}, "LR_SCHEDULE"),
    ({"OPTIMIZER": "sgd"}, "OPTIMIZER"),
])  # fmt: skip
def test_bad_variant_settings_are_one_line_errors(env, needle):
    with pytest.raises(tg.UserError, match=needle) as e:
        tg.Hyperparameters.from_env({"PRESET": "tiny", **env})
    assert "\n" not in str(e.value)


def test_files_written_before_the_variants_still_load():
    """A model config recorded before these options existed lacks their keys: they take their off defaults; any
    other missing or unknown key is still refused."""
    d = dataclasses.asdict(tg.ModelConfig())
    old = {k: v for k, v in d.items() if k not in tg.ADDED_OPTIONS}
    assert tg.ModelConfig.from_dict(old) == tg.ModelConfig()
    with pytest.raises(tg.ArtifactError, match="missing \\['xsa'\\]"):
        tg.ModelConfig.from_dict({k: v for k, v in d.items() if k != "xsa"})
    with pytest.raises(tg.ArtifactError, match="unknown \\['mystery'\\]"):
        tg.ModelConfig.from_dict({**d, "mystery": 1})


def test_mla_equals_the_uncompressed_attention_it_factorises():
    """MLA's keys and values are linear in x through the latent: an ordinary attention whose K is [the shared rotated
    part; K_up @ W_latent] per head and whose V is V_up @ W_latent computes exactly the same."""
    base = dict(model_dim=32, num_heads=4, num_kv_heads=2, rope_dims=4, qk_gain_init=1.5, xsa=1, attn_out_gate=1)
    mla = randomize(tg.Attention(shape(attn="mla", mla_rank=6, **base)))
    std = randomize(tg.Attention(shape(**base)))
    hd, rd = 8, 4
    with torch.no_grad():
        for name in ("c_q", "proj", "gate"):
            getattr(std, name).weight.copy_(getattr(mla, name).weight)
        std.q_gain.copy_(mla.q_gain)
        up = mla.c_k.weight.view(2, hd - rd, 6) @ mla.c_kv.weight  # (kv heads, hd - rd, dim)
        std.c_k.weight.copy_(torch.cat((mla.c_kr.weight.expand(2, rd, 32), up), dim=1).reshape(2 * hd, 32))
        std.c_v.weight.copy_(mla.c_v.weight @ mla.c_kv.weight)
    x = torch.randn(2, 10, 32)
    assert sum(p.numel() for p in mla.parameters()) < sum(p.numel() for p in std.parameters())
    assert torch.allclose(mla(x), std(x), atol=1e-5)


def naive_linear_attention(q, k, v, bos):
    """The recurrence, position by position: a running sum of phi(k)^T v and of phi(k), reset where a document
    starts (bos[t] True), or never."""
    phi = lambda t: F.elu(t) + 1  # noqa: E731
    B, H, T, D = q.shape
    out = torch.zeros(B, H, T, v.size(-1), dtype=torch.float64)
    for b in range(B):
        S, z = torch.zeros(H, D, v.size(-1), dtype=torch.float64), torch.zeros(H, D, dtype=torch.float64)
        for t in range(T):
            if bos[b, t]:
                S, z = S * 0, z * 0
            fk, fq = phi(k[b, :, t]).double(), phi(q[b, :, t]).double()
            S = S + fk[:, :, None] * v[b, :, t].double()[:, None, :]
            z = z + fk
            out[b, :, t] = (fq[:, None, :] @ S)[:, 0] / (fq * z).sum(-1, keepdim=True)
    return out.float()


@pytest.mark.parametrize("T", [5, 64, 150])
def test_linear_attention_equals_the_naive_recurrence(T):
    torch.manual_seed(T)
    q, k, v = torch.randn(2, 3, T, 8), torch.randn(2, 3, T, 8), torch.randn(2, 3, T, 6)
    none = torch.zeros(2, T, dtype=torch.bool)
    assert torch.allclose(tg.linear_attention(q, k, v, None), naive_linear_attention(q, k, v, none), atol=1e-4)
    idx = torch.randint(2, 50, (2, T))
    idx[0, T // 3] = idx[1, T // 2] = tg.BOS_ID
    model = tg.build_model(config(num_layers=1, attn="linear"))
    got = tg.linear_attention(q, k, v, model.attn_mask(idx))
    assert torch.allclose(got, naive_linear_attention(q, k, v, idx == tg.BOS_ID), atol=1e-4)


def test_engram_bank_is_read_at_the_middle_of_the_order_through_its_gate():
    model = randomize(tg.build_model(config(num_layers=4, engram_slots=8, smear_gate=0, unet_skips=0)))
    assert tg.build_model(config(num_layers=4, engram_slots=8)).memory.gate.abs().sum() == 0  # off at init
    mem = model.memory
    idx = torch.randint(2, 1024, (1, 9))
    x0 = tg.rms_norm(model.tok_emb(idx))
    order = model.layer_order()
    lanes = (x0,)
    for pos, i in enumerate(order):
        if pos == len(order) // 2:
            x = lanes[0]
            read = torch.softmax(tg.rms_norm(x) @ mem.keys.weight.T / math.sqrt(x.size(-1)), dim=-1)
            lanes = (x + mem.gate * (read @ mem.values.weight.T), *lanes[1:])
        lanes = model.blocks[i](lanes, x0, model.attn_mask(idx))
    x = lanes[0] if len(lanes) == 1 else 0.5 * (lanes[0] + lanes[1])
    assert torch.allclose(model.hidden(idx), tg.rms_norm(x), atol=1e-5)
