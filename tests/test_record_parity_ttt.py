"""Phased test-time training against the 1.0611 record's own code (issue 25): the record's eval_val_ttt_phased,
imported in place (tests/record_oracle.py), and our eval_ttt (TTT_MODE=phased, TTT_LORA_CHAINS=1: the record run
on one process) score the same real documents with the same weights, and every target's loss agrees to float32
rounding.

Both run at one small shape (6 x 128, 4/2 heads, vocab 1024, blocks 2-3 looped, parallel from block 4) on 17 real
sp1024 val documents cut to lengths chosen so that every part of the procedure runs: a short batch (the longest
document alone, processed first), A carried over between two full batches of a phase, two phases (the second
trained on documents of three batches and not on the longest), phase chunks that split documents across rows and
cut them every eval length, and a last chunk left untrained. The record draws its adapters' A from torch's global
generator; ours draw the same values from a generator seeded per phase and chain, so the record is seeded with our
seeds when it builds each set (checked: the A tensors are equal).

Tolerance: the two codes compute the same float32 operations, in places in another order (the record's banks and
packed phase rows, our blocks and pieces), and then train on the results for 59 AdamW and 7 SGD steps. Measured:
7.5e-9 nats on the mean loss (6.9228; 6.9299 without TTT), 7.2e-8 on a document's mean, at most 9.5e-7 on one
target (2 ulp). The bounds (1e-6, 1e-6, 1e-5) are 10x those and far below what a procedural difference moves:
stream order instead of the record's 8.5e-4 on the mean and 0.10 on a target, the O adapter reading the attention
output 3.9e-4 / 0.022, training on documents' last chunks 2.4e-6 / 2.0e-3, 8 chains instead of 1 7.1e-4 / 0.16.
(At 30x the record's LoRA LR, AdamW with eps 1e-10 turns rounding-level gradient differences into LR-sized steps:
4e-4 on a target. Skipping the phase's last chunk changes nothing: its cosine LR is 0.)"""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
import record_oracle as ro
import sentencepiece as spm
import torch
from conftest import shared_path

import train_gpt as tg

SHAPE = dict(num_layers=6, model_dim=128, num_heads=4, num_kv_heads=2, vocab_size=1024, loop_start=2, loop_end=3,
             parallel_start_layer=4, num_loops=2)  # fmt: skip
WINDOW, CHUNK, DOCS, RANK = 64, 16, 4, 8  # eval length, LoRA chunk, documents per batch, LoRA rank
PHASE_DOCS, PHASES, PHASE_CHUNK = 12, 2, 256
LORA_LR, PHASE_LR = 1e-4, 1e-2  # the record's LoRA LR; its phase LR 1e-3 x 10, so that the phases matter here
LENGTHS = (300, 40, 90, 150, 25, 70, 200, 60, 33, 120, 45, 80, 260, 55, 95, 38, 130)  # tokens of each document
RECORD_TTT = dict(ttt_lora_rank=RANK, ttt_chunk_size=CHUNK, ttt_eval_seq_len=WINDOW, eval_seq_len=WINDOW,
                  ttt_batch_size=DOCS, phased_ttt_prefix_docs=PHASE_DOCS, phased_ttt_num_phases=PHASES,
                  global_ttt_chunk_tokens=PHASE_CHUNK, global_ttt_batch_seqs=32, ttt_lora_lr=LORA_LR,
                  global_ttt_lr=PHASE_LR, rank=0, world_size=1, is_main_process=True)  # fmt: skip
OURS = dict(PRESET="frontier", NUM_LAYERS=6, MODEL_DIM=128, NUM_HEADS=4, NUM_KV_HEADS=2, VOCAB_SIZE=1024, LOOP_START=2,
            LOOP_END=3, PARALLEL_START=4, NUM_LOOPS=3, EVAL_SEQ_LEN=WINDOW, TTT_MODE="phased", TTT_LORA_RANK=RANK,
            TTT_LORA_CHUNK=CHUNK, TTT_LORA_DOCS=DOCS, TTT_PHASE_DOCS=PHASE_DOCS, TTT_PHASES=PHASES,
            TTT_CHUNK_TOKENS=PHASE_CHUNK, EVAL_BATCH_SEQS=32, TTT_LORA_LR=LORA_LR, TTT_PHASE_LR=PHASE_LR,
            TTT_LORA_CHAINS=1, COMPILE=0, RUN_ID="parity")  # fmt: skip


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(shared_path("tokenizers", "fineweb_1024_bpe.model")))


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    """17 real val documents, each its BOS and first LENGTHS[i] - 1 tokens, as one stream."""
    val = tg.load_token_split(str(shared_path("fineweb_val_prefix") / "fineweb_val_*.bin"), 1024)
    bos = np.flatnonzero(val == tg.BOS_ID)
    assert all(e - b > n for b, e, n in zip(bos, bos[1:], LENGTHS))
    return np.concatenate([val[b : b + n] for b, n in zip(bos, LENGTHS)]).astype(np.uint16)


def record_scores(rec, model, h, v: np.ndarray, sp, seeds: list[int]) -> tuple[float, np.ndarray, list]:
    """The record's phased TTT on `v`: (mean loss, the loss of each target position (nan: unscored), the A tensors
    of every adapter set it built), its adapter draws seeded with `seeds` in order."""
    losses, built, state = np.full(len(v), np.nan), [], {"batch": None, "ci": 0}
    docs = rec._select_ttt_doc_entries(rec._find_docs(torch.from_numpy(v.astype(np.int64))), h)
    queue = rec._build_ttt_global_batches(docs, h)
    init, claim, accumulate, feed = rec.BatchedTTTLoRA.__init__, rec._claim_next_batch, rec._accumulate_bpb, list(seeds)

    def seeded_init(self, *args, **kwargs):
        if feed:
            torch.manual_seed(feed.pop(0))
        init(self, *args, **kwargs)
        kinds = [[self.lm_head_lora]] + [list(m) for m in (self.q_loras, self.v_loras, self.k_loras)]
        built.append([[lora.A.detach().clone() for lora in m] for m in kinds + [self.mlp_loras, self.o_loras]])

    def spy_claim(path, n):
        state["batch"], state["ci"] = claim(path, n), 0
        return state["batch"]

    def spy_accumulate(ptl, x, y, offsets, lens, *rest, **kw):
        ci, entries = state["ci"], queue[state["batch"]][1]
        state["ci"] += 1
        for b, (_, (start, n)) in enumerate(entries):
            if lens[b] > 0:
                win_start, _, off, m = rec._compute_chunk_window(ci, n - 1, -(-(n - 1) // CHUNK), CHUNK, WINDOW)
                losses[start + win_start + 1 + off + np.arange(m)] = ptl[b, off : off + m].detach().double().numpy()
        return accumulate(ptl, x, y, offsets, lens, *rest, **kw)

    data = types.SimpleNamespace(val_tokens=torch.from_numpy(v.astype(np.int64)), caseops_enabled=False, val_bytes=None)
    data.base_bytes_lut, data.has_leading_space_lut, data.is_boundary_token_lut = rec.build_sentencepiece_luts(
        sp, 1024, torch.device("cpu")
    )
    rec.BatchedTTTLoRA.__init__, rec._claim_next_batch, rec._accumulate_bpb = seeded_init, spy_claim, spy_accumulate
    try:
        loss, _ = rec.eval_val_ttt_phased(h, model, torch.device("cpu"), data, model.forward_ttt)
    finally:
        rec.BatchedTTTLoRA.__init__, rec._claim_next_batch, rec._accumulate_bpb = init, claim, accumulate
        for name in ("ttt_counter", "ttt_prefix_counter", "ttt_pause_flag"):  # its queue files
            if os.path.exists(f"/tmp/{name}_{h.run_id}"):
                os.remove(f"/tmp/{name}_{h.run_id}")
    return loss, losses, built


def test_phased_ttt_scores_every_target_as_the_record_does(tokens, sp, monkeypatch):
    rec = ro.load_record()
    h_rec = ro.record_settings(**SHAPE, **RECORD_TTT, run_id=f"parity_ttt_{os.getpid()}")
    rec_model = ro.build_record_model(h_rec)
    ro.randomise(rec_model)
    rec_model.looping_active = True  # the record's TTT model runs with its loops on
    h = tg.Hyperparameters.from_env({k: str(v) for k, v in OURS.items()})
    ours = tg.build_model(h.model)
    ro.map_record_to_ours(rec_model, ours)
    ours.set_loops(h.model.num_loops)
    x = torch.from_numpy(tokens[: 2 * WINDOW].astype(np.int64))[None]
    with torch.no_grad():  # the same function before any TTT (two documents in the window)
        torch.testing.assert_close(ours.eval()(x), rec_model.eval().forward_logits(x), rtol=0, atol=1e-5)

    draws, init = [], tg._lora_init  # (seed, A tensors as drawn: training updates the returned ones in place)
    monkeypatch.setattr(tg, "_lora_init", lambda *a: draws.append((a[3], [t.clone() for t in init(*a)])) or init(*a))
    got = tg.eval_ttt(ours, tokens, tg.build_byte_tables(sp, 1024), h, tg.Dist(), keep_losses=True)
    want, want_losses, built = record_scores(rec, rec_model, h_rec, tokens, sp, [s for s, _ in draws])

    # the adapters started from the same A: the record's (kind, slot) tensor (n, rank, in) is ours (passes, n, in,
    # rank) at the block and pass of that virtual layer
    assert len(built) == len(draws) == 4  # phase 0: the chain's and the short batch's; phases 1 and 2: the chain's
    order, targets = ours.layer_order(), tg._lora_targets(ours)
    where = {(t[0], t[1]): j for j, t in enumerate(targets)}
    for (_, a), sets in zip(draws, built):
        assert torch.equal(a[0][0], sets[0][0].transpose(1, 2))
        for kind, tensors in zip(tg.TTT_LORA_KINDS, sets[1:]):
            for s, (i, t) in enumerate(zip(order, tensors)):
                assert torch.equal(a[where[kind, i]][order[:s].count(i)], t.transpose(1, 2)), (kind, s)

    scored = ~np.isnan(want_losses)
    assert scored[1:].all() and got.targets == len(tokens) - 1
    per_target = np.abs(got.target_losses - np.nan_to_num(want_losses))
    assert per_target.max() < 1e-5, per_target.max()
    assert abs(got.val_loss - want) < 1e-6, (got.val_loss, want)
    lo, hi = tg.document_spans(tokens)  # per document too
    sums = [(got.target_losses[a:b].sum(), want_losses[a:b].sum()) for a, b in zip(lo, hi)]
    assert max(abs(g - w) / (b - a) for (g, w), a, b in zip(sums, lo, hi)) < 1e-6
    pieces = [b - a for a, b in got.updates if b - a > CHUNK]  # the phases trained, up to an eval length at once
    assert len(got.updates) > 50 and pieces and max(pieces) == WINDOW
