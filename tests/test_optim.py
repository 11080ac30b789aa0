"""Muon against a slow reference, near-orthogonality of its update, the schedules, and optimiser coverage."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import train_gpt as tg

PE = [  # the record's Polar Express tuples, exact (rounded to 4 decimals they move the update by ~6e-4)
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def slow_newton_schulz(g: torch.Tensor, steps: int, polar: bool, row_norm: bool) -> torch.Tensor:
    """Element-by-element transcription of SPEC section 5, in float64."""
    x = g.double().clone()
    if row_norm:
        for i in range(x.size(0)):
            x[i] = x[i] / (x[i].norm() + 1e-7)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T.clone()
    x = x / (x.norm() + 1e-7)
    for s in range(steps):
        a, b, c = PE[min(s, 4)] if polar else (3.4445, -4.7750, 2.0315)
        A = x @ x.T
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return x.T if tall else x


def slow_muon(ws, grads_per_step, lr, mu, wd, nesterov, polar, row_norm, steps=5):
    ws = [w.double().clone() for w in ws]
    bufs = [torch.zeros_like(w) for w in ws]
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(ws, grads)):
            g = g.double()
            bufs[i] = mu * bufs[i] + g
            u = g + mu * bufs[i] if nesterov else bufs[i]
            o = slow_newton_schulz(u, steps, polar, row_norm) * max(1.0, w.size(0) / w.size(1)) ** 0.5
            ws[i] = w * (1 - lr * wd) - lr * o
    return ws


@pytest.mark.parametrize(
    "nesterov,polar,row_norm,wd", [(True, True, True, 0.095), (True, False, False, 0.0), (False, True, False, 0.0)]
)
def test_muon_matches_slow_reference(nesterov, polar, row_norm, wd):
    torch.manual_seed(0)
    shapes = [(16, 8), (8, 24), (12, 12)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    init = [p.detach().clone() for p in params]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    opt = tg.Muon(
        params,
        lr=0.02,
        momentum=0.95,
        nesterov=nesterov,
        backend_steps=5,
        polar_express=polar,
        row_normalize=row_norm,
        weight_decay=wd,
    )
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    expected = slow_muon(init, grads, 0.02, 0.95, wd, nesterov, polar, row_norm)
    for p, e in zip(params, expected):
        assert torch.allclose(p.detach().double(), e, atol=1e-5), (p.detach().double() - e).abs().max()


@pytest.mark.parametrize("polar,lo,hi", [(False, 0.55, 1.2), (True, 0.8, 1.2)])
def test_orthogonalized_update_is_nearly_orthogonal(polar, lo, hi):
    torch.manual_seed(1)
    for shape in [(64, 32), (32, 96), (48, 48)]:
        g = torch.randn(shape) @ torch.diag(torch.logspace(0, 1, shape[1]))  # condition numbers 7 to 300
        s = torch.linalg.svdvals(tg.orthogonalize(g, 5, polar, False))
        assert lo < s.min() and s.max() < hi, (shape, s.min(), s.max())  # all singular values pulled to ~1


def test_polar_express_coefficients_are_the_published_ones():
    assert [tuple(c) for c in tg.NS_POLAR_EXPRESS] == PE
    assert tg.NS_CLASSIC == (3.4445, -4.7750, 2.0315)


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        tg.Muon(
            [torch.nn.Parameter(torch.zeros(3))],
            lr=0.1,
            momentum=0.9,
            nesterov=True,
            backend_steps=5,
            polar_express=True,
            row_normalize=False,
            weight_decay=0.0,
        )


def test_every_parameter_has_exactly_one_optimiser():
    h = tg.Hyperparameters.from_env({"PRESET": "tiny"})
    model = tg.build_model(h.model)
    muon, adam = tg.build_optimizers(model, h, tg.Dist())
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    roles = tg.param_roles(model)
    for name, p in model.named_parameters():
        assert (id(p) in muon_ids) == (roles[name] in ("attn", "mlp")), name
    lrs = {g["base_lr"] for g in adam.param_groups}
    assert lrs == {h.tied_embed_lr, h.scalar_lr}


def test_an_untagged_parameter_is_refused():
    h = tg.Hyperparameters.from_env({"PRESET": "tiny"})
    model = tg.build_model(h.model)
    model.extra = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="extra"):
        tg.build_optimizers(model, h, tg.Dist())


def env(**kw) -> tg.Hyperparameters:
    return tg.Hyperparameters.from_env({"PRESET": "tiny", **{k.upper(): str(v) for k, v in kw.items()}})


def clock(h: tg.Hyperparameters, budget_ms: float, agreed_ms: float = 0.0, step_ms: float = 0.0) -> tg.RunClock:
    return tg.RunClock(h, budget_ms, agreed_ms=agreed_ms, step_ms=step_ms)


def test_lr_schedule_by_time_constant_then_linear_down_floored_as_the_record_does():
    h = env(warmdown_frac=0.5, min_lr=0.1, max_wallclock_seconds=100)
    budget = 100_000.0
    assert tg.lr_multiplier(h, clock(h, budget, 0.0), 0) == 1.0
    assert tg.lr_multiplier(h, clock(h, budget, 50_000.0), 0) == pytest.approx(1.0)
    assert tg.lr_multiplier(h, clock(h, budget, 75_000.0), 0) == pytest.approx(0.5)  # max(left, floor)
    assert tg.lr_multiplier(h, clock(h, budget, 97_000.0), 0) == pytest.approx(0.1)
    assert tg.lr_multiplier(h, clock(h, budget, 120_000.0), 0) == pytest.approx(0.1)
    # between agreed readings the time is estimated from the step time: 10 steps of 2.5 s past 50 s
    assert tg.lr_multiplier(h, clock(h, budget, 50_000.0, 2_500.0), 10) == pytest.approx(0.5)


def test_lr_schedule_by_iterations_and_by_warmdown_iters():
    h = env(warmdown_frac=0.25, min_lr=0.0, iterations=100)
    assert tg.lr_multiplier(h, clock(h, 0.0), 70) == 1.0
    assert tg.lr_multiplier(h, clock(h, 0.0), 90) == pytest.approx(0.4)
    h = env(warmdown_iters=10, min_lr=0.0, iterations=100)
    assert tg.lr_multiplier(h, clock(h, 0.0), 95) == pytest.approx(0.5)
    # by time: 10 steps of 100 ms left of a 10 s budget -> the last second decays
    assert tg.lr_multiplier(h, clock(h, 10_000.0, 9_500.0, 100.0), 0) == pytest.approx(0.5)


def test_momentum_warmup():
    h = env(muon_momentum_warmup_start=0.85, muon_momentum=0.95)
    assert tg.muon_momentum(h, 0, 100) == pytest.approx(0.85)
    assert tg.muon_momentum(h, 50, 100) == pytest.approx(0.90)
    assert tg.muon_momentum(h, 500, 100) == pytest.approx(0.95)
    assert tg.muon_momentum(h, 0, 0) == pytest.approx(0.95)


def test_frontier_schedule_is_the_records_at_any_length_and_the_scale_aware_rule_is_opt_in():
    """The frontier's schedule is the 1.0611 record's constants at any run length (train_seed42.log: EMA 0.9965,
    Muon momentum 0.92 -> 0.97 over 1,500 steps, recurrence at 35% at once, warm-down 85% floored at 0.1); with
    SCHEDULE_REFERENCE_STEPS=4900 and MUON_MOMENTUM_HORIZON_FRAC (the cpu and tiny presets) the same fractions of
    the run at any length."""
    h = tg.Hyperparameters.from_env({"RUN_ID": "x"})
    for steps in (100, 4900, 20000):
        assert tg.scaled_schedule(h, steps) == (0.9965, 1500.0, 1.0)
    assert [tg.muon_momentum(h, s, 1500.0) for s in (0, 750, 1500, 4000)] == pytest.approx([0.92, 0.945, 0.97, 0.97])
    assert (h.loop_start_frac, h.loop_ramp_frac, h.warmdown_frac, h.min_lr) == (0.35, 0.0, 0.85, 0.1)
    assert (h.muon_momentum_warmup_start, h.muon_momentum, h.ema_decay) == (0.92, 0.97, 0.9965)
    h = tg.Hyperparameters.from_env(
        {"RUN_ID": "x", "SCHEDULE_REFERENCE_STEPS": "4900", "MUON_MOMENTUM_HORIZON_FRAC": "0.05"}
    )
    decay, warm, cap = tg.scaled_schedule(h, 4900)
    assert decay == pytest.approx(0.9965, abs=1e-12) and warm == pytest.approx(1500, abs=1e-9)
    decay, warm, cap = tg.scaled_schedule(h, 100)
    assert 1 / (1 - decay) == pytest.approx(100 * (1 / 0.0035) / 4900) and warm == pytest.approx(1500 / 49)
    assert 1 / (1 - cap) == pytest.approx(5) and tg.muon_momentum(h, 50, warm, cap) == pytest.approx(0.8)
    assert tg.scaled_schedule(h, 667)[2] > 0.97 > tg.scaled_schedule(h, 666)[2]  # the record's 0.97 from 667 steps
    assert tg.scaled_schedule(h, 5)[0] == 0.0  # a horizon under one step: the EMA is the weights
    tiny = tg.Hyperparameters.from_env({"PRESET": "tiny", "RUN_ID": "x"})
    assert tg.scaled_schedule(tiny, 100) == tg.scaled_schedule(h, 100)
    base = tg.Hyperparameters.from_env({"PRESET": "baseline", "RUN_ID": "x"})
    assert tg.scaled_schedule(base, 100) == (0.0, 500.0, 1.0)  # the baseline keeps its absolute constants


def test_expected_steps_come_from_iterations_or_the_measured_step_time():
    h = env(iterations=1000, max_wallclock_seconds=100)
    assert clock(h, 0.0).expected_steps() == 1000
    c = tg.RunClock(h, 100_000.0, agreed_ms=10_000.0, agreed_step=50, step_ms=200.0)
    assert c.expected_steps() == pytest.approx(50 + 90_000 / 200)
    assert c.progress(60) == pytest.approx((10_000 + 10 * 200) / 100_000)


def test_recurrence_fades_in_over_the_ramp():
    h = env(num_loops=2, loop_start_frac=0.4, loop_ramp_frac=0.1)
    assert [tg.recurrence_gain(h, p) for p in (0.0, 0.39, 0.4, 0.45, 0.5, 0.9)] == pytest.approx([0, 0, 0, 0.5, 1, 1])
    assert tg.recurrence_gain(env(num_loops=2, loop_start_frac=0.4, loop_ramp_frac=0.0), 0.4) == 1.0
    assert tg.recurrence_gain(env(num_loops=1), 0.9) == 0.0


# The frontier's Muon stacks (11 blocks): Q and out-projection (d, d) x 22, K and V (kv, d) x 22, MLP in (4d, d) x 11,
# MLP out (d, 4d) x 11, at a small width. 11 over 8 ranks leaves ranks 6 and 7 nothing unless the stack is padded.
FRONTIER_STACKS = [((16, 16), 22), ((8, 16), 22), ((64, 16), 11), ((16, 64), 11)]


def _muon_run(rank: int, world: int, port: int, steps: int, out: dict) -> list[torch.Tensor]:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(0)
    shapes = [shape for shape, count in FRONTIER_STACKS for _ in range(count)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    opt = tg.Muon(params, lr=0.02, momentum=0.95, nesterov=True, backend_steps=5, polar_express=True,
                  row_normalize=True, weight_decay=0.095, rank=rank, world_size=world)  # fmt: skip
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    result = [p.detach().clone() for p in params]
    if world > 1:
        out[rank] = result
        dist.destroy_process_group()
    return result


def _muon_worker(rank: int, world: int, port: int, steps: int, out: dict) -> None:
    _muon_run(rank, world, port, steps, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [3, 5, 8])
def test_muon_on_any_world_size_is_bit_identical_to_one_rank(world):
    """Every rank ends with the weights of a single process, for stack sizes that do not divide the world size."""
    reference = _muon_run(0, 1, 0, 3, {})
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_muon_worker, args=(world, _free_port(), 3, out), nprocs=world, join=True)
        results = dict(out)
    assert sorted(results) == list(range(world))
    for rank, weights in results.items():
        for i, (w, r) in enumerate(zip(weights, reference)):
            assert torch.equal(w, r), (rank, i, (w - r).abs().max())
