"""CPU proxies of the CUDA path: torch.compile(fullgraph=True) of the training forward+backward, of the scoring
forward and of both TTT forwards, at a tiny shape with every feature of the frontier on, with recurrence off and
on; compiled against eager (fp32), and bf16 autocast against fp32.

fullgraph=True raises on any graph break, so a case passing proves the path compiles to one graph per call. The
default suite captures every path with Dynamo alone (the `eager` backend: about a second a case), the training step
also through AOT autograd (`aot_eager`: the joint forward/backward graph) and the scoring forward through Inductor.
The other AOT and Inductor cases are under `-m slow`: Inductor generates and compiles C++ for every fused kernel on
CPU, 20-100 s a case on a cold cache.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import train_gpt as tg

# Every frontier feature on, at a shape that compiles in seconds: 4 blocks (0-1 sequential, 2-3 parallel residual),
# block 1 looped (a 5-layer pass with recurrence on), two U-Net skips with gates, partial RoPE (4 of 8 dims), GQA,
# XSA, SmearGate, the attention output gate, x0 mix, LN scale, LeakyReLU(0.5)^2 and the logit soft cap.
ALL_ON = dict(PRESET="tiny", VOCAB_SIZE=64, NUM_LAYERS=4, MODEL_DIM=32, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=2,
              ROPE_DIMS=4, LOOP_START=1, LOOP_END=1, NUM_LOOPS=2, PARALLEL_START=2, GATE_INPUTS=8, XSA=1,
              SMEAR_GATE=1, ATTN_OUT_GATE=1, SKIP_GATES=1, UNET_SKIPS=1, X0_MIX=1, LN_SCALE=1, MLP_ACT="leaky_relu2",
              LEAKY_SLOPE=0.5, LOGIT_SOFTCAP=30, TIE_EMBEDDINGS=1)  # fmt: skip
B, T = 2, 16  # two sequences (two LoRA documents) of 16 tokens
LOOPS = {"off": 1, "on": ALL_ON["NUM_LOOPS"]}
KINDS = ("train", "score", "ttt_sgd", "ttt_lora")

# Compiled vs eager, both fp32. The graphs compute the same ops; Inductor fuses them and may reorder the sums inside
# a reduction (rms_norm, softmax, the cross-entropy mean), which moves results by a few fp32 ulps. Measured here
# (torch 2.13 CPU, Inductor): at most 4.8e-6 on per-token losses of magnitude 5-10 (about 5 ulps) and 2.3e-6 on
# gradients. assert_close allows atol + rtol * |expected|: 9e-5 at a loss of 8, 1e-5 on a small gradient, a 4x-20x
# margin that still fails on any real difference (a missed feature or a stale graph moves the loss by > 1e-2).
FP32_TOL = dict(rtol=1e-5, atol=1e-5)
# bf16 autocast vs fp32 on the training loss. bf16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2%); matmul
# inputs and outputs are rounded through 5 virtual layers of 5-6 matmuls each, while norms, the soft cap and the
# cross-entropy stay fp32. Such roundings add up roughly as a random walk (~sqrt(30) x 0.2% = 1% of a logit) and
# the mean loss moves by less, as per-token errors of both signs cancel. Measured here: 0.06-0.08% of the loss, and
# a gradient cosine of 0.9993 with fp32. The bounds (1% of the loss, cosine 0.99) are bf16's own precision, >10x
# the measured error, while a real bug (a cast dropped, a path skipped) moves the loss by far more.
BF16_LOSS_RTOL = 1e-2


def build(**over: object) -> tuple[tg.Hyperparameters, tg.GPT]:
    """Settings and model through the script's own constructors (the one place that knows how)."""
    h = tg.Hyperparameters.from_env({k: str(v) for k, v in {**ALL_ON, **over}.items()})
    return h, tg.build_model(h.model)


def randomized_model(seed: int = 0, **over: object) -> tg.GPT:
    """The all-features model with every parameter random (zero-initialised gates and projections included), so
    every path of the forward contributes to the loss and receives a gradient."""
    _, model = build(**over)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, targets (B, T) with BOS tokens inside (SmearGate's mask), and a mask of real targets (TTT)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, ALL_ON["VOCAB_SIZE"], (B, T + 1), generator=g)
    ids[0, 5] = ids[1, 9] = tg.BOS_ID
    real = torch.ones(B, T, dtype=torch.bool)
    real[1, 11:] = False  # a short last window, as TTT's batches have
    return ids[:, :-1], ids[:, 1:], real


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each case compiles from scratch (no graph or guard of an earlier case is reused)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run_case(model: tg.GPT, fn, kind: str, amp: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One call the way train_gpt.py makes it, through `fn` (the model, or its compiled form): the value it
    returns and the gradients it leaves (the trained parameters, or the LoRA adapters)."""
    x, y, real = batch()
    cpu = torch.device("cpu")
    lora: list[torch.nn.Parameter] = []
    if kind == "train":  # train_step: model(x, y) under autocast, backward of the mean loss
        model.train().requires_grad_(True)
        with tg.amp_context(cpu, amp):
            out = fn(x, y)
        out.backward()
    elif kind == "score":  # _score_windows: per-token losses under inference_mode
        model.eval()
        with torch.inference_mode(), tg.amp_context(cpu, amp):
            out = fn(x, y, reduction="none").float()
        return out.clone(), []
    elif kind == "ttt_sgd":  # _ttt_sgd: per-token losses with grad, masked sum over the real targets
        model.eval().requires_grad_(True)
        with tg.amp_context(cpu, amp):
            out = fn(x, y, reduction="none").float()
        (torch.where(real, out, 0.0).sum() / real.sum()).backward()
    elif kind == "ttt_lora":  # _ttt_lora: frozen model, per-document adapters on every attn/mlp/head linear
        model.eval().requires_grad_(False)
        # alpha = rank: adapter scale 1, the regime FP32_TOL was measured in (the default alpha 144 over rank 2 scales
        # the adapters by 72, and fp32 reordering noise in the A gradients with them, up to 5e-5)
        h = tg.Hyperparameters.from_env({"PRESET": "tiny", "TTT_LORA_RANK": "2", "TTT_LORA_ALPHA": "2", "SEED": "7"})
        with tg._attach_lora(model, np.arange(B), h) as lora:
            with torch.no_grad():
                for b in lora[1::2]:  # B starts at zero; make it non-zero so the adapters change the output
                    b.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(3))
            with tg.amp_context(cpu, amp):
                out = fn(x, y, reduction="none").float()
            (torch.where(real, out, 0.0).sum(1) / real.sum(1)).sum().backward()
    else:
        raise AssertionError(kind)
    params = lora or [p for p in model.parameters()]
    assert all(p.grad is not None for p in params), "a parameter received no gradient"
    grads = [p.grad.detach().clone() for p in params]
    for p in model.parameters():
        p.grad = None
    return out.detach().clone(), grads


def compiled_vs_eager(kind: str, loops: str, backend: str) -> None:
    model = randomized_model()
    model.set_loops(LOOPS[loops])
    want, want_grads = run_case(model, model, kind)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend=backend)
    got, got_grads = run_case(model, compiled, kind)
    torch.testing.assert_close(got, want, **FP32_TOL)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **FP32_TOL)


def cases() -> list:
    """Every (backend, kind, loops). Default suite: every path through Dynamo alone (`eager`: the graph-break check,
    about a second each), plus the training forward+backward through AOT autograd and the scoring forward through
    Inductor, with recurrence on; the other AOT and Inductor cases are slow."""
    fast = {("aot_eager", "train", "on"), ("inductor", "score", "on")}
    return [pytest.param(b, k, lo, id=f"{b}-{k}-loops_{lo}",
                         marks=() if b == "eager" or (b, k, lo) in fast else pytest.mark.slow)
            for b in ("eager", "aot_eager", "inductor") for k in KINDS for lo in LOOPS]  # fmt: skip


@pytest.mark.parametrize("backend,kind,loops", cases())
def test_compiles_in_one_graph_and_equals_eager(backend, kind, loops):
    """The path compiles without a graph break (fullgraph) and the compiled call reproduces eager: values and
    gradients within FP32_TOL."""
    compiled_vs_eager(kind, loops, backend)


def test_model_really_has_every_feature_on():
    """The shape above exercises every path: if a preset or a default changes, this says which feature went off."""
    h, model = build()
    blocks = list(model.blocks)
    assert model.smear is not None and model.skip_weights is not None and model.skip_gates is not None
    assert model.skip_weights.size(0) == 2 and model.logit_softcap > 0
    assert all(b.attn.xsa and b.attn.gate is not None and b.resid_mix is not None for b in blocks)
    assert 0 < blocks[0].attn.rope_dims < blocks[0].attn.head_dim  # partial RoPE
    assert [b.parallel for b in blocks] == [False, False, True, True]
    assert len({b.norm_scale for b in blocks}) == len(blocks)  # LN scale 1/sqrt(i+1)
    assert all(b.mlp.slope == 0.5 for b in blocks)  # LeakyReLU(0.5)^2
    assert blocks[0].attn.num_kv_heads < blocks[0].attn.num_heads  # GQA
    model.set_loops(LOOPS["on"])
    assert model.layer_order() == [0, 1, 1, 2, 3]


def test_loop_switch_recompiles_instead_of_reusing_the_graph():
    """train() calls set_loops() on the module the compiled wrapper holds: the next call must see the new count (a
    guard on `loops` forces a new graph), never the graph traced for the old one."""
    model = randomized_model()
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="eager")
    x, y, _ = batch()
    with torch.no_grad():
        model.set_loops(1)
        off = compiled(x, y)
        model.set_loops(LOOPS["on"])
        on = compiled(x, y)
        torch.testing.assert_close(on, model(x, y), **FP32_TOL)
        model.set_loops(1)
        torch.testing.assert_close(compiled(x, y), off, **FP32_TOL)
    assert not torch.allclose(on, off, atol=1e-3), "recurrence on and off must give different losses"


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_bf16_autocast_matches_fp32(backend):
    """The CUDA recipe's bf16 autocast, on CPU: the compiled training loss (fullgraph) under autocast is within
    BF16_LOSS_RTOL of the fp32 eager loss, its gradients point the same way, and bf16 really ran (it differs)."""
    model = randomized_model()
    model.set_loops(LOOPS["on"])
    want, want_grads = run_case(model, model, "train")
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend=backend)
    got, got_grads = run_case(model, compiled, "train", amp=True)
    assert got.dtype == torch.float32  # the logits are cast to fp32 before the soft cap and the loss
    assert abs(got.item() - want.item()) <= BF16_LOSS_RTOL * abs(want.item()), (got.item(), want.item())
    assert got.item() != want.item(), "autocast had no effect: the forward did not run in bf16"
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in got_grads]),
                                                torch.cat([g.flatten() for g in want_grads]), dim=0)  # fmt: skip
    assert cos > 0.99, f"bf16 gradient direction differs from fp32: cosine {cos.item():.4f}"


def test_recurrence_ramp_changes_no_graph():
    """train() fades the repeated passes in by calling set_loops(loops, gain) with a new gain at many steps: the gain
    lives in a buffer, so the compiled model follows each value (equal to eager) without compiling again (a Python
    float would recompile at every value and, past Dynamo's recompile limit, silently fall back to eager)."""
    from torch._dynamo.testing import CompileCounter

    model = randomized_model()
    counter = CompileCounter()
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend=counter)
    x, y, _ = batch()
    losses = []
    with torch.no_grad():
        for gain in (0.25, 0.5, 0.75):
            model.set_loops(LOOPS["on"], gain)
            losses.append(compiled(x, y))
            torch.testing.assert_close(losses[-1], model(x, y), **FP32_TOL)
    assert counter.frame_count == 1, f"{counter.frame_count} compilations for 3 gains"
    assert len({round(v.item(), 6) for v in losses}) == 3, "the gain must change the loss"
