"""Issue 27, hardening the new surface: every bad input a careless or hostile user tried is refused in one line
before any work (or handled with a stated reason), no tool replaces a file it did not write, and a run whose score
is not a number fails naming the stage. Crafted artifacts and pickles are in test_hostile_files.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SMALL, shared_path

import toolkit as tk
import train_gpt as tg

sys.path[:0] = [str(REPO / "records"), str(REPO / "benchmarks"), str(REPO / "data")]
import ablate  # noqa: E402
import datalib as dl  # noqa: E402
import download as dn  # noqa: E402
import tokenizer as tok  # noqa: E402

import records as R  # noqa: E402

TINY = {"PRESET": "tiny", "RUN_ID": "x"}
SMOKE = REPO / "records" / "track_non_record_16mb" / "2026-12-01_tiny_cpu_smoke"


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


def cli_refusal(main, argv: list[str], capsys) -> str:
    """A tool's main run through the one-line CLI runner: exit 2, one `error:` line; returns it."""
    assert tk.run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# =====================================================================================================================
# SETTINGS: ranges before any work
# =====================================================================================================================


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"SEED": "-1"}, "SEED=-1: must be in [0, 2^32)"),  # was a numpy traceback at the first line of run()
        ({"SEED": str(1 << 32)}, "SEED=4294967296: must be in [0, 2^32)"),
        ({"GRAD_ACCUM_STEPS": "-1"}, "GRAD_ACCUM_STEPS=-1: must be >= 0"),  # trained on nothing, loss -0.0000
        ({"CLIP_K_ATTN": "0"}, "CLIP_K_ATTN=0.0: must be positive"),
        ({"CLIP_K_MLP": "-1"}, "CLIP_K_MLP=-1.0: must be positive"),
        ({"CLIP_K_EMBED": "0"}, "CLIP_K_EMBED=0.0: must be positive"),
        ({"BETA2": "1.5"}, "BETA2=1.5: must be in [0, 1)"),
        ({"BETA1": "1"}, "BETA1=1.0: must be in [0, 1)"),
        ({"ADAM_EPS": "-1"}, "ADAM_EPS=-1.0: must be >= 0"),
        ({"GPTQ_DAMP": "-1"}, "GPTQ_DAMP=-1.0: must be >= 0"),  # failed only after training
        ({"COMPRESS_LEVEL": "-5"}, "COMPRESS_LEVEL=-5: must be in [0, 22]"),  # ditto
        ({"COMPRESS_LEVEL": "23"}, "COMPRESS_LEVEL=23: must be in [0, 22]"),
        ({"ENGRAM_SLOTS": "1000000000"}, "ENGRAM_SLOTS=1000000000: makes a table of 128,000,000,000 parameters"),
        ({"BIGRAM_HASH": "1000000000"}, "GiB of weights and optimiser state"),
        ({"MUON_MOMENTUM": "5"}, "MUON_MOMENTUM=5.0: must be in [0, 1)"),  # was clamped by the horizon cap
        ({"MUON_MOMENTUM_WARMUP_START": "1"}, "MUON_MOMENTUM_WARMUP_START=1.0: must be in [0, 1)"),
        ({"VAL_BATCH_SIZE": "0"}, "VAL_BATCH_SIZE=0: expected a whole number of tokens, above 0"),  # became 1 silently
        ({"TTT_PHASE_EPOCHS": "1000000"}, "TTT_PHASE_EPOCHS=1000000: must be in [0, 100]"),  # ran until killed
        ({"TTT_PHASES": "1000000000"}, "TTT_PHASES=1000000000: must be in [0, 100]"),  # 3 s became 232 s
        ({"TTT_EPOCHS": "1000"}, "TTT_EPOCHS=1000: must be in [0, 100]"),
        ({"TTT_PHASE_LR": "1e9"}, "TTT_PHASE_LR=1000000000.0: must be in [0, 10.0]"),  # ended in val_bpb:nan
        ({"TTT_PHASE_LR": "inf"}, "TTT_PHASE_LR=inf: must be a finite number"),
        ({"MATRIX_LR": "nan"}, "MATRIX_LR=nan: must be a finite number"),
        ({"STOP_AFTER": "500", "ITERATIONS": "200", "MAX_WALLCLOCK_SECONDS": "0"}, "STOP_AFTER=500: cannot happen"),
        ({"TTT_MODE": "phased", "TTT_PHASE_DOCS": "0"}, "TTT_PHASE_DOCS=0: must be positive for TTT_MODE=phased"),
        ({"TTT_MODE": "phased", "TTT_PHASES": "0"}, "TTT_PHASES=0: must be positive for TTT_MODE=phased"),
        ({"TTT_MODE": "phased", "TTT_PHASES": "9", "TTT_PHASE_DOCS": "4"}, "cannot take effect"),
        ({"TARGET_BYTES": "1000"}, "TARGET_BYTES=1000: leaves no bytes for the model: the code alone is"),
        ({"NUM_HEADS": "0"}, "NUM_HEADS=0: must be positive"),
    ],
)
def test_settings_are_refused_in_one_line_before_any_work(env, needle):
    with pytest.raises(tg.UserError) as e:
        tg.Hyperparameters.from_env({**TINY, **env})
    assert needle in one_line(e.value), str(e.value)


def test_every_preset_and_the_boundaries_still_pass():
    for name in tg.PRESETS:
        tg.Hyperparameters.from_env({"PRESET": name, "RUN_ID": "x"})
    ok = {"SEED": "0", "BETA2": "0.999", "COMPRESS_LEVEL": "0", "STOP_AFTER": "199", "ITERATIONS": "200",
          "MAX_WALLCLOCK_SECONDS": "0", "TTT_MODE": "phased", "TTT_PHASES": "4", "TTT_PHASE_DOCS": "4",
          "TARGET_BYTES": "0", "VAL_BATCH_SIZE": "1", "GRAD_ACCUM_STEPS": "0"}  # fmt: skip
    h = tg.Hyperparameters.from_env({**TINY, **ok})
    assert (h.seed, h.stop_after, h.ttt_phases, h.eval_batch_seqs) == (0, 199, 4, 1)


def outside(f) -> object:
    """A value just outside a setting's declared values (its setting(...) metadata)."""
    m = f.metadata
    if m["choices"]:
        return "nonesuch" if f.type == "str" else max(m["choices"]) + 1
    if "le" in m or "lt" in m:
        hi = m.get("le", m.get("lt"))
        return hi if "lt" in m else (hi + 1 if f.type == "int" else hi * 1.5)
    lo = m.get("ge", m.get("gt"))
    return lo if "gt" in m else lo - 1


def test_each_declared_range_is_what_validation_enforces_and_help_shows():
    """Each setting's allowed values are declared once, in setting(...): validation refuses a value just outside
    every declared bound, naming that setting, and --help prints the same words beside it."""
    rows = {line.split()[0]: line for line in tg.settings_help().splitlines() if line.startswith("  ")}
    declared = [f for f, _ in tg.setting_fields() if tg.allowed(f.metadata)]
    assert len(declared) > 80  # the bounds are declared, not kept in tables elsewhere
    for f in declared:
        name, rule = f.name.upper(), tg.allowed(f.metadata)
        assert f"  {rule}" in rows[name], (name, rule)
        with pytest.raises(tg.UserError) as e:
            tg.Hyperparameters.from_env({**TINY, name: str(outside(f))})
        assert one_line(e.value).startswith(f"{name}=") and f"must be {rule}" in str(e.value), str(e.value)


def test_public_names_are_read_from_the_declarations():
    """A public record script's name (setting(public=...)) sets ours; setting both to different values is refused."""
    public = {f.metadata["public"]: f for f, _ in tg.setting_fields() if f.metadata.get("public")}
    assert {"ENABLE_LOOPING_AT", "MATRIX_BITS", "GLOBAL_TTT_LR", "TTT_CHUNK_SIZE"} <= set(public)
    h = tg.Hyperparameters.from_env({**TINY, "ENABLE_LOOPING_AT": "0.5", "MATRIX_BITS": "5", "TTT_CHUNK_SIZE": "32"})
    assert (h.loop_start_frac, h.quant_matrix_bits, h.ttt_lora_chunk) == (0.5, 5, 32)
    with pytest.raises(tg.UserError, match="MATRIX_BITS=5 and QUANT_MATRIX_BITS=6 name the same setting"):
        tg.Hyperparameters.from_env({**TINY, "MATRIX_BITS": "5", "QUANT_MATRIX_BITS": "6"})


def test_seed_minus_one_exits_2_in_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, **TINY, "SEED": "-1", "LOG_DIR": str(tmp_path / "logs")}
    out = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=env, capture_output=True, text=True,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip() == "error: SEED=-1: must be in [0, 2^32)"
    assert list(tmp_path.iterdir()) == []


# =====================================================================================================================
# RUNS: a non-finite score, resume states, the tokenizer
# =====================================================================================================================


def env_for(dataset, tmp_path, **over) -> dict[str, str]:
    return {**SMALL, **dataset, "LOG_DIR": str(tmp_path / "logs"), "RUN_ID": "r", "GPTQ": "0", "EVAL_STRIDE": "0",
            "ARTIFACT_PATH": str(tmp_path / "art" / "r.pgz"), **{k: str(v) for k, v in over.items()}}  # fmt: skip


def test_a_non_finite_final_score_fails_the_run_naming_the_stage(dataset, tmp_path, monkeypatch):
    """TTT_PHASE_LR=1e9 ended with val_bpb:nan, a run_summary and exit 0. A TTT stage that scores nan (as that
    run's did) now fails the run: one line naming the stage, no run_summary, exit 2 from main."""
    real = tg.eval_ttt

    def nan_ttt(*a, **kw):
        res = real(*a, **kw)
        res.val_loss = res.val_bpb = float("nan")
        return res

    monkeypatch.setattr(tg, "eval_ttt", nan_ttt)
    env = env_for(dataset, tmp_path, ITERATIONS=2, TTT_MODE="lora", TTT_LORA_DOCS=4, TTT_LORA_RANK=2)
    with pytest.raises(tg.UserError) as e:
        tg.run(tg.Hyperparameters.from_env(env), tg.Dist())
    assert "final_int6_ttt val_loss:nan val_bpb:nan: the test-time training (TTT_MODE=lora" in one_line(e.value)
    log = (tmp_path / "logs" / "r.txt").read_text().split("==== end of source ====\n")[-1]
    assert "\nrun_summary {" not in log and "run_complete" not in log and "error: final_int6_ttt" in log
    good = tg.EvalResult(1.0, 0.5, 10, 20, 0.1)
    tg.check_finite([("final_float", good)], tg.Hyperparameters.from_env(TINY))
    with pytest.raises(tg.UserError, match="the trained float model scores non-finite"):
        tg.check_finite([("final_float", tg.EvalResult(float("inf"), 0.5, 10, 20, 0.1))], tg.Hyperparameters.make())


@pytest.fixture(scope="module")
def resume_state(dataset, tmp_path_factory):
    """A real resume state (STOP_AFTER=2 of 4 steps) and the settings that continue it."""
    tmp = tmp_path_factory.mktemp("resume")
    over = dict(ITERATIONS=4, MAX_WALLCLOCK_SECONDS=0)
    tg.run(tg.Hyperparameters.from_env(env_for(dataset, tmp / "a", STOP_AFTER=2, **over)), tg.Dist())
    return tmp / "a" / "art" / "r.resume.pt", over


def damaged(path: Path, dest: Path, change) -> Path:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, dest)
    return dest


def _wrong_shape(s: dict) -> None:
    s["model"]["tok_emb.weight"] = torch.zeros(3, 3)


def _wrong_optimiser_state(s: dict) -> None:
    for opt in s["optimizers"]:
        for kept in opt["state"].values():
            for k, v in kept.items():
                if isinstance(v, torch.Tensor) and v.dim():
                    kept[k] = torch.zeros(2, 2)


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda s: s.pop("rng"), "not a complete resume state (KeyError: 'rng')"),
        (lambda s: s.pop("loader"), "not a complete resume state (KeyError: 'loader')"),
        (_wrong_shape, "size mismatch for tok_emb.weight"),
        (_wrong_optimiser_state, "an optimiser state of another shape"),
        (lambda s: s["loader"].update(file_idx=99), "its loader stands at shard 99 token"),
        (lambda s: s["loader"].update(pos=10**9), "past the 3 train shards here"),
        (lambda s: s["optimizers"].pop(), "its step, optimisers or EMA do not match this run"),
    ],
)
def test_a_damaged_resume_state_is_refused_in_one_line(dataset, tmp_path, resume_state, change, needle):
    """Each was a traceback (KeyError, RuntimeError, IndexError) or failed at the first step."""
    path, over = resume_state
    bad = damaged(path, tmp_path / "bad.resume.pt", change)
    with pytest.raises(tg.UserError) as e:
        tg.run(tg.Hyperparameters.from_env(env_for(dataset, tmp_path / "b", RESUME_FROM=bad, **over)), tg.Dist())
    assert needle in one_line(e.value) and f"RESUME_FROM={bad}" in str(e.value), str(e.value)


def test_a_tokenizer_path_to_a_non_model_file_is_one_line(dataset, tmp_path, capsys):
    import eval_bpb

    junk = tmp_path / "junk.model"
    junk.write_text("not a model\n")
    h = tg.Hyperparameters.from_env(env_for(dataset, tmp_path, TOKENIZER_PATH=junk))
    with pytest.raises(tg.UserError) as e:
        tg.load_validation(h)
    assert f"TOKENIZER_PATH={junk}: not a SentencePiece model" in one_line(e.value)
    h = tk.preset("tiny", gptq=0)
    model = tg.build_model(h.model)
    blob, _ = tg.build_artifact(model.state_dict(), tg.param_roles(model), h.model, h)
    (tmp_path / "m.pgz").write_bytes(blob)
    argv = ["--artifact", str(tmp_path / "m.pgz"), "--tokenizer", str(junk), "--mode", "flat"]
    assert "not a SentencePiece model" in cli_refusal(eval_bpb._main, argv, capsys)


# =====================================================================================================================
# OUTPUTS: no tool writes over a file it did not create
# =====================================================================================================================


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    h = tk.preset("tiny", gptq=0)
    model = tg.build_model(h.model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt.pt"
    tg.save_checkpoint(path, h.model, model.state_dict(), h.flat())
    return path


def test_quantize_never_replaces_a_file_that_is_not_an_artifact(checkpoint, tmp_path, capsys):
    """`quantize.py quantize CKPT -o train_gpt.py` replaced the script with an artifact."""
    import quantize

    script = tmp_path / "train_gpt.py"
    script.write_text("print('the script')\n")
    for argv in (
        ["quantize", str(checkpoint), "-o", str(script), "--set", "GPTQ=0"],
        ["fit", str(checkpoint), "-o", str(script), "--set", "GPTQ=0"],
        ["pack", "-o", str(script)],
    ):
        err = cli_refusal(quantize._main, argv, capsys)
        assert f"-o {script}: exists and is not" in err and "refusing to replace it" in err
    assert script.read_text() == "print('the script')\n"
    assert "is a folder" in cli_refusal(quantize._main, ["quantize", str(checkpoint), "-o", str(tmp_path)], capsys)
    art = tmp_path / "old.pgz"
    art.write_bytes(tg.ARTIFACT_MAGIC + b"an older artifact")
    assert quantize.main(["quantize", str(checkpoint), "-o", str(art), "--set", "GPTQ=0"]) == 0
    assert tg.decode_artifact(art.read_bytes())  # an artifact is replaced, as the help says
    packed = tmp_path / "packed.py"
    assert quantize.main(["pack", "-o", str(packed)]) == 0 and quantize.main(["pack", "-o", str(packed)]) == 0


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--matrix-bits", "abc"], "--matrix-bits 'abc': expected comma-separated bit widths"),
        (["--embed-bits", "7,x"], "--embed-bits '7,x': expected comma-separated bit widths"),
        (["--matrix-bits", "9"], "every width must be between 2 and 8"),
        (["--target", "0"], "--target 0: must be a positive number of bytes"),
        (["--target", "1000"], "--target 1000 is unreachable: the code alone takes"),
    ],
)
def test_quantize_fit_flags_are_one_line(checkpoint, tmp_path, capsys, flags, needle):
    import quantize

    argv = ["fit", str(checkpoint), "-o", str(tmp_path / "f.pgz"), "--set", "GPTQ=0", *flags]
    assert needle in cli_refusal(quantize._main, argv, capsys)
    assert not (tmp_path / "f.pgz").exists()


def test_data_tools_replace_only_what_they_write(tmp_path, capsys):
    model = shared_path("tokenizers", "fineweb_1024_bpe.model")
    notes = tmp_path / "notes.model"
    notes.write_text("my notes\n")
    argv = ["--docs", str(shared_path("text", "fineweb_docs_200.jsonl")), "--out", str(notes), "--overwrite"]
    assert "notes.model exists and is not a file the data tools write" in cli_refusal(tok.main, argv, capsys)
    assert notes.read_text() == "my notes\n"
    for path, ok in [
        (model, True),
        (tmp_path / "absent.bin", True),
        (notes, False),
        (tmp_path, False),
    ]:
        if ok:
            dl.check_replaceable(path, "--out")
        else:
            with pytest.raises(tk.UserError, match="refusing to replace it"):
                dl.check_replaceable(path, "--out")
    shard = tmp_path / "fineweb_val_000000.bin"
    tk.write_shard(shard, [1, 2, 3])
    dl.check_replaceable(shard, "--out")
    shard.write_bytes(b"a file named like a shard")
    with pytest.raises(tk.UserError, match="fineweb_val_000000.bin exists and is not"):
        dl.check_replaceable(shard, "--out")
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text("my project's manifest, not JSON\n")
    argv = ["--docs", str(shared_path("text", "fineweb_docs_200.jsonl")), "--tokenizer", str(model), "--out",
            str(out), "--overwrite"]  # fmt: skip
    import export as ex

    assert "manifest.json exists and is not a file the data tools write" in cli_refusal(ex.main, argv, capsys)
    assert (out / "manifest.json").read_text() == "my project's manifest, not JSON\n"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--repo", "my repo"], "--repo 'my repo': expected a Hugging Face dataset id, owner/name"),
        (["--repo", "owner/name", "--remote-root", "../x"], "--remote-root '../x': expected a folder of the repo"),
    ],
)
def test_download_flags_are_one_line(tmp_path, capsys, argv, needle):
    """`--repo 'my repo'` was an http.client.InvalidURL traceback."""
    assert needle in cli_refusal(dn.main, [*argv, "--out", str(tmp_path / "d")], capsys)
    assert not (tmp_path / "d").exists()


def test_download_never_replaces_a_foreign_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text("[1, 2]")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "manifest.json").write_text('{"datasets": [], "tokenizers": []}')
    err = cli_refusal(dn.main, ["--out", str(tmp_path), "--base-url", str(mirror)], capsys)
    assert "manifest.json exists and is not a file the data tools write" in err
    assert (tmp_path / "manifest.json").read_text() == "[1, 2]"


# =====================================================================================================================
# RECORDS AND THE ABLATION RUNNER
# =====================================================================================================================


def folder_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "track_non_record_16mb" / SMOKE.name
    shutil.copytree(SMOKE, dest)
    return dest


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"val_bpb": "1.2"}, "val_bpb = '1.2': must be a finite number"),
        ({"val_bpb": None}, "val_bpb = None: must be a finite number"),
        ({"val_loss": "x"}, "val_loss = 'x': must be a finite number"),
        ({"seeds": "1,2,3"}, "seeds = '1,2,3': must be a list of integer seeds"),
        ({"seeds": [1, "2", 3]}, "must be a list of integer seeds"),
        ({"seed_results": []}, "seed_results must be an object"),
        ({"seed_results": {"1": {"val_bpb": "3.4"}}}, "seed 1 val_bpb = '3.4': must be a finite number"),
    ],
)
def test_records_check_validates_submission_json_types(tmp_path, capsys, change, needle):
    """Each was accepted: a string, null or string seeds were skipped as 'not quoted'."""
    folder = folder_copy(tmp_path)
    sub = json.loads((folder / "submission.json").read_text())
    (folder / "submission.json").write_text(json.dumps({**sub, **change}))
    assert R.main(["check", str(folder)]) == 1
    assert any(line.startswith("ERROR") and needle in line for line in capsys.readouterr().out.splitlines()), needle


def test_records_check_passes_the_folder_as_built(capsys):
    assert R.main(["check", str(SMOKE)]) == 0


def nan_log(tmp_path: Path) -> Path:
    """A real log whose final score went nan, printed and summarised as train_gpt.py printed such a run."""
    lines = (SMOKE / "train_seed1.log").read_text().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("final_int6_sliding_window_exact "):
            lines[i] = "final_int6_sliding_window_exact val_loss:nan val_bpb:nan"
        if line.startswith("run_summary "):
            s = json.loads(line[len("run_summary ") :])
            s["scores"][-1].update(val_loss=float("nan"), val_bpb=float("nan"))
            lines[i] = "run_summary " + json.dumps(s, sort_keys=True, separators=(",", ":"))
    path = tmp_path / "nan.log"
    path.write_text("\n".join(lines))
    return path


def test_records_refuse_a_log_whose_score_is_nan(tmp_path, capsys):
    """`records.py stats` on such a log was an AttributeError traceback in the t-test."""
    log = nan_log(tmp_path)
    for argv in (["parse", str(log)], ["stats", str(log), str(log)]):
        err = cli_refusal(R.main, argv, capsys)
        assert "final_int6_sliding_window val_loss:nan val_bpb:nan is not a number: the run went non-finite" in err


def test_records_build_validates_the_date_and_replaces_only_its_own_folders(tmp_path, capsys):
    logs = [str(p) for p in sorted(SMOKE.glob("*.log"))]
    base = ["build", "--track", "track_non_record_16mb", "--name", "x", *logs, "--code", str(SMOKE / "train_gpt.py"),
            "--author", "a", "--github-id", "b", "--out", str(tmp_path)]  # fmt: skip
    assert "--date '2026-13-45': use a real date" in cli_refusal(R.main, [*base, "--date", "2026-13-45"], capsys)
    assert not (tmp_path / "track_non_record_16mb").exists()
    mine = tmp_path / "track_non_record_16mb" / "2026-12-02_x"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("precious")
    err = cli_refusal(R.main, [*base, "--date", "2026-12-02", "--force"], capsys)
    assert "is not a record folder this tool built; refusing to replace it" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    shutil.rmtree(mine)
    assert R.main([*base, "--date", "2026-12-02"]) == 0 and R.main([*base, "--date", "2026-12-02", "--force"]) == 0


SPEC = REPO / "benchmarks" / "ablations" / "smoke.json"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--seeds", "-1"], "--seeds -1: every seed must be in [0, 2^32)"),
        (["--seeds", str(1 << 32)], "every seed must be in [0, 2^32)"),
        (["--seeds", "1", "1"], "each seed once"),
        (["--budget", "inf"], "--budget inf: must be a positive number"),
        (["--only", "nope"], "--only nope: no such variant"),
    ],
)
def test_ablate_flags_are_one_line(capsys, argv, needle):
    assert needle in cli_refusal(ablate.main, [str(SPEC), *argv, "--dry-run"], capsys)


def test_ablate_spec_seeds_and_its_output_folder_are_checked(tmp_path, capsys):
    spec = json.loads(SPEC.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**spec, "seeds": [-1]}))
    assert "seeds must be a non-empty list of distinct integers in [0, 2^32)" in cli_refusal(
        ablate.main, [str(bad), "--dry-run"], capsys
    )
    afile = tmp_path / "a_file"
    afile.write_text("x")
    assert "is a file, not a folder" in cli_refusal(ablate.main, [str(SPEC), "--out", str(afile), "--report"], capsys)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").write_text("my own results")
    err = cli_refusal(ablate.main, [str(SPEC), "--out", str(out), "--report"], capsys)
    assert "results.md there is not this runner's results; refusing to replace it" in err
    (out / "results.md").unlink()
    (out / ".ablate.lock").write_text("not a pid")
    with pytest.raises(tk.UserError, match="not a lock this runner wrote"):
        with ablate.OutLock(out):
            pass
    assert (out / ".ablate.lock").read_text() == "not a pid"
