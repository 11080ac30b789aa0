"""The default preset against the 1.0611 record (issue 13): every hyperparameter of the record's train_seed42.log
that has a counterpart here is compared with the frontier preset's resolved value. Values that differ are listed
below with the reason; the test fails when a listed one stops differing (shrink the list) or an unlisted one
starts (a drift from the record)."""

from __future__ import annotations

import re

from conftest import shared_path

import train_gpt as tg

RECORD = ("public_records", "track_10min_16mb", "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611")
RECORD_PARAMS = 35_945_671  # model_params: in its log
# record name -> (our name, how the record's value reads in our terms)
SAME = {
    k: (k, None)
    for k in (
        "adam_eps adam_wd beta1 beta2 ema_decay embed_lr embed_wd eval_stride grad_clip_norm iterations logit_softcap "
        "loop_end loop_start lqer_rank matrix_lr max_wallclock_seconds min_lr mlp_mult model_dim muon_backend_steps "
        "muon_momentum muon_momentum_warmup_start muon_momentum_warmup_steps muon_wd num_heads num_kv_heads num_layers "
        "qk_gain_init rope_base rope_dims scalar_lr tied_embed_init_std tied_embed_lr train_batch_tokens "
        "train_seq_len ttt_lora_lr ttt_lora_rank vocab_size warmdown_frac warmup_steps gptq_reserve_seconds"
    ).split()
}
RENAMED = {
    "enable_looping_at": ("loop_start_frac", None),
    "parallel_start_layer": ("parallel_start", None),
    "num_loops": ("num_loops", lambda v: int(v) + 1),  # the record counts extra passes; ours counts all of them
    "matrix_bits": ("quant_matrix_bits", None),
    "embed_bits": ("quant_embed_bits", None),
    "attn_clip_sigmas": ("clip_k_attn", None),
    "mlp_clip_sigmas": ("clip_k_mlp", None),
    "embed_clip_sigmas": ("clip_k_embed", None),
    "gptq_calibration_batches": ("gptq_calib_batches", None),
    "lqer_top_k": ("lqer_top", None),
    "muon_row_normalize": ("muon_eq_r", None),
    "skip_gates_enabled": ("skip_gates", None),
    "smear_gate_enabled": ("smear_gate", None),
    "tie_embeddings": ("tie_embeddings", None),
    "ln_scale": ("ln_scale", None),
    "ttt_chunk_size": ("ttt_lora_chunk", None),
    "sparse_attn_gate_enabled": ("attn_out_gate", None),  # the record's gate form is ours (its AttnOutGate is off)
    "sparse_attn_gate_scale": ("attn_gate_scale", None),
    "gate_window": ("gate_inputs", None),
    "ttt_enabled": ("ttt_mode", lambda v: "phased" if v == "True" else "off"),
    "global_ttt_lr": ("ttt_phase_lr", None),
    "global_ttt_epochs": ("ttt_phase_epochs", None),
    "global_ttt_momentum": ("ttt_momentum", None),
    "global_ttt_chunk_tokens": ("ttt_chunk_tokens", None),
    "global_ttt_grad_clip": ("ttt_grad_clip", None),
    "phased_ttt_num_phases": ("ttt_phases", None),
    "phased_ttt_prefix_docs": ("ttt_phase_docs", None),
    "ttt_batch_size": ("ttt_lora_docs", None),
    "ttt_weight_decay": ("ttt_lora_wd", None),
    "caseops_enabled": ("caseops", None),
}
DIFFERENCES = {  # our name: why ours differs from the record today
    "gptq_reserve_seconds": "8 s, not 0.5: our calibration is bounded by the reserve from the measured step time",
    "gptq_calib_batches": "32, not 16: the reserve bounds the batches actually read",
    "caseops": "0, not 1: CaseOps needs its own tokenizer and data (data/tokenizer.py --caseops, data/export.py "
    "--caseops); the default data is the plain sp8192 export",
}


def test_ttt_optimiser_constants_are_the_records():
    record = record_hyperparameters()
    assert tg.TTT_LORA_BETAS == (float(record["ttt_beta1"]), float(record["ttt_beta2"]))
    assert record["ttt_optimizer"] == "adam" and record["ttt_k_lora"] == record["ttt_mlp_lora"] == "True"
    assert tg.Hyperparameters.from_env({"RUN_ID": "x"}).ttt_lora_alpha == 144.0  # TTT_LORA_ALPHA's default there


def record_hyperparameters() -> dict[str, str]:
    log = shared_path(*RECORD, "train_seed42.log").read_text()
    block = log.split("Hyperparameters:\n", 1)[1]
    return {m[1]: m[2] for m in (re.match(r"  (\w+): (.*)$", line) for line in block.splitlines()) if m}


def as_ours(value: str, like: object) -> object:
    """A record log's value in the type of our setting (True/False as 1/0)."""
    if isinstance(like, int):
        return {"True": 1, "False": 0}.get(value) if value in ("True", "False") else int(float(value))
    return float(value) if isinstance(like, float) else value


def test_the_frontier_preset_is_the_records_but_for_the_listed_differences():
    record, ours = record_hyperparameters(), tg.Hyperparameters.from_env({"RUN_ID": "x"}).flat()
    differ = {}
    for name, (our_name, read) in {**SAME, **RENAMED}.items():
        theirs = read(record[name]) if read else as_ours(record[name], ours[our_name])
        if theirs != ours[our_name]:
            differ[our_name] = (ours[our_name], theirs)
    assert set(differ) == set(DIFFERENCES), {k: differ.get(k) for k in set(differ) ^ set(DIFFERENCES)}
    assert len(SAME) + len(RENAMED) - len(DIFFERENCES) >= 40  # the keys that agree


def test_parameter_count_is_the_records_but_its_unused_lambdas():
    """35,945,623 against the record's 35,945,671: the record allocates parallel-residual lambdas (2x2 post, 2
    residual) for all 11 blocks and uses those of blocks 8-10; ours exist only in parallel blocks: 8 x 6 = 48 fewer.
    Everything else (8 virtual-order skips with gates, the sparse gate, two lanes) counts the same; pinned so a
    change shows."""
    n = sum(p.numel() for p in tg.build_model(tg.ModelConfig()).parameters())
    assert n == 35_945_623 and RECORD_PARAMS - n == 8 * 6
