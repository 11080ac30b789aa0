"""benchmarks/ablate.py: spec checks, the plan, resume, the table and its refusals, on real tiny runs.

A module fixture runs a 2-variant x 2-seed spec derived from benchmarks/ablations/smoke.json once (real train_gpt.py
subprocesses, data prepared from the shared FineWeb documents and the official val prefix); the fast tests reuse its
logs. The slow test runs smoke.json itself through the CLI, interrupts it with Ctrl-C and resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, shared_path

sys.path.insert(0, str(REPO / "benchmarks"))
import ablate  # noqa: E402

records, toolkit = ablate.records, ablate.toolkit  # records/records.py (welch_less) and the CLI glue

SMOKE = REPO / "benchmarks" / "ablations" / "smoke.json"
GOLF = REPO / "benchmarks" / "ablations" / "cpu_golf.json"
VAL_PREFIX = ("fineweb_val_prefix", "fineweb_val_000000.bin")
EXACT = re.compile(r"^final_int6_sliding_window_exact val_loss:\S+ val_bpb:(\S+)$", re.M)


def need_smoke_data() -> None:
    shared_path("text", "fineweb_docs_200.jsonl")
    shared_path("tokenizers", "fineweb_1024_bpe.model")
    shared_path(*VAL_PREFIX)


def write_spec(folder: Path, spec: dict, name: str = "spec.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(spec))
    return path


def smoke_spec(**changes) -> dict:
    spec = json.loads(SMOKE.read_text())
    spec.update(changes)
    return spec


def run_main(argv: list[str]) -> tuple[int, str]:
    """ablate's CLI in this process: exit code and stdout (stderr goes to pytest's capture)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = toolkit.run_cli(ablate.main, argv)
    return rc, buf.getvalue()


def refusal(argv: list[str], capsys) -> str:
    """The one-line error of a refused command (exit 2)."""
    rc, _ = run_main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """smoke.json with 2 training steps: 2 variants x 2 seeds, really run; (spec path, out folder, stdout)."""
    need_smoke_data()
    folder = tmp_path_factory.mktemp("ablate")
    spec = smoke_spec(name="fx")
    spec["base"]["ITERATIONS"] = "2"
    path = write_spec(folder, spec)
    out = folder / "out"
    rc, text = run_main([str(path), "--out", str(out)])
    assert rc == 0, text
    return path, out, text


def copy_out(finished, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    return out


def no_launch(run, spec):
    raise AssertionError(f"{run.run_id} was launched, but its log is complete")


# =====================================================================================================================
# runs and table
# =====================================================================================================================


def test_runs_every_variant_and_seed_and_tables_them(finished, capsys):
    spec_path, out, text = finished
    assert "[1/4] tiny seed 1: start" in text and "[4/4] no_xsa seed 2: done" in text
    assert "ETA 0:" in text and "(from 3 finished)" in text
    logs = {}
    for variant in ("tiny", "no_xsa"):
        for seed in (1, 2):
            log = (out / "logs" / f"fx-{variant}-s{seed}.txt").read_text()
            summary = toolkit.read_run_summary(out / "logs" / f"fx-{variant}-s{seed}.txt")
            assert summary["seed"] == seed and summary["train_steps"] == 2
            assert summary["config"]["xsa"] == (variant == "tiny")
            assert re.search(r"^device:cpu .*threads:1 x1$", log, re.M)  # launch.threads reached torch
            assert log.rstrip().endswith("run_complete")
            assert (out / "artifacts" / f"fx-{variant}-s{seed}.pgz").is_file()
            logs[variant, seed] = float(EXACT.findall(log)[-1])  # the log's own line, not the summary
    # the val split is a copy of the official prefix; the repository's data folder is untouched
    assert (out / "data" / "fineweb_val_000000.bin").read_bytes() == shared_path(*VAL_PREFIX).read_bytes()
    assert json.loads((out / "data" / "prepared.json").read_text())["prepare"] == smoke_spec()["prepare"]

    report = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert list(rows) == ["tiny", "no_xsa"] and report["reference"] == "tiny"
    ref = [logs["tiny", 1], logs["tiny", 2]]
    new = [logs["no_xsa", 1], logs["no_xsa", 2]]
    assert rows["tiny"]["n"] == 2 and math.isclose(rows["tiny"]["mean"], sum(ref) / 2, rel_tol=0, abs_tol=1e-8)
    assert math.isclose(rows["no_xsa"]["delta"], sum(new) / 2 - sum(ref) / 2, abs_tol=1e-8)
    t = records.welch_less(new, ref)
    assert math.isclose(rows["no_xsa"]["p_two_sided"], 2 * min(t.p_value, 1 - t.p_value), rel_tol=1e-4)
    assert rows["tiny"]["p_two_sided"] is None and rows["tiny"]["delta"] is None
    for r in rows.values():
        assert r["steps"] == 2 and r["tokens_per_s"] > 0 and r["total_bytes"] > 100_000
        assert r["gptq_calibration_ms"] > 0
    md = (out / "results.md").read_text()
    assert md in text  # printed and written
    assert re.search(r"^\| no_xsa \| 2 \| \d\.\d{4} ± \d\.\d{4} \| [+-]\d\.\d{4} \| [\d.e-]+ \| 2 \|", md, re.M)
    assert "no time budget, 2 steps" in md


def test_two_sided_welch_is_symmetric_and_undefined_below_two_runs():
    a, b = [1.00, 1.02, 1.01], [1.05, 1.04, 1.07]
    ab, ba = ablate.two_sided_welch(a, b), ablate.two_sided_welch(b, a)
    assert math.isclose(ab.detail["p_two_sided"], ba.detail["p_two_sided"], rel_tol=1e-12)
    assert ab.detail["p_two_sided"] == pytest.approx(2 * records.welch_less(a, b).p_value)
    assert ablate.two_sided_welch([1.0], b) is None and ablate.two_sided_welch([1.0, 1.0], [2.0, 2.0]) is None


# =====================================================================================================================
# resume
# =====================================================================================================================


def test_complete_runs_are_not_run_again(finished, tmp_path, monkeypatch):
    out = copy_out(finished, tmp_path)  # a moved folder: its logs still count
    monkeypatch.setattr(ablate, "launch", no_launch)
    rc, text = run_main([str(finished[0]), "--out", str(out)])
    assert rc == 0 and "4 runs, 4 already complete, 0 to run" in text
    assert (out / "results.md").read_text() == (finished[1] / "results.md").read_text()


def test_an_interrupted_run_is_moved_aside_and_run_again(finished, tmp_path, monkeypatch):
    out = copy_out(finished, tmp_path)
    log = out / "logs" / "fx-no_xsa-s2.txt"
    full = log.read_text()
    partial = full[: full.index("run_summary ")]  # killed just before its summary
    log.write_text(partial)
    launched = []

    def relaunch(run, spec):  # the real subprocess is exercised by the fixture and the slow test
        launched.append((run.run_id, run.env["SEED"], run.env["XSA"], spec.threads))
        run.log.write_text(full)
        return 0

    monkeypatch.setattr(ablate, "launch", relaunch)
    rc, text = run_main([str(finished[0]), "--out", str(out)])
    assert rc == 0 and launched == [("fx-no_xsa-s2", "2", "0", 1)]
    assert (
        "3 already complete, 1 to run" in text
        and "fx-no_xsa-s2: no run_summary (interrupted or failed); moved " in text
    )
    assert (out / "logs" / "aside" / "fx-no_xsa-s2.1.txt").read_text() == partial  # kept, not deleted
    assert (out / "logs" / "aside" / "fx-no_xsa-s2.1.out").exists()
    # its artifact and checkpoint too: train_gpt.py would refuse to replace them
    assert {p.name for p in (out / "logs" / "aside").iterdir()} == {
        f"fx-no_xsa-s2.1{suffix}" for suffix in (".txt", ".out", ".pgz", ".ckpt.pt")
    }


def test_a_failed_run_is_reported_and_the_rest_still_tabled(finished, tmp_path, monkeypatch):
    out = copy_out(finished, tmp_path)
    (out / "logs" / "fx-tiny-s1.txt").write_text("run_id:fx-tiny-s1\n")

    def crash(run, spec):
        run.console.write_text("Traceback ...\nRuntimeError: out of memory\n")
        return 1

    monkeypatch.setattr(ablate, "launch", crash)
    rc, text = run_main([str(finished[0]), "--out", str(out)])
    assert rc == 1 and "FAILED (exit 1)" in text and "RuntimeError: out of memory" in text
    report = json.loads((out / "results.json").read_text())
    assert {r["variant"]: r["n"] for r in report["variants"]} == {"tiny": 1, "no_xsa": 2}
    assert report["variants"][1]["p_two_sided"] is None  # one reference run: no test


def test_a_changed_budget_does_not_reuse_finished_logs(finished, tmp_path, monkeypatch, capsys):
    out = copy_out(finished, tmp_path)
    monkeypatch.setattr(ablate, "launch", no_launch)
    err = refusal([str(finished[0]), "--out", str(out), "--budget", "5"], capsys)
    assert "MAX_WALLCLOCK_SECONDS=0.0" in err and "5.0" in err and "fx-tiny-s1.txt" in err
    err = refusal([str(finished[0]), "--out", str(out), "--budget", "5", "--report"], capsys)  # nor tables them
    assert "MAX_WALLCLOCK_SECONDS=0.0" in err and "5.0" in err


def test_report_refuses_runs_on_different_data(finished, tmp_path, capsys):
    out = copy_out(finished, tmp_path)
    log = out / "logs" / "fx-no_xsa-s1.txt"
    text = log.read_text()
    summary = toolkit.read_run_summary(log)
    line = "run_summary " + json.dumps(summary, sort_keys=True, separators=(",", ":"))
    assert line in text
    log.write_text(text.replace(line, line.replace(f'"val_bytes":{summary["val_bytes"]}', '"val_bytes":1')))
    err = refusal([str(finished[0]), "--out", str(out), "--report"], capsys)
    assert "different data: VAL_BYTES" in err and "fx-no_xsa-s1" in err and "fx-tiny-s1" in err


def test_one_runner_per_output_folder(finished, tmp_path, capsys):
    out = copy_out(finished, tmp_path)
    (out / ".ablate.lock").write_text(str(os.getppid()))  # a live process
    assert "another ablate.py" in refusal([str(finished[0]), "--out", str(out)], capsys)


# =====================================================================================================================
# bad input: one line each, exit 2, nothing run
# =====================================================================================================================


@pytest.mark.parametrize(
    "change, expect",
    [
        ({"variants": {"a": {"XSAA": "0"}}}, "variants.a sets XSAA, which is not a setting of train_gpt.py; did you"),
        ({"base": {"PRESET": "tiny", "SEED": "3"}}, "base sets SEED, which the runner derives"),
        ({"base": {"PRESET": "tiny", "DATA_PATH": "x"}}, "base sets DATA_PATH, which the prepare section decides"),
        ({"variants": {"a": ["XSA", "0"]}}, "variants.a must be an object of settings"),
        ({"variants": {"a b": {}}}, "variant name 'a b'"),
        ({"seeds": [1, 1]}, "seeds must be a non-empty list of distinct integers"),
        ({"varients": {}}, "unknown key 'varients'"),
        ({"launch": {"procs": 0}}, "launch.procs must be a positive integer"),
        ({"reference": "nope"}, "reference 'nope' is not a variant"),
        ({"prepare": {"val_shard": "x"}}, "prepare must be an object with 'export'"),
        ({"variants": {"a": {"NUM_HEADS": "5"}}, "reference": "a"}, "variant a: NUM_HEADS=5: must divide MODEL_DIM=64"),
        ({"variants": {"a": {}, "b": {"ITERATIONS": "3"}}, "reference": "a"}, "budgets: ITERATIONS is 6 in smoke-a-s1"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_in_one_line(change, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablate, "launch", no_launch)
    path = write_spec(tmp_path, smoke_spec(**change))
    err = refusal([str(path), "--out", str(tmp_path / "out"), "--dry-run"], capsys)
    assert str(path) in err or "ITERATIONS" in err
    assert expect in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_bad_json_and_missing_keys_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"base": {"PRESET": "tiny"},\n "variants": {"a": {}}\n "seeds": [1]}')
    err = refusal([str(bad)], capsys)
    assert f"{bad}: not valid JSON (line 3" in err
    spec = smoke_spec()
    del spec["variants"]
    err = refusal([str(write_spec(tmp_path, spec))], capsys)
    assert "spec.json: missing key 'variants'" in err
    assert "no such spec file" in refusal([str(tmp_path / "absent.json")], capsys)


def test_only_and_seeds_and_budget_are_checked(tmp_path, capsys):
    err = refusal([str(SMOKE), "--only", "no_xas", "--dry-run"], capsys)
    assert "--only no_xas: no such variant" in err and "did you mean no_xsa?" in err
    assert "each seed once" in refusal([str(SMOKE), "--seeds", "1", "1", "--dry-run"], capsys)
    assert "--budget -3.0" in refusal([str(SMOKE), "--budget", "-3", "--dry-run"], capsys)


def test_a_missing_input_is_refused_before_any_run(tmp_path, capsys, monkeypatch):
    need_smoke_data()
    monkeypatch.setattr(ablate, "launch", no_launch)
    spec = smoke_spec()
    spec["prepare"]["export"]["inputs"] = ["../shared/data/text/nothing_*.jsonl"]
    err = refusal([str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "out")], capsys)
    assert "prepare.export.inputs: ../shared/data/text/nothing_*.jsonl matches no file" in err


def test_settings_inherited_from_the_callers_environment_are_dropped(monkeypatch, tmp_path):
    captured = {}

    class FakePopen:  # records the environment a run would get
        def __init__(self, cmd, cwd, env, stdout, stderr):
            captured.update(env)

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(ablate.subprocess, "Popen", FakePopen)
    monkeypatch.setenv("NUM_LAYERS", "9")
    monkeypatch.setenv("PRESET", "frontier")
    spec = ablate.load_spec(SMOKE)
    (run,) = ablate.plan(spec, tmp_path, [3], ["no_xsa"], None)
    ablate.launch(run, spec)
    assert "NUM_LAYERS" not in captured and captured["PRESET"] == "tiny" and captured["XSA"] == "0"
    assert captured["SEED"] == "3" and captured["OMP_NUM_THREADS"] == "1" and captured["RUN_ID"] == "smoke-no_xsa-s3"


# =====================================================================================================================
# the CPU golf spec
# =====================================================================================================================


def test_cpu_golf_spec_is_the_issue_15_benchmark(tmp_path):
    spec = ablate.load_spec(GOLF)
    assert (spec.procs, spec.threads, spec.seeds, spec.byte_limit) == (1, 2, [1, 2], 2_000_000)
    assert spec.prepare["val_shard"] == "../shared/data/fineweb_val_prefix/fineweb_val_000000.bin"
    assert spec.prepare["export"]["tokenizer"] == "../shared/data/tokenizers/fineweb_1024_bpe.model"
    runs = ablate.plan(spec, tmp_path, spec.seeds, list(spec.variants), None)  # every run's settings are valid
    assert len(runs) == 2 * len(spec.variants)
    config = {r.variant: r.config for r in runs if r.seed == 1}
    shape = dict(num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2, mlp_mult=2.0, vocab_size=1024,
                 train_seq_len=256, train_batch_tokens=16384, max_wallclock_seconds=300.0,
                 target_bytes=2_000_000)  # fmt: skip
    for variant, c in config.items():  # (the baseline rows keep the SDClip export they ran, which TARGET_BYTES steers)
        assert {k: c[k] for k in shape} == shape, variant
    base = config["frontier"]
    assert base["preset"] == "frontier" and config["baseline"]["preset"] == "baseline"
    assert config["baseline"]["num_loops"] == 1 and config["baseline"]["parallel_start"] == -1
    assert config["baseline"]["xsa"] == 0 and config["baseline"]["gptq"] == 0
    # leave-one-out: each variant changes exactly the setting it names, and that setting really differs
    switched = {}
    for variant, settings in spec.variants.items():
        if variant.startswith(("frontier", "baseline", "cpu")):
            continue
        diff = {k for k in base if base[k] != config[variant][k]} - {"run_id", "artifact_path"}
        assert diff == {k.lower() for k in settings}, variant
        for k, v in settings.items():  # the first variant that switches a setting is its leave-one-out
            switched.setdefault(k, v)
    for key, off in dict(XSA="0", SMEAR_GATE="0", ATTN_OUT_GATE="0", SKIP_GATES="0", UNET_SKIPS="0", X0_MIX="0",
                         LN_SCALE="0", ROPE_DIMS="0", NUM_LOOPS="1", PARALLEL_START="-1", EMA_DECAY="0", GPTQ="0",
                         MUON_POLAR_EXPRESS="0", MUON_EQ_R="0", MLP_ACT="relu2").items():  # fmt: skip
        assert switched.get(key) == off, key
    assert base["num_loops"] > 1 and base["parallel_start"] >= 0 and base["gptq"] == 1  # the frontier's features on


# =====================================================================================================================
# the smoke spec through the CLI, with Ctrl-C and resume
# =====================================================================================================================


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / "ablate.py"), str(SMOKE), "--out", str(out), *extra]


@pytest.mark.slow
def test_smoke_spec_end_to_end_with_ctrl_c_and_resume(tmp_path):
    need_smoke_data()
    out = tmp_path / "smoke"
    first, second = out / "logs" / "smoke-tiny-s1.txt", out / "logs" / "smoke-tiny-s2.txt"
    proc = subprocess.Popen(_cli(out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while not (second.exists() and "model_params:" in second.read_text()):  # run 2 is training
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: finished runs are intact" in stdout
    assert toolkit.read_run_summary(first) is not None and toolkit.read_run_summary(second) is None
    assert not (out / ".ablate.lock").exists()

    report = subprocess.run(_cli(out, "--report"), cwd=REPO, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "| tiny | 1 |" in report.stdout and "No complete run yet: no_xsa." in report.stdout

    resumed = subprocess.run(_cli(out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "4 runs, 1 already complete, 3 to run" in resumed.stdout
    assert "smoke-tiny-s2: no run_summary (interrupted or failed); moved smoke-tiny-s2.1.txt" in resumed.stdout
    assert (out / "logs" / "aside" / "smoke-tiny-s2.1.txt").exists()
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())["variants"]}
    assert rows["tiny"]["n"] == rows["no_xsa"]["n"] == 2 and rows["no_xsa"]["p_two_sided"] is not None
    assert all(toolkit.read_run_summary(p) for p in (out / "logs").glob("smoke-*.txt"))


@pytest.mark.slow
def test_torchrun_launch_runs_every_rank(tmp_path):
    need_smoke_data()
    spec = smoke_spec(name="ddp", launch={"procs": 2, "threads": 1}, variants={"tiny": {}}, seeds=[1])
    path = write_spec(tmp_path, spec)
    rc, text = run_main([str(path), "--out", str(tmp_path / "out")])
    assert rc == 0, text
    summary = toolkit.read_run_summary(tmp_path / "out" / "logs" / "ddp-tiny-s1.txt")
    assert summary["world_size"] == 2 and summary["train_steps"] == 6


def test_cpu_preset_is_the_measured_cpu_golf_candidate():
    """PRESET=cpu resolves to exactly what the CPU golf benchmarks measured as their best candidate (cpu_explore.json's
    c_mom85 over cpu_golf.json's base, with the BigramHash table of cpu_shapes.json's cpu_bigram_4096 and the tokens
    per step, embedding export, width and sequential blocks of its cpu_b4k_e8_w224_noparallel, and the warm-down of
    cpu_mixed.json's cpu_wd60), data paths aside, so the preset and its benchmark rows cannot drift apart."""
    import train_gpt as tg

    golf = json.loads((REPO / "benchmarks/ablations/cpu_golf.json").read_text())
    explore = json.loads((REPO / "benchmarks/ablations/cpu_explore.json").read_text())
    shapes = json.loads((REPO / "benchmarks/ablations/cpu_shapes.json").read_text())
    bigram = dict(shapes["variants"]["cpu_bigram_4096"])
    assert bigram.pop("PRESET") == "cpu" and shapes["base"] == golf["base"]
    batch = dict(shapes["variants"]["cpu_b4k_e8_w224_noparallel"])
    assert batch.pop("PRESET") == "cpu"
    mixed = json.loads((REPO / "benchmarks/ablations/cpu_mixed.json").read_text())
    warmdown = dict(mixed["variants"]["cpu_wd60"])
    assert warmdown.pop("PRESET") == "cpu" and mixed["base"] == golf["base"]
    same = lambda row: {k: v for k, v in row.items() if k != "WARMDOWN_FRAC"}  # noqa: E731
    assert same(warmdown) == same(batch) and batch["WARMDOWN_FRAC"] == "0.4"  # the same row, but its warm-down
    # the frontier defaults these rows ran under, before the frontier took the record's constants (issue 25)
    then = {"SCHEDULE_REFERENCE_STEPS": "4900", "MUON_MOMENTUM_HORIZON_FRAC": "0.05", "LOOP_RAMP_FRAC": "0.03",
            "QUANT_SCALE_BITS": "6"}  # fmt: skip
    measured = {**golf["base"], **then, **explore["variants"]["c_mom85"], **bigram, **batch, **warmdown}
    measured.pop("TARGET_BYTES")  # the golf cap: the preset's 1.49 MB artifact is under either
    measured.pop("GPTQ_CALIB_BATCHES")  # GPTQ is off in both
    a = tg.Hyperparameters.from_env({**measured, "RUN_ID": "x"})
    b = tg.Hyperparameters.from_env({"PRESET": "cpu", "RUN_ID": "x"})
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    differ = {k for k in da if da[k] != db[k]}
    assert differ == {"preset", "data_path", "tokenizer_path"}, differ
    # The rows named cpu ran the preset before the table joined it (their logs say bigram_hash 0).
    assert golf["variants"]["cpu"] == shapes["variants"]["cpu"] == {
        "PRESET": "cpu", "BIGRAM_HASH": "0", "PARALLEL_START": "3", "QUANT_EMBED_BITS": "7", "CLIP_K_EMBED": "14",
        "WARMDOWN_FRAC": "0.4",
    }  # fmt: skip


def test_prepare_shuffle_seed_exports_the_same_documents_in_a_seeded_order(tmp_path):
    """shuffle_seed: the inputs' documents are exported in a seeded random order (the same for the same seed), none
    lost or added; without it, the export reads the inputs themselves (file order)."""
    need_smoke_data()
    lines = shared_path("text", "fineweb_docs_200.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:20]), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("".join(lines[20:40]), encoding="utf-8")
    tokenizer = smoke_spec()["prepare"]["export"]["tokenizer"]

    def docs(seed: int | None, out: str) -> list[tuple[int, ...]]:
        export = {"inputs": [str(tmp_path / "*.jsonl")], "tokenizer": tokenizer, "val_docs": 1}
        if seed is not None:
            export["shuffle_seed"] = seed
        spec = ablate.load_spec(write_spec(tmp_path, smoke_spec(prepare={"export": export}), f"{out}.json"))
        ablate.prepare_data(spec, tmp_path / out)
        stream = ablate.tg.load_shard(tmp_path / out / "data" / "fineweb_train_000000.bin").tolist()
        starts = [i for i, t in enumerate(stream) if t == 1] + [len(stream)]
        return [tuple(stream[a:b]) for a, b in zip(starts, starts[1:])]

    plain, one, other = docs(None, "plain"), docs(7, "s7"), docs(8, "s8")
    assert len(plain) == len(one) == len(other) == 39  # 40 documents, the first exported as the val split
    assert one != plain and one != other and not (tmp_path / "plain" / "data" / ablate.SHUFFLED_DOCS).exists()
    inputs = sorted(str(p) for p in tmp_path.glob("*.jsonl"))
    assert ablate.shuffle_documents(inputs, 7, tmp_path / "again.jsonl") == 40
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "s7" / "data" / ablate.SHUFFLED_DOCS).read_bytes()
    # the same documents, but for the one each export takes as val
    assert len(set(one) & set(plain)) >= 38 and len(set(one) | set(plain)) <= 40
    stamp = json.loads((tmp_path / "s7" / "data" / "prepared.json").read_text())
    assert stamp["shuffled_docs"] == 40 and stamp["prepare"]["export"]["shuffle_seed"] == 7
    bad = {"export": {**smoke_spec()["prepare"]["export"], "shuffle_seed": "x"}}
    with pytest.raises(toolkit.UserError, match="shuffle_seed must be a positive integer"):
        ablate.load_spec(write_spec(tmp_path, smoke_spec(prepare=bad)))
