"""records/: our logs (read through their run_summary line), the rules, t-test p-values, and the record folder round
trip. Every log here was written by the real train_gpt.py: the three seeds of the committed CPU smoke record, edited
where a test needs a broken one."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "records"))
import records as R  # noqa: E402
import toolkit  # noqa: E402

SMOKE = ROOT / "records" / "track_non_record_16mb" / "2026-12-01_tiny_cpu_smoke"
LOGS = [SMOKE / f"train_seed{s}.log" for s in (1, 2, 3)]
CODE = (SMOKE / "train_gpt.py").read_bytes()
META = dict(
    author="Test Author",
    github_id="tester",
    name="Tiny smoke",
    blurb="A test.",
    date="2026-05-01",
    track="track_non_record_16mb",
)


def edit(src: Path, dest: Path, text=None, **summary) -> Path:
    """A copy of a real log, its run_summary fields replaced (`summary`) or its text rewritten (`text(str)`)."""
    body = src.read_text()
    if summary:
        line = next(ln for ln in body.splitlines() if ln.startswith("run_summary "))
        s = json.loads(line[len("run_summary ") :])
        s.update(summary)
        body = body.replace(line, "run_summary " + json.dumps(s, sort_keys=True, separators=(",", ":")))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text(body) if text else body)
    return dest


def copies(tmp_path: Path, sub: str = "logs", **summary) -> list[Path]:
    return [edit(p, tmp_path / sub / p.name, **summary) for p in LOGS]


def build(tmp_path: Path, logs=None, code: bytes = CODE, **kw) -> Path:
    code_path = tmp_path / "train_gpt.py"
    tmp_path.mkdir(parents=True, exist_ok=True)
    code_path.write_bytes(code)
    return R.build(logs or copies(tmp_path), code_path, META, "tiny_smoke", out_root=tmp_path / "records", **kw)[0]


def errors(findings) -> list[str]:
    return [f.what for f in findings if f.level == "error"]


# ---------------------------------------------------------------------------------------------------- t distribution


def _t_tail_by_quadrature(t: float, df: float, n: int = 20_000) -> float:
    """P(T > t) by Simpson's rule on the density, the tail mapped onto [0, 1) by x = t + u / (1 - u)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)
    f = lambda u: pdf(t + u / (1 - u)) / (1 - u) ** 2 if u < 1 else 0.0
    h = 1.0 / n
    return h / 3 * sum((1 if k in (0, n) else 4 if k % 2 else 2) * f(k * h) for k in range(n + 1))


def test_t_cdf_textbook_values():
    assert 1 - R.t_cdf(2.0, 10) == pytest.approx(0.036694017, abs=1e-8)
    assert 1 - R.t_cdf(3.0, 2) == pytest.approx(0.047732983, abs=1e-8)
    assert 1 - R.t_cdf(1.0, 1) == pytest.approx(0.25, abs=1e-12)  # Cauchy: arctan
    assert 1 - R.t_cdf(6.965, 2) == pytest.approx(0.01, abs=1e-4)  # the t-table's 99% point for df = 2
    assert 1 - R.t_cdf(1.959963984540054, 1e7) == pytest.approx(0.025, abs=1e-6)  # large df -> normal
    assert R.t_cdf(-2.0, 10) == pytest.approx(1 - R.t_cdf(2.0, 10), abs=1e-15)
    assert R.t_cdf(0.0, 5) == 0.5 and R.t_cdf(math.inf, 3) == 1.0 and R.t_cdf(-math.inf, 3) == 0.0


@pytest.mark.parametrize("t,df", [(0.3, 2.5), (1.7, 3.5), (2.5, 7.0), (4.0, 29.0)])
def test_t_cdf_matches_quadrature_of_the_density(t, df):
    assert 1 - R.t_cdf(t, df) == pytest.approx(_t_tail_by_quadrature(t, df), abs=1e-9)


def test_betainc_against_closed_forms():
    for x in (0.01, 0.3, 0.7, 0.99):
        assert R.betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
        for a, b in [(2, 3), (5, 1), (7, 4)]:  # integer a, b: I_x(a, b) = P(Binomial(a + b - 1, x) >= a)
            n = a + b - 1
            ref = sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))
            assert R.betainc(a, b, x) == pytest.approx(ref, abs=1e-13)
        assert R.betainc(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)
        assert R.betainc(3, 2, x) == pytest.approx(1 - R.betainc(2, 3, 1 - x), abs=1e-14)
    with pytest.raises(ValueError):
        R.betainc(0, 1, 0.5)


def test_one_sample_and_welch_statistics():
    xs = [2.0701, 2.0712, 2.0695]
    t = R.one_sample_less(xs, 2.08)
    m, s = sum(xs) / 3, math.sqrt(sum((x - sum(xs) / 3) ** 2 for x in xs) / 2)
    assert t.t == pytest.approx((m - 2.08) / (s / math.sqrt(3)))
    assert t.df == 2 and t.p_value == pytest.approx(R.t_cdf(t.t, 2))
    w = R.welch_less([1, 2, 3], [4, 5, 6, 7])  # t = -3.5 / sqrt(1/3 + 5/12), df = 0.5625 / (1/18 + 25/432)
    assert w.t == pytest.approx(-3.5 / math.sqrt(0.75)) and isinstance(w, R.TTest)
    assert w.df == pytest.approx(0.5625 / (1 / 18 + 25 / 432))
    assert w.p_value == pytest.approx(_t_tail_by_quadrature(-w.t, w.df), abs=1e-8)
    with pytest.raises(R.RecordError, match="at least 2 seeds"):
        R.one_sample_less([2.07], 2.08)


# ----------------------------------------------------------------------------------------------- our logs: parsing


def test_parse_reads_the_run_summary_of_a_real_log():
    run = R.parse_log(LOGS[0])
    line = next(ln for ln in LOGS[0].read_text().splitlines() if ln.startswith("run_summary "))
    s = json.loads(line[len("run_summary ") :])
    assert run.fmt == "toolkit" and run.source == CODE and run.seed == s["seed"] == 1
    assert run.final.name == s["final"] == s["scores"][-1]["name"] and run.final.val_bpb == s["scores"][-1]["val_bpb"]
    assert [x.name for x in run.scores] == [x["name"] for x in s["scores"]]
    assert (run.steps, run.train_time_ms, run.stop_reason) == (s["train_steps"], s["train_time_ms"], s["stop_reason"])
    assert (run.code_bytes, run.model_bytes, run.total_bytes) == (len(CODE), s["model_bytes"], s["total_bytes"])
    assert run.code_bytes_packed == len(R.pack(CODE)) == s["code_bytes_packed"]
    assert run.eval_time_ms == s["eval_time_total_ms"] and run.gptq_calibration_ms == s["gptq_calibration_ms"]
    assert run.tokens_per_byte == s["val_targets"] / s["val_bytes"] and run.config == s["config"]
    assert run.header["run_id"] == "tiny_s1" and run.header["torch"].startswith("2.") and "device" in run.header
    assert R.summary(run)["final"]["name"] == run.final.name


def test_broken_logs_are_refused_in_one_line(tmp_path):
    text = LOGS[0].read_text()
    cases = {
        "cut": (lambda t: t[: t.rindex("run_summary ")], "cut short"),
        "nosummary": (lambda t: re.sub(r"^run_summary .*\n", "", t, flags=re.M), "no run_summary line"),
        "badjson": (lambda t: t.replace('run_summary {"', 'run_summary {"x', 1), "malformed run_summary"),
        "src": (lambda t: t.replace("import", "imp0rt", 1), "sha256"),
        "twice": (lambda t: t + t, "2 runs"),
        "half_source": (lambda t: t[: len(t) // 20], "sha256|end of source"),
        "version": (lambda t: t.replace('"version":1', '"version":2'), "v2"),
    }
    for name, (change, msg) in cases.items():
        p = edit(LOGS[0], tmp_path / f"{name}.txt", text=change)
        with pytest.raises(R.RecordError, match=msg) as e:
            R.parse_log(p)
        assert "\n" not in str(e.value) and p.name in str(e.value) and isinstance(e.value, toolkit.UserError)
    with pytest.raises(R.RecordError, match="cannot read"):
        R.parse_log(tmp_path / "missing.txt")
    assert text == LOGS[0].read_text()


# ---------------------------------------------------------------------------------------------------------- rules


def test_real_logs_pass_and_each_defect_is_caught(tmp_path):
    runs = [R.parse_log(p) for p in LOGS]
    assert errors(R.check_runs(runs, CODE)) == []
    one = lambda **kw: [R.parse_log(edit(LOGS[0], tmp_path / f"e{len(kw)}_{'_'.join(kw)}.txt", **kw))]
    big = 16_000_001 - len(CODE)
    cases = [
        (one(model_bytes=big, total_bytes=big + len(CODE)), r"> 16,000,000"),
        (one(total_bytes=runs[0].total_bytes + 1), "total_bytes != code_bytes \\+ model_bytes"),
        (one(code_bytes_packed=123), "code_bytes_packed != the packed source"),
        (one(train_time_ms=600_500.0, gptq_calibration_ms=None), r"training 600\.500 s > 600 s"),
        (one(train_time_ms=599_000.0, gptq_calibration_ms=1_500.0), r"\+ GPTQ calibration 1\.500 s"),
        (one(eval_time_total_ms=600_001.0), r"scoring 600\.001 s"),
        ([runs[0], R.parse_log(edit(LOGS[1], tmp_path / "s1_again.txt", seed=1))], "seed 1 repeated"),
        ([runs[0], R.parse_log(edit(LOGS[1], tmp_path / "v.txt", val_bytes=20_000))], "different val sets"),
    ]
    for found, msg in cases:
        errs = errors(R.check_runs(found, CODE))
        assert any(re.search(msg, e) for e in errs), (msg, errs)
    assert any("differs from the code" in e for e in errors(R.check_runs(runs, CODE + b"# edited\n")))
    assert errors(R.check_runs(one(train_time_ms=900_000.0), CODE, time_limit_s=0)) == []


def test_one_step_past_the_cap_is_a_note_not_a_violation(tmp_path):
    """The training loop reads the clock after each step: a wallclock-capped run ends up to a step or two late."""
    step = R.parse_log(LOGS[0]).step_avg_ms
    late = R.parse_log(edit(LOGS[0], tmp_path / "late.txt", stop_reason="wallclock_cap", train_time_ms=600_000 + step))
    found = R.check_runs([late], CODE)
    assert errors(found) == [] and any(f.level == "note" and "within two steps" in f.what for f in found)
    capped = R.parse_log(edit(LOGS[0], tmp_path / "l2.txt", stop_reason="iterations", train_time_ms=600_000 + step))
    assert any("training" in e for e in errors(R.check_runs([capped], CODE)))  # not stopped by the clock: no slack


def test_an_edited_val_bpb_is_caught_by_build_and_check(tmp_path):
    """val_bpb = val_loss * targets / (ln 2 * bytes) on every score: a val_bpb edited without its val_loss fails."""
    run = R.parse_log(LOGS[1])
    for s in run.scores:
        assert s.bpb_mismatch(run.val_targets, run.val_bytes) is None
        assert s.val_bpb == pytest.approx(s.val_loss * run.val_targets / (math.log(2) * run.val_bytes), rel=1e-12)
    line = next(ln for ln in LOGS[1].read_text().splitlines() if ln.startswith("run_summary "))
    scores = json.loads(line[len("run_summary ") :])["scores"]
    real = f"val_bpb:{scores[-1]['val_bpb']:.8f}"
    scores[-1]["val_bpb"] -= 0.01  # a better score typed over the real one, in run_summary and in the printed line
    forge = lambda dest: edit(
        LOGS[1], dest, scores=scores, text=lambda t: t.replace(real, f"val_bpb:{scores[-1]['val_bpb']:.8f}")
    )
    logs = copies(tmp_path)
    forge(logs[1])
    msg = r"`final_int6_sliding_window` val_bpb .* != val_loss .* log edited\?"
    assert any(re.search(msg, e) for e in errors(R.check_runs([R.parse_log(p) for p in logs], CODE)))
    with pytest.raises(R.RecordError, match=msg):
        build(tmp_path, logs)
    dest = build(tmp_path / "ok")
    forge(dest / "train_seed2.log")
    assert any(re.search(msg, e) for e in errors(R.check_folder(dest)))
    assert R.main(["check", str(dest)]) == 1
    edit(LOGS[1], dest / "train_seed2.log", scores=scores)  # run_summary edited, the printed line left as it was
    assert any("printed final_int6_sliding_window_exact line disagrees" in e for e in errors(R.check_folder(dest)))
    targets, nbytes = 1000, 2000  # the tolerance follows the printed precision (decimals of val_bpb and val_loss)
    exact = 2.5 * targets / (math.log(2) * nbytes)
    assert R.Score("x_exact", 2.5, 1.1, None, 8, 8).bpb_mismatch(targets, nbytes) is not None
    assert R.Score("x_exact", 2.5, round(exact, 8), None, 8, 8).bpb_mismatch(targets, nbytes) is None
    assert R.Score("x", 2.5, round(exact + 4e-5, 4), None, 4, 4).bpb_mismatch(targets, nbytes) is None
    assert R.Score("x", 2.5, round(exact + 4e-4, 4), None, 4, 4).bpb_mismatch(targets, nbytes) is not None


def test_prev_best_units_and_conversion():
    runs = [R.parse_log(p) for p in LOGS]
    ours = sum(r.final.val_loss for r in runs) / 3
    nats_per_bpb = math.log(2) / runs[0].tokens_per_byte
    assert R.resolve_prev_best(runs, ours + 0.1, None) == ours + 0.1
    assert R.resolve_prev_best(runs, None, (ours + 0.1) / nats_per_bpb) == pytest.approx(ours + 0.1)
    with pytest.raises(R.RecordError, match="looks like the other unit.*--prev-best-bpb"):
        R.resolve_prev_best(runs, ours / nats_per_bpb, None)  # a bpb number given as nats
    with pytest.raises(R.RecordError, match="not both"):
        R.resolve_prev_best(runs, 6.3, 3.5)
    v = R.stats_report(runs, ours + 0.1)["vs_previous_best"]
    assert v["target_loss"] == pytest.approx(ours + 0.095) and v["margin_bpb"] == pytest.approx(0.005 / nats_per_bpb)
    assert v["significant"] and v["p_value"] < 0.01
    assert not R.stats_report(runs, ours)["vs_previous_best"]["significant"]
    w = R.stats_report(runs, against=runs)["vs_against"]
    assert w["t"] == pytest.approx(0.0) and not w["significant"]


# -------------------------------------------------------------------------------------------- build and check folder


def test_build_writes_a_folder_that_check_accepts(tmp_path):
    dest = build(tmp_path, prev_best_loss=6.4)
    assert dest == tmp_path / "records" / "track_non_record_16mb" / "2026-05-01_tiny_smoke"
    assert sorted(p.name for p in dest.iterdir()) == [
        "README.md",
        "requirements.txt",
        "submission.json",
        "train_gpt.py",
        "train_seed1.log",
        "train_seed2.log",
        "train_seed3.log",
    ]
    assert (dest / "train_gpt.py").read_bytes() == CODE and (dest / "train_seed2.log").read_bytes() == LOGS[
        1
    ].read_bytes()
    sub = json.loads((dest / "submission.json").read_text())
    runs = [R.parse_log(p) for p in LOGS]
    assert sub["val_bpb"] == pytest.approx(sum(r.final.val_bpb for r in runs) / 3, abs=1e-8)
    assert sub["seeds"] == [1, 2, 3] and sub["bytes_code"] == len(CODE) and sub["code_policy"] == "raw"
    assert sub["bytes_total"] == max(r.total_bytes for r in runs) and sub["vs_previous_best"]["significant"]
    assert sub["hardware"].startswith("1x cpu") and sub["compliance"]["code_matches_logs"]
    readme = (dest / "README.md").read_text()
    assert "CPU-sized configuration" in readme and "preset:tiny" in readme and "artifact_path" not in readme
    findings = R.check_folder(dest)
    assert errors(findings) == [] and any("TODO(author)" in f.what for f in findings)


def test_build_refuses_violations_and_writes_nothing(tmp_path):
    cases = [
        ([LOGS[0], edit(LOGS[1], tmp_path / "a.txt", seed=1)], CODE, "repeated"),
        ([LOGS[0], edit(LOGS[1], tmp_path / "b.txt", train_time_ms=610_000.0)], CODE, "training 610"),
        (LOGS, CODE + b"\n", "differs from the code"),
    ]
    for logs, code, msg in cases:
        with pytest.raises(R.RecordError, match=msg):
            build(tmp_path, logs, code, time_limit_s=600)
    public = tmp_path / "train.log"
    shutil.copyfile(ROOT / "records" / "README.md", public)  # any log without our source block
    with pytest.raises(R.RecordError):
        build(tmp_path, [public])
    assert not (tmp_path / "records").exists()
    build(tmp_path)
    with pytest.raises(R.RecordError, match="exists"):
        build(tmp_path)
    build(tmp_path, force=True)
    assert [p.name for p in (tmp_path / "records" / "track_non_record_16mb").iterdir()] == ["2026-05-01_tiny_smoke"]


def test_check_catches_tampering(tmp_path):
    dest = build(tmp_path)
    sub_path, code_path, log_path = dest / "submission.json", dest / "train_gpt.py", dest / "train_seed2.log"
    original = sub_path.read_text()
    sub = json.loads(original)
    sub["val_bpb"] = round(sub["val_bpb"] - 0.001, 8)
    sub["seed_results"]["1"]["artifact_bytes"] -= 1
    sub_path.write_text(json.dumps(sub))
    errs = errors(R.check_folder(dest))
    assert any("val_bpb" in e for e in errs) and any("seed 1 artifact_bytes" in e for e in errs)
    sub_path.write_text(json.dumps({**json.loads(original), "source_sha256": "0" * 64, "code_policy": "packed"}))
    errs = errors(R.check_folder(dest))
    assert any("source_sha256 '000" in e for e in errs) and any("code_policy 'packed'" in e for e in errs)
    best = {**json.loads(original), "val_bpb": min(r["val_bpb"] for r in sub["seed_results"].values())}
    sub_path.write_text(json.dumps(best))  # a public convention (quote the best seed) is an error in our folders
    assert any("quotes the best seed" in e for e in errors(R.check_folder(dest)))
    sub_path.write_text(original)
    code_path.write_bytes(CODE + b"# edit\n")
    assert any("differs from the code" in e for e in errors(R.check_folder(dest)))
    code_path.write_bytes(CODE)
    log_path.write_bytes(LOGS[1].read_bytes()[:-200])
    assert any("cut short" in e for e in errors(R.check_folder(dest)))
    log_path.write_bytes(LOGS[1].read_bytes())
    assert errors(R.check_folder(dest)) == []


def test_packed_policy_uses_train_gpts_own_packer(tmp_path):
    import train_gpt

    packed = R.pack(CODE)
    assert packed == train_gpt.pack_source(CODE.decode()).encode() and len(packed) < len(CODE) / 2
    assert R.program(packed) == R.program(CODE) and R.program(R.pack(CODE + b"x = 1\n")) != R.program(CODE)
    logs = copies(tmp_path)
    for p in logs:  # the same runs, counted under the packed policy
        edit(p, p, code_policy="packed", code_bytes=len(packed), total_bytes=R.parse_log(p).model_bytes + len(packed))
    dest = build(tmp_path, logs)
    assert (dest / R.PACKED_NAME).read_bytes() == packed
    assert json.loads((dest / "submission.json").read_text())["bytes_code"] == len(packed)
    assert errors(R.check_folder(dest)) == []
    (dest / R.PACKED_NAME).write_bytes(b'import lzma,base64\nexec(lzma.decompress(base64.b85decode("00")))\n')
    assert any("does not hold the program" in e for e in errors(R.check_folder(dest)))


def test_cli_exit_codes_and_one_line_errors(tmp_path, capsys):
    assert toolkit.run_cli(R.main, ["stats", *map(str, LOGS)]) == 0
    assert "val_bpb" in capsys.readouterr().out
    runs = [R.parse_log(p) for p in LOGS]
    as_bpb = sum(r.final.val_bpb for r in runs) / 3
    assert toolkit.run_cli(R.main, ["stats", *map(str, LOGS), "--prev-best-loss", f"{as_bpb:.4f}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--prev-best-bpb" in err
    assert toolkit.run_cli(R.main, ["parse", str(LOGS[0])]) == 0
    assert json.loads(capsys.readouterr().out)[0]["seed"] == 1
    code = tmp_path / "train_gpt.py"
    code.write_bytes(CODE)
    args = [
        "build",
        *map(str, LOGS),
        "--track",
        "track_non_record_16mb",
        "--name",
        "cli",
        "--code",
        str(code),
        "--author",
        "A",
        "--github-id",
        "a",
        "--out",
        str(tmp_path / "rec"),
        "--date",
        "2026-05-02",
    ]
    assert toolkit.run_cli(R.main, args) == 0
    dest = tmp_path / "rec" / "track_non_record_16mb" / "2026-05-02_cli"
    assert toolkit.run_cli(R.main, ["check", str(dest)]) == 0
    capsys.readouterr()
    assert toolkit.run_cli(R.main, args) == 2 and "exists" in capsys.readouterr().err
    assert toolkit.run_cli(R.main, ["check", str(tmp_path / "nowhere")]) == 2


def test_help_runs_as_a_script():
    out = subprocess.run(
        [sys.executable, str(ROOT / "records" / "records.py"), "build", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "--prev-best-bpb" in out.stdout


def test_every_argument_has_help(capsys):
    subparsers = next(a for a in R.make_parser()._actions if isinstance(a, R.argparse._SubParsersAction))
    assert sorted(subparsers.choices) == ["build", "check", "parse", "stats"]
    for name, parser in subparsers.choices.items():
        assert parser.description, name
        assert [a.dest for a in parser._actions if not a.help] == [], name
        with pytest.raises(SystemExit) as e:
            R.main([name, "--help"])
        assert e.value.code == 0 and parser.description.split()[0] in capsys.readouterr().out


COMMITTED = sorted(ROOT.glob("records/track_*/*/"))


@pytest.mark.skipif(not COMMITTED, reason="no record folder committed under records/track_*/")
@pytest.mark.parametrize("folder", COMMITTED, ids=[f"{f.parent.name}/{f.name}" for f in COMMITTED])
def test_committed_record_folders_pass_check(folder):
    """Regression guard: every record folder in the repository passes `check` (notes and warnings allowed)."""
    findings = R.check_folder(folder)
    assert errors(findings) == [] and any(f.level == "ok" for f in findings)
    assert R.main(["check", str(folder)]) == 0


@pytest.mark.slow
def test_real_tiny_run_log(tmp_path):
    """A fresh run of train_gpt.py (tiny preset, the sample data) writes a log that parses and passes the rules."""
    data = ROOT / "data" / "sample"
    if not (data / "tokenizer.model").is_file():
        pytest.skip("data/sample absent: python data/sample.py --docs ../shared/data/text/c4_docs_1000.jsonl")
    script = tmp_path / "train_gpt.py"  # a private copy: the shared checkout may be edited while this runs
    script.write_bytes((ROOT / "train_gpt.py").read_bytes())
    env = {
        **os.environ,
        "PRESET": "tiny",
        "SEED": "5",
        "RUN_ID": "tiny_real",
        "ITERATIONS": "2",
        "VAL_MAX_TOKENS": "1024",
        "DATA_PATH": str(data),
        "TOKENIZER_PATH": str(data / "tokenizer.model"),
        "LOG_DIR": str(tmp_path / "logs"),
        "ARTIFACT_PATH": str(tmp_path / "a.pgz"),
    }
    subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, check=True, timeout=900, capture_output=True)
    run = R.parse_log(tmp_path / "logs" / "tiny_real.txt")
    assert run.seed == 5 and run.source == script.read_bytes() and run.steps == 2 and run.stop_reason == "iterations"
    assert run.total_bytes < R.BYTE_LIMIT and errors(R.check_runs([run], script.read_bytes())) == []
