"""records/ on the public challenge repository's 60 record folders, read in place from ../shared/data/public_records
(MANIFEST.md lists the facts checked on them): one test per class of folder, and every defect the manifest lists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "records"))
import records as R  # noqa: E402
import toolkit  # noqa: E402

TEN, NON = "track_10min_16mb", "track_non_record_16mb"


def folder(track: str, name: str) -> Path:
    return shared_path("public_records", track, name)


def check(track: str, name: str) -> tuple[list[str], list[str]]:
    """(errors, notes) of `check` on a public folder."""
    found = R.check_folder(folder(track, name))
    return [f.what for f in found if f.level == "error"], [f.what for f in found if f.level == "note"]


def has(lines: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in lines)


def test_a_run_stopped_by_the_clock_may_end_a_step_or_two_past_600_s():
    errors, notes = check(TEN, "2026-03-17_NaiveBaseline")  # OpenAI's own baseline: 600.038 s, step_avg 43.5 ms
    assert errors == [] and has(notes, "training 600.038 s", "within two steps")
    errors, notes = check(TEN, "2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072")  # 600.137 s at 86.8 ms a step
    assert errors == [] and has(notes, "600.137 s")


def test_logs_in_a_subfolder_and_timestamped_lines_are_read():
    for name in ("2026-04-10_VarLenAttn", "2026-04-13_VarLenAttn_PhasingTTT2000"):
        errors, notes = check(TEN, name)
        assert has(notes, "logs kept in a subfolder: ['logs']"), name
        assert all("differs from the code" in e or "ran different code" in e for e in errors), errors
    run = R.parse_log(folder(TEN, "2026-04-13_VarLenAttn_PhasingTTT2000") / "logs" / "train0.txt")
    sub = json.loads((folder(TEN, "2026-04-13_VarLenAttn_PhasingTTT2000") / "submission.json").read_text())
    assert run.final.name == "quantized_ttt_phased" and run.final.val_bpb == sub["seed_results"]["0"]["val_bpb"]
    assert run.total_bytes == sub["seed_results"]["0"]["artifact_bytes"] and run.seed == 0
    assert has(check(NON, "2026-04-04_GDN_Hybrid_LongContext")[1], "logs kept in a subfolder: ['logs_experiment']")


def test_the_source_code_section_of_newer_logs_is_compared_with_the_submitted_file():
    """2026-04-10_VarLenAttn logs its source between '=' rules after `Source code:`: seed 2 ran the submitted file,
    seeds 0 and 1 an earlier version (PARALLEL_FINAL_LANE defaulted to "mlp", not "mean")."""
    d = folder(TEN, "2026-04-10_VarLenAttn")
    code = (d / "train_gpt.py").read_bytes()
    runs = [R.parse_log(d / "logs" / f"train{i}.txt") for i in range(3)]
    assert R.same_code(runs[2].source, code) and not R.same_code(runs[0].source, code)
    assert b'"PARALLEL_FINAL_LANE", "mlp"' in runs[0].source and b'"PARALLEL_FINAL_LANE", "mean"' in code
    errors, _ = check(TEN, "2026-04-10_VarLenAttn")
    assert has(errors, "seed 0 (train0.txt): the submitted train_gpt.py") and not has(errors, "seed 2 (train2.txt)")


def test_non_record_folders_have_no_time_limit():
    errors, notes = check(NON, "2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3")  # a 4-hour run
    assert errors == [] and has(notes, "non-record track: no 600 s limit")


def test_folders_without_any_log_are_unchecked_not_refused(capsys):
    for name in ("2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090", "2026-03-29_LLaDA_MDLM_Diffusion"):
        found = R.check_folder(folder(NON, name))
        assert [f.level for f in found if "no training log" in f.what] == ["unchecked"], name
        assert toolkit.run_cli(R.main, ["check", str(folder(NON, name))]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    "name,note",
    [
        ("2026-03-18_FP16Embed_WD3600", "val_bpb 1.21972502 quotes the best seed"),
        ("2026-04-01_Vocab4096_MLPMult4_WD085", "bytes_total 15916170 is the mean artifact"),
        ("2026-04-14_MultiPhaseGlobalSGD_PhasedTTT", "val_bpb_std 0.00063 is the population std"),
        ("2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2", "val_bpb 1.08563: the mean of its own rounded"),
        ("2026-03-20_11L_XSA4_EMA_Int6_MLP3x_WD04_1.1271", "train.log is a byte copy of train_seed1337.log"),
        (
            "2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR",
            "seed 42 val_bpb quotes `final_int6_sliding_window`",
        ),
        (
            "2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE",
            "ttt_pr1767/seed_0.log",
        ),
        ("2026-04-29_SmearGateBOSFix_3Seed_1.06141", "(superseded: the set [gptq8s] passes)"),
    ],
)
def test_conventions_of_accepted_records_are_notes(name, note):
    errors, notes = check(TEN, name)
    assert has(notes, note), notes
    assert not has(errors, "submission.json", note.split()[0])


def test_accepted_conventions_pass_whole_folders():
    for name in (
        "2026-03-18_FP16Embed_WD3600",
        "2026-03-20_11L_XSA4_EMA_Int6_MLP3x_WD04_1.1271",
        "2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR",
        "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2",
        "2026-04-14_MultiPhaseGlobalSGD_PhasedTTT",
        "2026-04-29_SmearGateBOSFix_3Seed_1.06141",
    ):
        assert check(TEN, name)[0] == [], name


def test_score_lines_of_every_public_form():
    d = folder(TEN, "2026-03-19_MixedQuant_Int6Int8_SlidingWindow")
    run = R.parse_log(d / "train.log")  # `final_sliding_window_eval_exact stride:64 val_loss:…`
    assert run.final.name == "final_sliding_window_eval stride:64" and run.final.val_bpb == 1.16301431
    run = R.parse_log(folder(NON, "2026-04-30_Random_Linear_Adapter") / "train_seed_1337.txt")  # `sliding val_bpb:`
    assert [s.name for s in run.scores] == ["final_int8_zlib_roundtrip", "final_int8_zlib_roundtrip sliding"]
    assert run.final.val_bpb == 1.19709881 and run.scores[0].val_bpb == 1.21837937
    run = R.parse_log(folder(TEN, "2026-03-17_LoRA_TTT") / "train_v3.txt")  # a TTT score after the `_exact` line
    assert run.final.name == "final_int8_ttt_lora" and (run.final.val_loss, run.final.decimals) == (2.0142, 4)
    run = R.parse_log(folder(TEN, "2026-04-09_A2_Muon097_3Seed") / "train_seed0.log")
    assert run.gptq_calibration_ms == 12_800 and run.train_time_ms == 588_052  # `GPTQ:collected 67 Hessians in 12.8s`
    run = R.parse_log(folder(TEN, "2026-03-31_ParallelResiduals_MiniDepthRecurrence") / "train_seed1337.log")
    assert run.seed == 1337 and run.gptq_calibration_ms is None  # AR self-generated calibration reads no train data


def test_seeds_from_config_lines_and_file_names():
    d = folder(NON, "2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L_8192BPE_YaRN_NeoMuon_Smear")
    assert R.parse_log(d / "binary_log.txt").seed == 42  # `… run_id=pushing_run_binary_1 … seed=42 …`
    d = folder(TEN, "2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon")
    assert [R.parse_log(d / f"ternary_log_{s}.txt").seed for s in (1337, 42, 7)] == [1337, 42, 7]


def test_packed_wrappers_are_decoded_for_the_code_check():
    raw = folder(TEN, "2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2") / "train_gpt.py"  # lzma FORMAT_RAW
    xz = folder(TEN, "2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR") / "train_gpt.py"  # lzma .xz
    for path in (raw, xz):
        code = path.read_bytes()
        assert len(code) < 30_000 and b"b85decode" in code and R.program(code) is not None
        assert "Hyperparameters" in R.program(code) and R.same_code(code, code)
    assert R.program(raw.read_bytes()) != R.program(xz.read_bytes())


@pytest.mark.parametrize(
    "track,name,defect",
    [
        (TEN, "2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence", "artifact 16,059,704 bytes > 16,000,000"),
        (TEN, "2026-03-19_int6_STE QAT_ MLP_bigram _U_Net", "artifact 16,186,500 bytes > 16,000,000"),
        (TEN, "2026-03-19_int6_STE QAT_ MLP_bigram _U_Net", "no README.md"),
        (TEN, "2026-03-19_int6_STE QAT_ MLP_bigram _U_Net", "no submission.json"),
        (TEN, "2026-03-19_int6_STE QAT_ MLP_bigram _U_Net", "no train_gpt.py"),
        (TEN, "2026-03-18_LowerLR", "the submitted train_gpt.py (sha256 e77cf46e4a37) differs from the code"),
        (TEN, "2026-03-17_LoRA_TTT", "seed 1337 repeated"),
        (NON, "2026-04-30_Random_Linear_Adapter", "file name says seed 42, the log prints seed 1337"),
        (NON, "2026-04-30_Random_Linear_Adapter", "file name says seed 2026, the log prints seed 1337"),
        (TEN, "2026-04-09_A2_Muon097_3Seed", "training 588.052 s + GPTQ calibration 12.800 s > 600 s"),
        (TEN, "2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT", "+ GPTQ calibration 12.700 s > 600 s"),
        (TEN, "2026-04-27_SmearGateBOSFix_PR1787Base_LQERAsym_PhasedTTT", "599.623 s + GPTQ calibration 3.500 s"),
    ],
)
def test_every_defect_the_manifest_lists_is_reported(track, name, defect):
    errors, _ = check(track, name)
    assert has(errors, defect), errors
    assert toolkit.run_cli(R.main, ["check", str(folder(track, name))]) == 1


def test_public_verdicts_file_is_what_the_tool_prints_today():
    """records/PUBLIC_VERDICTS.md holds `check --table` over all 60 folders: regenerate it when the rules change."""
    root = shared_path("public_records")
    table = R.verdict_table(sorted(root.glob("track_*/*/")))
    assert table.endswith("pass: 28, flagged: 29, no log: 3, refused: 0\n")
    assert table in (ROOT / "records" / "PUBLIC_VERDICTS.md").read_text()
