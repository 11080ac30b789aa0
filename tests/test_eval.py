"""Scoring in train_gpt.py: the exact byte rule on real val tokens, bpb against a brute-force per-target computation,
sliding-window tiling, the TTT legality guard, causality in every mode, and 2-process gloo against 1 process."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from conftest import shared_path

import toolkit as tk
import train_gpt as tg

VOCAB = 1024
LN_V = float(np.float32(math.log(VOCAB)))  # the fp32 loss a uniform prediction gives


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(shared_path("tokenizers", "fineweb_1024_bpe.model")))


@pytest.fixture(scope="module")
def tables(sp):
    return tg.build_byte_tables(sp, VOCAB)


@pytest.fixture(scope="module")
def val() -> np.ndarray:
    return tg.load_token_split(str(shared_path("fineweb_val_prefix") / tk.VAL_GLOB), VOCAB)


def hparams(**kw) -> tg.Hyperparameters:
    base = dict(
        eval_seq_len=32,
        eval_stride=8,
        eval_batch_seqs=8,
        ttt_chunk_tokens=96,
        ttt_epochs=2,
        ttt_lr=0.05,
        ttt_lora_chunk=8,
        ttt_lora_docs=3,
        ttt_lora_lr=0.05,
        ttt_lora_rank=4,
        ttt_lora_alpha=4.0,  # adapter scale 1 at this learning rate
        ttt_lora_chains=1,  # one GPU's schedule: a batch at a time, so the phases come between batches here
    )
    return tk.preset("tiny", **{**base, **kw})


def tiny_model(seed: int = 0) -> nn.Module:
    """The real model at the tiny preset, with weights large enough that its predictions depend on the context."""
    torch.manual_seed(seed)
    model = tg.build_model(hparams().model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    return model.eval()


class Uniform(nn.Module):
    """Predicts every token with probability 1/V: the per-target loss is exactly ln V."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets, reduction="mean"):
        return torch.full(targets.shape, math.log(VOCAB)) + 0 * self.dummy


def docs_val(val: np.ndarray, n_docs: int = 4, per_doc: int = 70) -> np.ndarray:
    """A short stream of n_docs real documents (each BOS + its first tokens), so LoRA TTT sees several documents."""
    bos = np.flatnonzero(val == tg.BOS_ID)
    return np.concatenate([val[b : min(b + per_doc, e)] for b, e in zip(bos[:n_docs], bos[1 : n_docs + 1])])


VARIED = (50, 20, 90, 35, 70, 25, 60, 40)  # document lengths that make the record's length order differ from stream's


def varied_val(val: np.ndarray, lengths: tuple[int, ...] = VARIED) -> np.ndarray:
    """Real documents (each BOS + its first tokens) of the given lengths, in stream order."""
    bos = np.flatnonzero(val == tg.BOS_ID)
    return np.concatenate([val[b : b + n] for b, n in zip(bos, lengths)])


# --- the byte rule on the official val prefix (MANIFEST figures) ---------------------------------------------------


def test_byte_counts_on_official_val_prefix(val, tables):
    d, h = tg.Dist(), hparams(eval_seq_len=1024, eval_stride=1024, eval_batch_seqs=64)
    full = tg.eval_flat(Uniform(), tg.prepare_val_tokens(val, 1024, include_tail=True), tables, h, d)
    assert (full.targets, full.bytes) == (131_071, 315_257)
    assert full.val_loss == pytest.approx(LN_V, rel=1e-12)
    assert full.val_bpb == pytest.approx(131_071 * LN_V / (math.log(2) * 315_257), rel=1e-12)
    cut = tg.eval_sliding(
        Uniform(),
        tg.prepare_val_tokens(val, 1024, include_tail=False),
        tables,
        dataclasses.replace(h, eval_stride=256),
        d,
    )
    assert (cut.targets, cut.bytes) == (130_048, 312_934)
    cut2048 = tg.prepare_val_tokens(val, 2048, include_tail=False)
    assert len(cut2048) - 1 == 129_024
    assert tg.count_target_bytes(cut2048[:-1], cut2048[1:], tables) == 310_820


def slow_target_bytes(sp, x: int, y: int) -> int:
    """The byte rule written out per target from the piece strings (a second, independent implementation)."""
    if sp.is_control(y) or sp.is_unknown(y) or sp.is_unused(y):
        return 0
    if sp.is_byte(y):
        return 1
    piece = sp.id_to_piece(y)
    n = len(piece.lstrip("\u2581").encode("utf-8")) if piece.startswith("\u2581") else len(piece.encode("utf-8"))
    n += len(piece) - len(piece.lstrip("\u2581")) - 1 if piece.startswith("\u2581") else 0  # "▁▁x": one kept
    x_boundary = sp.is_control(x) or sp.is_unknown(x) or sp.is_unused(x)
    return n + (piece.startswith("\u2581") and not x_boundary)


# --- exactness against brute force --------------------------------------------------------------------------------


def brute_force(model: nn.Module, val: np.ndarray, context_start, sp) -> tuple[float, float, np.ndarray]:
    """Per target t: one forward over val[context_start(t) : t], float64 log-softmax of the last logits."""
    losses, nbytes = np.zeros(len(val)), 0
    with torch.no_grad():
        for t in range(1, len(val)):
            s = context_start(t)
            logits = model(torch.from_numpy(val[s:t].astype(np.int64))[None])[0, -1].double()
            losses[t] = -F.log_softmax(logits, -1)[int(val[t])].item()
            nbytes += slow_target_bytes(sp, int(val[t - 1]), int(val[t]))
    total = losses.sum()
    return total / (len(val) - 1), total / (math.log(2) * nbytes), losses


def test_flat_and_sliding_equal_brute_force(val, tables, sp):
    model, d = tiny_model(), tg.Dist()
    v = val[1000 : 1000 + 93]  # 92 targets: not a multiple of the window; all scored (include_tail)
    T, S = 32, 8
    h = hparams(eval_seq_len=T, eval_stride=S)
    last = len(v) - 1 - T

    def flat_start(t: int) -> int:
        return min((t - 1) // T * T, last)

    def sliding_start(t: int) -> int:
        return 0 if t <= T else min(-(-(t - T) // S) * S, last)

    for fn, start in ((tg.eval_flat, flat_start), (tg.eval_sliding, sliding_start)):
        got = fn(model, v, tables, h, d, keep_losses=True)
        loss, bpb, losses = brute_force(model, v, start, sp)
        assert got.targets == len(v) - 1
        np.testing.assert_allclose(got.target_losses, losses, rtol=1e-5, atol=1e-6)
        assert got.val_loss == pytest.approx(loss, rel=1e-6)
        assert got.val_bpb == pytest.approx(bpb, rel=1e-6)


def test_sliding_with_stride_equal_window_is_flat_and_matches_official_loop(val, tables):
    model, d = tiny_model(1), tg.Dist()
    v = tg.prepare_val_tokens(val[:700], 32, include_tail=False)
    h = hparams(eval_seq_len=32, eval_stride=32)
    flat, sliding = tg.eval_flat(model, v, tables, h, d), tg.eval_sliding(model, v, tables, h, d)
    assert (flat.val_loss, flat.val_bpb, flat.targets, flat.bytes) == (
        sliding.val_loss,
        sliding.val_bpb,
        sliding.targets,
        sliding.bytes,
    )
    x = torch.from_numpy(v[:-1].astype(np.int64)).view(-1, 32)  # the official loader's reshape
    y = torch.from_numpy(v[1:].astype(np.int64)).view(-1, 32)
    with torch.no_grad():
        official = model(x, y).item()
    assert flat.val_loss == pytest.approx(official, rel=1e-6)
    assert flat.bytes == tg.count_target_bytes(v[:-1], v[1:], tables)
    assert tg.eval_sliding(model, v, tables, hparams(eval_seq_len=32, eval_stride=8), d).val_loss < flat.val_loss + 0.5


# --- every target exactly once ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [9, 10, 33, 64, 65, 97, 130])
@pytest.mark.parametrize("window,stride", [(8, 1), (8, 3), (8, 8), (13, 5), (13, 13), (8, 7)])
def test_plan_tiles_every_target_once(n, window, stride):
    if n < window + 1:
        with pytest.raises(tg.UserError, match="fewer than one window"):
            tg.sliding_plan(n, window, stride)
        return
    starts, lo, hi = tg.sliding_plan(n, window, stride)
    covered = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])
    np.testing.assert_array_equal(covered, np.arange(1, n))  # in order, no gap, no repeat
    assert np.all(starts >= 0) and np.all(starts + window <= n - 1)
    assert np.all(lo >= starts + 1) and np.all(hi == starts + window + 1)
    assert np.all((lo - 1 - starts)[1:] >= window - stride)  # every later target keeps >= window - stride context


def test_awkward_lengths_score_each_target_once(val, tables):
    d = tg.Dist()
    for n, stride in ((41, 3), (50, 8), (64, 5), (71, 32)):
        v = tg.prepare_val_tokens(val[:n], 32, include_tail=True)
        r = tg.eval_sliding(Uniform(), v, tables, hparams(eval_seq_len=32, eval_stride=stride), d)
        assert r.targets == n - 1 and r.bytes == tg.count_target_bytes(v[:-1], v[1:], tables)
        assert r.val_loss == pytest.approx(LN_V, rel=1e-12)


def test_ledger_refuses_double_or_missing_scores(val, tables):
    v, d = val[:20], tg.Dist()
    ce = torch.zeros(1, 10)
    ledger = tg.ScoreLedger(v, tables, d)
    ledger.score(ce, np.array([1]), np.array([1]), np.array([11]))
    ledger.score(ce, np.array([10]), np.array([10]), np.array([20]))  # position 10 twice
    with pytest.raises(AssertionError, match="position 10 2 times"):
        ledger.result(0.0)
    ledger = tg.ScoreLedger(v, tables, d)
    ledger.score(ce, np.array([1]), np.array([1]), np.array([11]))
    with pytest.raises(AssertionError, match="position 11 0 times"):
        ledger.result(0.0)


# --- TTT legality ---------------------------------------------------------------------------------------------------


def test_guard_refuses_training_on_unscored_targets(val, tables):
    ledger = tg.ScoreLedger(val[:50], tables, tg.Dist())
    with pytest.raises(AssertionError, match="TTT legality"):
        ledger.check_trainable(1, 9)
    ledger.score(torch.zeros(1, 8), np.array([1]), np.array([1]), np.array([9]))
    ledger.check_trainable(1, 9)
    with pytest.raises(AssertionError, match="position 9"):
        ledger.check_trainable(5, 12)
    assert ledger.updates == [(1, 9)]


MODES = {
    "flat": (tg.eval_flat, {}),
    "sliding": (tg.eval_sliding, {}),
    "sgd": (tg.eval_ttt, {"ttt_mode": "sgd"}),
    "lora": (tg.eval_ttt, {"ttt_mode": "lora", "ttt_order": "stream"}),
    "phased": (tg.eval_ttt, {"ttt_mode": "phased", "ttt_phases": 1, "ttt_phase_docs": 3, "ttt_order": "stream"}),
}  # TTT in stream order: rule 1 holds (the record's length order breaks it by design: see the length-order tests)


@pytest.mark.parametrize("mode", list(MODES))
def test_changing_a_later_token_never_changes_an_earlier_score(mode, val, tables):
    """Rule 1 and 3 end to end: perturb token t+1; targets at <= t must score bit-for-bit the same."""
    fn, kw = MODES[mode]
    model, d, h = tiny_model(2), tg.Dist(), hparams(**kw)
    v = docs_val(val)
    base = fn(model, v, tables, h, d, keep_losses=True)
    if mode in ("sgd", "lora", "phased"):
        assert base.updates, "TTT made no update"
    for t in (40, 100, 190):  # mid-chunk, near a document start, near the end
        w = v.copy()
        w[t + 1] = (int(w[t + 1]) + 7) % VOCAB
        other = fn(model, w, tables, h, d, keep_losses=True)
        np.testing.assert_array_equal(other.target_losses[: t + 1], base.target_losses[: t + 1])
        assert not np.array_equal(other.target_losses, base.target_losses)


def test_sgd_ttt_trains_only_on_scored_chunks_and_leaves_the_model_alone(val, tables):
    model, d = tiny_model(3), tg.Dist()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v = docs_val(val)
    h = hparams(ttt_mode="sgd")
    r = tg.eval_ttt(model, v, tables, h, d)
    plain = tg.eval_sliding(model, v, tables, h, d)
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())
    assert r.targets == plain.targets and r.bytes == plain.bytes and r.val_loss != plain.val_loss
    covered = sorted(set(r.updates))
    assert covered[0][0] == 1 and covered[-1][1] < len(v)  # the last chunk is never trained on
    first_chunk = [u for u in r.updates if u[1] <= h.ttt_chunk_tokens + 1]
    assert len(r.updates) == len(covered) and first_chunk
    zero = tg.eval_ttt(model, v, tables, dataclasses.replace(h, ttt_lr=0.0), d)
    assert zero.val_loss == pytest.approx(plain.val_loss, rel=1e-6)  # lr 0: TTT is plain sliding


def test_lora_ttt_is_document_independent_and_starts_unadapted(val, tables):
    model, d = tiny_model(4), tg.Dist()
    v = docs_val(val)
    # a fresh A per document: documents independent; lr 0.02 suits AdamW with beta1 0 here (0.05 overshoots)
    h = hparams(ttt_mode="lora", ttt_lora_warm_a=0, ttt_lora_lr=0.02)
    r = tg.eval_ttt(model, v, tables, h, d, keep_losses=True)
    lo, hi = tg.document_spans(v)
    assert len(lo) == 4 and np.array_equal(lo[1:], hi[:-1])
    for a in lo:  # the first chunk of each document: the unadapted model on that document alone
        ctx = torch.from_numpy(v[a - 1 : a - 1 + h.ttt_lora_chunk].astype(np.int64))[None]
        tgt = torch.from_numpy(v[a : a + h.ttt_lora_chunk].astype(np.int64))[None]
        with torch.no_grad():
            ref = model(ctx, tgt, reduction="none")[0].double().numpy()
        np.testing.assert_allclose(r.target_losses[a : a + h.ttt_lora_chunk], ref, rtol=1e-6, atol=1e-6)
    w = v.copy()
    w[lo[0] + 5] = (int(w[lo[0] + 5]) + 3) % VOCAB  # a change inside document 0 ...
    other = tg.eval_ttt(model, w, tables, h, d, keep_losses=True)
    np.testing.assert_array_equal(other.target_losses[hi[0] :], r.target_losses[hi[0] :])  # ... leaves the others be
    assert r.val_loss < tg.eval_ttt(model, v, tables, dataclasses.replace(h, ttt_lora_lr=0.0), d).val_loss


def test_phased_ttt_trains_the_model_on_scored_documents_between_batches(val, tables):
    """4 documents in batches of 3 and 1, in stream order; one phase after the first batch: its documents score as
    plain LoRA TTT (with A carried over) scores them, the model then trains on them in pieces of up to the eval
    length (longer than a LoRA chunk), and the last document is scored by the trained model."""
    model, d = tiny_model(5), tg.Dist()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v = docs_val(val)
    h = hparams(ttt_mode="phased", ttt_phases=1, ttt_phase_docs=3, ttt_order="stream")
    r = tg.eval_ttt(model, v, tables, h, d, keep_losses=True)
    lora = tg.eval_ttt(model, v, tables, dataclasses.replace(h, ttt_mode="lora"), d, keep_losses=True)
    lo, hi = tg.document_spans(v)
    np.testing.assert_array_equal(r.target_losses[: hi[2]], lora.target_losses[: hi[2]])
    assert not np.array_equal(r.target_losses[lo[3] :], lora.target_losses[lo[3] :])
    long = [(a, b) for a, b in r.updates if b - a > h.ttt_lora_chunk]  # the phase's windows
    assert long and all(b <= hi[2] for _, b in long) and max(b - a for a, b in long) == h.eval_seq_len
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())
    assert r.targets == lora.targets and r.bytes == lora.bytes


def test_length_order_is_the_records_and_never_trains_on_an_unscored_document(val, tables):
    """TTT_ORDER=length (the record's): documents sorted by length cut into batches from the shortest, the batch
    with the longest first, rows shortest first; phases after the batches where the scored count reaches each
    boundary, on the first documents in that sorted order. The run is legal by construction (every update passed
    the ledger's guard, in an order far from the stream's), and the guard refuses a phase on unscored documents."""
    v = varied_val(val)
    lo, hi = tg.document_spans(v)
    h = hparams(ttt_mode="phased", ttt_phases=2, ttt_phase_docs=4)
    batches, place = tg._ttt_queue(lo, hi, h)
    assert [b.tolist() for b in batches] == [[4, 2], [7, 0, 6], [1, 5, 3]]  # lengths 70 90 | 40 50 60 | 20 25 35
    assert tg._ttt_plan([len(b) for b in batches], [1.0] * 3, h) == [([[0]], 2), ([[1]], 4), ([[2]], 0)]
    assert place[[1, 5, 3, 7, 0, 6, 4, 2]].tolist() == list(range(8))
    r = tg.eval_ttt(tiny_model(6), v, tables, h, tg.Dist(), keep_losses=True)
    assert r.updates[0] == (lo[4], lo[4] + h.ttt_lora_chunk)  # the longest batch's shortest row first
    doc = np.searchsorted(lo, [a for a, _ in r.updates], "right") - 1  # the document of each update, in order
    phase = [i for i, (a, b) in enumerate(r.updates) if b - a > h.ttt_lora_chunk]  # the phases' updates
    first0 = np.flatnonzero(doc == 0)[0]  # document 0 comes first in the stream, yet the model has trained on
    assert set(doc[[i for i in phase if i < first0]]) == {2, 4}  # documents 4 and 2 before it scores document 0
    stream = tg.eval_ttt(tiny_model(6), v, tables, dataclasses.replace(h, ttt_order="stream"), tg.Dist())
    assert r.targets == stream.targets and r.val_loss != stream.val_loss
    ledger = tg.ScoreLedger(v, tables, tg.Dist())
    with pytest.raises(AssertionError, match="TTT legality"):
        tg._ttt_phase(tiny_model(6), torch.from_numpy(v.astype(np.int64)), ledger, lo[:4], hi[:4], h, tg.Dist())


@pytest.mark.slow
def test_compiled_lora_ttt_equals_eager_and_does_not_recompile_per_batch(val, tables):
    """The LoRA forward as eval_ttt compiles it on CUDA (compile_lora: dynamic shapes, warmed up on random tokens),
    here through Dynamo alone (a counting backend, ~15 s of tracing): new adapters every batch, batches of 3 and 2
    rows, widths 8 to 32 and two phases in between reuse the warm-up's graph (one more for the short batch), and
    every score equals eager's."""
    v, d = varied_val(val), tg.Dist()
    h = hparams(ttt_mode="phased", ttt_phases=2, ttt_phase_docs=4, ttt_lora_chains=2)
    eager = tg.eval_ttt(tiny_model(5), v, tables, h, d, keep_losses=True)
    graphs, net = [], tiny_model(5)
    fwd = tg.compile_lora(net, h, d, backend=lambda gm, example: graphs.append(gm) or gm.forward)
    assert len(graphs) == 1
    ledger = tg.ScoreLedger(v, tables, d, keep_losses=True)
    tg._ttt_lora(net, torch.from_numpy(v.astype(np.int64)), ledger, h, d, fwd)
    assert len(graphs) <= 2
    np.testing.assert_array_equal(ledger.result(0.0).target_losses, eager.target_losses)


# --- bad input -------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_one_line_errors(val, tables):
    model, d = Uniform(), tg.Dist()
    v = tg.prepare_val_tokens(val[:200], 32, include_tail=True)
    small = tg.ByteTables(tables.base[:500], tables.space[:500], tables.boundary[:500])
    cases = [
        (lambda: tg.eval_sliding(model, v, tables, hparams(eval_stride=0), d), "EVAL_STRIDE=0"),
        (lambda: tg.eval_sliding(model, v, tables, hparams(eval_stride=40), d), "longer than the window"),
        (lambda: tg.prepare_val_tokens(val[:20], 32, include_tail=False), "fewer than one window"),
        (lambda: tg.eval_flat(model, v, small, hparams(), d), "outside the vocabulary"),
        (lambda: tg.eval_ttt(model, v, tables, hparams(), d), "TTT_MODE='off'"),
        (lambda: tg.eval_ttt(model, v, tables, hparams(ttt_mode="lora", ttt_lora_chunk=64), d), "TTT_LORA_CHUNK"),
    ]
    for call, message in cases:
        with pytest.raises(tg.UserError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


# --- distributed --------------------------------------------------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, out: str, v: np.ndarray, tables) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    d = tg.init_distributed("cpu")
    model, results = tiny_model(5), {}
    for mode, (fn, kw) in MODES.items():
        r = fn(model, v, tables, hparams(**kw), d)
        results[mode] = (r.val_loss, r.val_bpb, r.targets, r.bytes)
    if rank == 0:
        torch.save(results, out)
    tg.cleanup_distributed()


def test_two_gloo_processes_equal_one(val, tables, tmp_path):
    v, d = docs_val(val, n_docs=3, per_doc=60), tg.Dist()
    model = tiny_model(5)
    ones = {mode: fn(model, v, tables, hparams(**kw), d) for mode, (fn, kw) in MODES.items()}
    out = tmp_path / "two.pt"  # fork: the workers inherit the imports the 1-process run just paid for
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "init"), str(out), v, tables), nprocs=2, join=True, start_method="fork"
    )
    two = torch.load(out)
    for mode, one in ones.items():
        assert two[mode][2:] == (one.targets, one.bytes), mode
        assert two[mode][0] == pytest.approx(one.val_loss, rel=1e-5), mode
        assert two[mode][1] == pytest.approx(one.val_bpb, rel=1e-5), mode


# Length order on 12 documents in 4 batches. lora: two chains, the first carries A from batch 0 to batch 3, dealt
# to the ranks. phased: one chain (the phases then come between batches: two here), the last carrying A over two
# batches; the phases' pieces are dealt to the ranks. The LoRA LR is the record's: at 0.05 AdamW (eps 1e-10) turns
# the phases' rounding-level differences (gradients summed over ranks in another order) into LR-sized steps, 1e-2 on
# a target; at 1e-4 2.4e-6 (phase LR 0: bit-equal).
WORLD_DOCS = (50, 20, 90, 35, 70, 25, 60, 40, 30, 80, 45, 55)
TTT_WORLD = {
    "lora": {"ttt_mode": "lora", "ttt_lora_chains": 2, "ttt_lora_lr": 1e-4},
    "phased": {"ttt_mode": "phased", "ttt_phases": 2, "ttt_phase_docs": 6, "ttt_lora_lr": 1e-4, "ttt_phase_lr": 0.01},
}  # fmt: skip


def _ttt_worker(rank: int, world: int, init_file: str, out: str, v: np.ndarray, tables) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    d = tg.init_distributed("cpu")
    results = {mode: tg.eval_ttt(tiny_model(5), v, tables, hparams(**kw), d, keep_losses=True) for mode, kw in
               TTT_WORLD.items()}  # fmt: skip
    if rank == 0:
        torch.save({mode: (r.val_loss, r.target_losses) for mode, r in results.items()}, out)
    tg.cleanup_distributed()


def test_ttt_score_does_not_depend_on_the_world_size(val, tables, tmp_path):
    """Batches go to chains and chains to ranks, phase pieces to ranks: 1, 2 and 3 gloo processes score alike (up
    to the order of float sums in the phases' gradients)."""
    v = varied_val(val, WORLD_DOCS)
    lo, hi = tg.document_spans(v)
    costs = [tg._batch_cost(hi[b] - lo[b], hparams()) for b in tg._ttt_queue(lo, hi, hparams())[0]]
    plans = {mode: tg._ttt_plan([3] * 4, costs, hparams(**kw)) for mode, kw in TTT_WORLD.items()}
    assert plans == {"lora": [([[0, 3], [1, 2]], 0)], "phased": [([[0]], 3), ([[1]], 6), ([[2, 3]], 0)]}
    one = {mode: tg.eval_ttt(tiny_model(5), v, tables, hparams(**kw), tg.Dist(), keep_losses=True)
           for mode, kw in TTT_WORLD.items()}  # fmt: skip
    for world in (2, 3):
        out = tmp_path / f"{world}.pt"
        mp.start_processes(_ttt_worker, args=(world, str(tmp_path / f"init{world}"), str(out), v, tables),
                           nprocs=world, join=True, start_method="fork")  # fmt: skip
        for mode, (loss, losses) in torch.load(out, weights_only=False).items():
            assert loss == pytest.approx(one[mode].val_loss, rel=1e-7), (world, mode)
            np.testing.assert_allclose(losses, one[mode].target_losses, rtol=0, atol=2e-5, err_msg=f"{world} {mode}")
