"""records/records.py: log parsing, compliance checks, t-test p-values, and the record folder round trip."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "records"))
import records as R  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SOURCE = (ROOT / "train_gpt.py").read_bytes()
SP1024_TOKENS, SP1024_BYTES = 130_048, 312_934  # MANIFEST.md: the val prefix at seq 1024


def render_log(seed: int = 1337, val_loss: float = 2.07269931, source: bytes = SOURCE, *, policy: str = "raw",
               model_bytes: int = 15_000_000, train_ms: int = 598_000, stopped: bool = True,
               eval_ms: tuple[int, ...] = (1_400, 80_000), eval_total: bool = True, gptq_ms: int | None = 1_500,
               targets: int = SP1024_TOKENS, nbytes: int = SP1024_BYTES, complete: bool = True,
               steps: int = 4_000) -> str:
    """A log in exactly the format our train_gpt.py writes (train_gpt.py's own source embedded)."""
    bpb = lambda loss: loss / math.log(2) * targets / nbytes
    text = source.decode()
    lines = [f"==== train_gpt.py source sha256:{hashlib.sha256(source).hexdigest()} bytes:{len(source)} ====",
             text[:-1] if text.endswith("\n") else text, "==== end of source ====",
             f"run_id:run_{seed}", "python:3.11.7 torch:2.13.0 cuda:none", "device:cpu (2 threads)",
             "world_size:1 grad_accum_steps:8", "git_commit:unknown", "preset:tiny", f"seed:{seed}",
             "train_seq_len:1024", "max_wallclock_seconds:600.0", "vocab_size:1024", f"code_policy:{policy}",
             "device:auto", "model_params:181725", "warmup_step:1/2",
             "quant_role:attn tensors:16 params:49152 bits:6 k:13.0 method:gptq rel_mse:2.151e-02"]
    for s in range(0, steps, steps // 4):
        lines.append(f"step:{s}/20000 train_loss:{val_loss + 1:.4f} train_time:{train_ms * s // steps}ms "
                     f"step_avg:{train_ms / max(s, 1):.2f}ms tok_s:4096")
    lines.append(f"step:{steps}/20000 val_loss:{val_loss - 0.01:.4f} val_bpb:{bpb(val_loss - 0.01):.4f} "
                 f"train_time:{train_ms}ms step_avg:{train_ms / steps:.2f}ms")
    if stopped:
        lines.append(f"stopping_early: wallclock_cap train_time:{train_ms}ms step:{steps}/20000")
    lines += [f"pre_ema val_loss:{val_loss:.4f} val_bpb:{bpb(val_loss):.4f}",
              f"final_float val_loss:{val_loss - 0.02:.4f} val_bpb:{bpb(val_loss - 0.02):.4f} eval_time:999999ms",
              f"final_float_exact val_loss:{val_loss - 0.02:.8f} val_bpb:{bpb(val_loss - 0.02):.8f}"]
    if gptq_ms is not None:
        lines.append(f"gptq_calibration_time:{gptq_ms}ms")
    packed = 20_000
    code = len(source) if policy == "raw" else packed
    total = code + model_bytes
    lines += ["artifact_path:artifacts/x.pgz",
              f"code_bytes:{code} model_bytes:{model_bytes} total_bytes:{total} limit:16000000 "
              f"under_limit:{int(total <= R.BYTE_LIMIT)} code_policy:{policy}",
              f"code_bytes_raw:{len(source)} code_bytes_packed:{packed}"]
    names = ["final_int6_roundtrip", "final_int6_sliding_window", "final_int6_ttt"][: len(eval_ms)]
    for i, (name, ms) in enumerate(zip(names, eval_ms)):
        loss = val_loss + 0.01 * (len(eval_ms) - 1 - i)  # the last line is the best and the submitted one
        lines += [f"{name} val_loss:{loss:.4f} val_bpb:{bpb(loss):.4f} eval_time:{ms}ms",
                  f"{name}_exact val_loss:{loss:.8f} val_bpb:{bpb(loss):.8f}"]
    lines.append(f"val_targets:{targets} val_bytes:{nbytes}")
    if eval_total:
        lines.append(f"eval_time_total:{sum(eval_ms)}ms")
    lines.append(f"train_steps:{steps} train_time_total:{train_ms}ms")
    if complete:
        lines.append("run_complete")
    return "\n".join(lines) + "\n"


def write_logs(tmp_path: Path, specs: list[dict], sub: str = "logs") -> list[Path]:
    paths = []
    for i, spec in enumerate(specs):
        p = tmp_path / sub / f"run{i}.txt"
        p.parent.mkdir(exist_ok=True)
        p.write_text(render_log(**spec))
        paths.append(p)
    return paths


THREE = [dict(seed=1, val_loss=2.0701), dict(seed=2, val_loss=2.0712), dict(seed=3, val_loss=2.0695)]
META = dict(author="Test Author", github_id="tester", name="Tiny smoke", blurb="A test.", date="2026-05-01",
            track="track_non_record_16mb")


def build(tmp_path: Path, specs=THREE, code: bytes = SOURCE, **kw) -> tuple[Path, list[Path]]:
    logs = write_logs(tmp_path, specs)
    code_path = tmp_path / "train_gpt.py"
    code_path.write_bytes(code)
    dest, _ = R.build(logs, code_path, META, "tiny_smoke", out_root=tmp_path / "records", **kw)
    return dest, logs


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
        assert R.betainc(2, 1, x) == pytest.approx(x * x, abs=1e-14)
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
    # Welch: a = 1,2,3 ; b = 4,5,6,7 -> t = -3.5 / sqrt(1/3 + 5/12), df = 0.5625 / (1/18 + 25/432)
    w = R.welch_less([1, 2, 3], [4, 5, 6, 7])
    assert w.t == pytest.approx(-3.5 / math.sqrt(0.75))
    assert w.df == pytest.approx(0.5625 / (1 / 18 + 25 / 432))
    assert w.p_value == pytest.approx(_t_tail_by_quadrature(-w.t, w.df), abs=1e-8)
    with pytest.raises(R.RecordError, match="at least 2 seeds"):
        R.one_sample_less([2.07], 2.08)


# ---------------------------------------------------------------------------------------------------------- parsing


def test_parse_toolkit_log(tmp_path):
    (p,) = write_logs(tmp_path, [dict(seed=7, eval_ms=(1_400, 80_000, 300_000))])
    run = R.parse_log(p)
    assert run.fmt == "toolkit" and run.source == SOURCE and run.seed == 7 and run.complete
    assert run.score.name == "final_int6_ttt_exact" and run.score.val_loss == pytest.approx(2.07269931)
    assert run.train_time_ms == 598_000 and run.stopped_early and run.steps == 4_000
    assert run.eval_time_ms == 381_400 and run.gptq_calibration_ms == 1_500
    assert (run.code_bytes, run.model_bytes, run.total_bytes) == (len(SOURCE), 15_000_000, 15_000_000 + len(SOURCE))
    assert run.tokens_per_byte == SP1024_TOKENS / SP1024_BYTES
    assert run.header == {"run_id": "run_7", "python": "3.11.7", "torch": "2.13.0", "cuda": "none",
                          "device": "cpu (2 threads)", "world_size": "1", "grad_accum_steps": "8",
                          "git_commit": "unknown"}
    assert run.config == {"preset": "tiny", "seed": "7", "train_seq_len": "1024", "max_wallclock_seconds": "600.0",
                          "vocab_size": "1024", "code_policy": "raw", "device": "auto"}
    assert run.facts["model_params"] == "181725" and run.facts["warmup_step"] == "1/2"
    assert run.facts["code_bytes_raw"] == str(len(SOURCE)) and run.facts["quant_role"] == "attn"


def test_config_block_stops_at_model_params(tmp_path):
    """The README's configuration is the hyperparameter block only, never the lines the run logs after it."""
    dest, _ = build(tmp_path)
    readme = (dest / "README.md").read_text()
    block = readme.split("## Configuration (resolved, from the first log)\n\n```\n")[1].split("\n```")[0]
    assert block.split() == ["preset:tiny", "train_seq_len:1024", "max_wallclock_seconds:600.0", "vocab_size:1024",
                             "code_policy:raw", "device:auto"]
    log = render_log(seed=4).replace("preset:tiny\n", "data_path:/data/with space\npreset:tiny\n")
    (tmp_path / "space.txt").write_text(log)
    assert R.parse_log(tmp_path / "space.txt").config["data_path"] == "/data/with space"  # value kept verbatim
    (tmp_path / "nocfg.txt").write_text(re.sub(r"git_commit:unknown\n.*?(?=model_params)", "git_commit:x\n",
                                               render_log(seed=5), flags=re.S))
    run = R.parse_log(tmp_path / "nocfg.txt")
    assert run.config == {} and run.header["git_commit"] == "x" and run.seed is None


def test_parse_time_fallbacks(tmp_path):
    (p,) = write_logs(tmp_path, [dict(stopped=False, eval_total=False, train_ms=120_000)])
    run = R.parse_log(p)
    assert not run.stopped_early and run.train_time_ms == 120_000
    assert run.eval_time_ms == 81_400  # the artifact's final lines; final_float's 999999ms is not scoring


def test_truncated_and_broken_logs(tmp_path):
    good = render_log()
    cases = {
        "cut": (good[: good.index("final_int6_roundtrip ")], "cut short"),
        "noexact": (good.replace("_exact val_loss:2", " val_loss:2"), "no final_\\*_exact"),
        "src": (good.replace("import", "imp0rt", 1), "sha256"),
        "twice": (good + good, "2 runs"),
        "half_source": (good[: len(good) // 20], "sha256|end of source"),
    }
    for name, (text, msg) in cases.items():
        p = tmp_path / f"{name}.txt"
        p.write_text(text)
        with pytest.raises(R.RecordError, match=msg) as e:
            R.parse_log(p)
        assert "\n" not in str(e.value) and p.name in str(e.value)
    with pytest.raises(R.RecordError, match="cannot read"):
        R.parse_log(tmp_path / "missing.txt")
    for bad, msg in [("gptq_calibration_time:1500ms", "gptq_calibration_time:soon"),
                     ("val_targets:130048 val_bytes:312934", "val_targets:130048"),
                     ("train_steps:4000 train_time_total:598000ms", "train_steps:4000 train_time_total:12parsecs")]:
        p = tmp_path / "malformed.txt"
        p.write_text(good.replace(bad, msg))
        with pytest.raises(R.RecordError, match="malformed line") as e:
            R.parse_log(p)
        assert "\n" not in str(e.value) and msg in str(e.value)


PUBLIC_OLD = """model_params:17059912
world_size:8 grad_accum_steps:1
seed:1337
step:0/20000 val_loss:6.9370 val_bpb:4.0978 train_time:0ms step_avg:0.01ms
step:13700/20000 train_loss:2.0323 train_time:596577ms step_avg:43.55ms
step:13718/20000 val_loss:2.0606 val_bpb:1.2172 train_time:599038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:599038ms step:13718/20000
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
"""
PUBLIC_NEW = """seed: 42
0/20000 val_loss: 9.0047 val_bpb: 3.4860
500/20000 train_loss: 3.3964 train_time: 0.9m tok/s: 7669991
stopping_early: wallclock_cap train_time: 588029ms step: 5048/20000
pre-quantization post-ema val_loss:2.81209012 val_bpb:1.08864772 eval_time:6365ms
Total submission size quantized+brotli: 15,991,930 bytes
quantized val_loss:2.83742177 val_bpb:1.09845439 eval_time:9000ms
quantized_sliding_window val_loss:2.79443127 val_bpb:1.08181143 eval_time:100000ms
quantized_ttt val_loss:2.79180191 val_bpb:1.08079352 eval_time:366525ms
total_eval_time:453.8s
"""


def test_parse_public_formats(tmp_path):
    (tmp_path / "a.log").write_text(PUBLIC_OLD)
    (tmp_path / "train_seed42.log").write_text(PUBLIC_NEW.replace("seed: 42\n", ""))
    old, new = R.parse_log(tmp_path / "a.log"), R.parse_log(tmp_path / "train_seed42.log")
    assert old.fmt == "public" and old.seed == 1337 and old.score.val_bpb == 1.2243657
    assert old.config == {"world_size": "8", "grad_accum_steps": "1", "seed": "1337"} and not old.header
    assert old.facts == {"model_params": "17059912"}
    assert (old.code_bytes, old.model_bytes, old.total_bytes) == (47642, 15815847, 15863489)
    assert old.train_time_ms == 599_038 and old.eval_time_ms == 1401 and old.steps == 13718
    assert new.seed == 42 and new.score.name == "quantized_ttt" and new.score.val_loss == 2.79180191
    assert new.total_bytes == 15_991_930 and new.train_time_ms == 588_029 and new.eval_time_ms == 453_800
    prefix = ("Running Python 3.12.3\n| 0  NVIDIA H100 80GB HBM3  On | 00000000:18:00.0 Off |  0 |\n"
              "Hyperparameters:\n  adam_eps: 1e-08\n  seed: 42\nmodel_params:35944536\nwarmup_step: 1/20\n"
              "train_shards: 80\n")
    (tmp_path / "c.log").write_text(prefix + PUBLIC_NEW.replace("seed: 42\n", ""))
    newest = R.parse_log(tmp_path / "c.log")  # public fallback: key:value lines before the warm-up, model_params aside
    assert newest.config == {"adam_eps": "1e-08", "seed": "42"} and newest.seed == 42
    assert newest.facts == {"model_params": "35944536", "warmup_step": "1/20", "train_shards": "80"}


# ------------------------------------------------------------------------------------------------ checks and stats


def _errors(findings):
    return [f.what for f in findings if f.level == "error"]


def test_checks_catch_each_defect(tmp_path):
    runs = lambda specs: [R.parse_log(p) for p in write_logs(tmp_path, specs)]
    assert _errors(R.check_runs(runs(THREE), SOURCE)) == []
    other = SOURCE + b"# changed\n"
    cases = [
        ([dict(seed=1), dict(seed=2, source=other)], SOURCE, "ran different code"),
        (THREE, other, "differs from the code"),
        ([dict(seed=1), dict(seed=1, val_loss=2.08)], SOURCE, "seed 1 repeated"),
        ([dict(seed=1, model_bytes=15_990_000)], SOURCE, r"> 16,000,000"),
        ([dict(seed=1, train_ms=600_500)], SOURCE, r"training 600\.500 s"),
        ([dict(seed=1, train_ms=597_000, gptq_ms=4_000)], SOURCE, "GPTQ calibration"),
        ([dict(seed=1, eval_ms=(200_000, 400_001))], SOURCE, "scoring 600.001 s"),
        ([dict(seed=1), dict(seed=2, nbytes=400_000)], SOURCE, "different val sets"),
    ]
    for specs, code, msg in cases:
        errs = _errors(R.check_runs(runs(specs), code))
        assert errs and all(re.search(msg, e) or "differs from the code" in e for e in errs), (msg, errs)
        assert any(re.search(msg, e) for e in errs), (msg, errs)
    assert _errors(R.check_runs(runs([dict(seed=1, train_ms=900_000)]), SOURCE, time_limit_s=0)) == []


def test_edited_size_line_is_caught(tmp_path):
    (p,) = write_logs(tmp_path, [dict(seed=1)])
    p.write_text(p.read_text().replace("total_bytes:", "total_bytes:1", 1))
    assert any("code_bytes + model_bytes" in e for e in _errors(R.check_runs([R.parse_log(p)], SOURCE)))


def test_prev_best_units_and_conversion(tmp_path):
    runs = [R.parse_log(p) for p in write_logs(tmp_path, THREE)]
    nats_per_bpb = math.log(2) * SP1024_BYTES / SP1024_TOKENS
    assert R.resolve_prev_best(runs, 2.0810, None) == 2.0810
    assert R.resolve_prev_best(runs, None, 1.2244) == pytest.approx(1.2244 * nats_per_bpb)
    with pytest.raises(R.RecordError, match="looks like the other unit.*--prev-best-bpb"):
        R.resolve_prev_best(runs, 1.2244, None)  # a bpb number given as nats
    with pytest.raises(R.RecordError, match="looks like the other unit.*--prev-best-loss"):
        R.resolve_prev_best(runs, None, 2.0810)
    with pytest.raises(R.RecordError, match="not both"):
        R.resolve_prev_best(runs, 2.08, 1.22)
    rep = R.stats_report(runs, R.resolve_prev_best(runs, 2.0810, None))
    v = rep["vs_previous_best"]
    assert v["target_loss"] == pytest.approx(2.0760)
    assert v["margin_bpb"] == pytest.approx(0.005 / math.log(2) * SP1024_TOKENS / SP1024_BYTES)  # ~0.0030 at sp1024
    assert v["margin_bpb"] == pytest.approx(0.0030, abs=1e-4)
    assert v["significant"] and v["p_value"] < 0.01
    assert not R.stats_report(runs, 2.0745)["vs_previous_best"]["significant"]  # target 2.0695: not beaten
    with pytest.raises(R.RecordError, match="at least 2 seeds"):
        R.stats_report(runs[:1], 2.0810)


def test_welch_against_second_set(tmp_path):
    ours = [R.parse_log(p) for p in write_logs(tmp_path, THREE, "a")]
    specs = [dict(seed=s, val_loss=v) for s, v in [(1, 2.0801), (2, 2.0790), (3, 2.0812)]]
    theirs = [R.parse_log(p) for p in write_logs(tmp_path, specs, "b")]
    v = R.stats_report(ours, against=theirs)["vs_against"]
    assert v["t"] < -10 and v["significant"] and v["n_against"] == 3
    assert v["p_value"] == pytest.approx(R.welch_less([r.score.val_loss for r in ours],
                                                      [r.score.val_loss for r in theirs]).p_value)


# -------------------------------------------------------------------------------------------- build and check folder


def test_build_writes_a_folder_that_check_accepts(tmp_path):
    dest, logs = build(tmp_path, prev_best_loss=2.0810)
    assert dest == tmp_path / "records" / "track_non_record_16mb" / "2026-05-01_tiny_smoke"
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["README.md", "requirements.txt", "submission.json", "train_gpt.py", "train_seed1.log",
                     "train_seed2.log", "train_seed3.log"]
    assert (dest / "train_gpt.py").read_bytes() == SOURCE
    assert (dest / "train_seed2.log").read_bytes() == logs[1].read_bytes()
    sub = json.loads((dest / "submission.json").read_text())
    losses = [s["val_loss"] for s in THREE]
    assert sub["val_loss"] == pytest.approx(sum(losses) / 3, abs=1e-8)
    assert sub["seeds"] == [1, 2, 3] and sub["seed_results"]["3"]["val_loss"] == 2.0695
    assert sub["bytes_total"] == 15_000_000 + len(SOURCE) and sub["bytes_code"] == len(SOURCE)
    assert sub["compliance"]["three_seeds"] and sub["compliance"]["code_matches_logs"]
    assert sub["vs_previous_best"]["significant"] and sub["author"] == "Test Author"
    assert sub["hardware"] == "1x cpu (2 threads)" and sub["pytorch_version"] == "2.13.0"
    assert "CPU-sized configuration" in (dest / "README.md").read_text()
    assert "| 1 | 4000 | 598.0 | 81.4 |" in (dest / "README.md").read_text()
    assert "numpy" in (dest / "requirements.txt").read_text()
    findings = R.check_folder(dest)
    assert _errors(findings) == [] and any("TODO(author)" in f.what for f in findings)


def test_build_refuses_violations_and_writes_nothing(tmp_path):
    for specs, msg in [([dict(seed=1), dict(seed=1, val_loss=2.08)], "repeated"),
                       ([dict(seed=1, model_bytes=15_999_000), dict(seed=2)], "16,000,000"),
                       ([dict(seed=1, train_ms=610_000), dict(seed=2)], "training 610")]:
        with pytest.raises(R.RecordError, match=msg):
            build(tmp_path, specs)
    with pytest.raises(R.RecordError, match="differs from the code"):
        build(tmp_path, code=SOURCE + b"\n")
    with pytest.raises(R.RecordError, match="at least 2 seeds"):
        build(tmp_path, [dict(seed=1)], prev_best_loss=2.09)
    assert not (tmp_path / "records" / "track_non_record_16mb" / "2026-05-01_tiny_smoke").exists()
    build(tmp_path)
    with pytest.raises(R.RecordError, match="exists"):
        build(tmp_path)
    build(tmp_path, force=True)
    assert [p.name for p in (tmp_path / "records" / "track_non_record_16mb").iterdir()] == ["2026-05-01_tiny_smoke"]


def test_build_needs_a_seed_and_keeps_seed_zero(tmp_path):
    logs = write_logs(tmp_path, [dict(seed=0), dict(seed=2)])
    logs[1].write_text(logs[1].read_text().replace("seed:2\n", ""))
    code = tmp_path / "train_gpt.py"
    code.write_bytes(SOURCE)
    with pytest.raises(R.RecordError, match="run1.txt: no seed line"):
        R.build(logs, code, META, "x", out_root=tmp_path / "records")
    dest, _ = build(tmp_path, [dict(seed=0), dict(seed=2)])
    assert json.loads((dest / "submission.json").read_text())["seeds"] == [0, 2]
    assert _errors(R.check_folder(dest)) == []


def test_check_catches_tampering(tmp_path):
    dest, _ = build(tmp_path)
    sub_path, code_path, log_path = dest / "submission.json", dest / "train_gpt.py", dest / "train_seed2.log"
    original = sub_path.read_text(), code_path.read_bytes(), log_path.read_bytes()
    sub = json.loads(original[0])
    sub["val_bpb"] = round(sub["val_bpb"] - 0.001, 8)
    sub["seed_results"]["1"]["artifact_bytes"] -= 1
    sub_path.write_text(json.dumps(sub))
    errs = _errors(R.check_folder(dest))
    assert any("val_bpb" in e for e in errs) and any("seed 1 artifact_bytes" in e for e in errs)
    sub_path.write_text(json.dumps({**json.loads(original[0]), "source_sha256": "0" * 64, "code_policy": "packed"}))
    errs = _errors(R.check_folder(dest))
    assert any("source_sha256 000000000000" in e for e in errs) and any("code_policy 'packed'" in e for e in errs)
    sub_path.write_text(original[0])
    code_path.write_bytes(original[1] + b"# edit\n")
    assert any("differs from the code" in e for e in _errors(R.check_folder(dest)))
    code_path.write_bytes(original[1])
    log_path.write_bytes(original[2][: len(original[2]) - 200])
    assert any("cut short" in e for e in _errors(R.check_folder(dest)))
    log_path.write_bytes(original[2])
    assert _errors(R.check_folder(dest)) == []


def test_check_a_public_style_folder(tmp_path):
    folder = tmp_path / "track_10min_16mb" / "2026-03-17_Baseline"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text(PUBLIC_OLD)
    (folder / "README.md").write_text("# Baseline\n")
    (folder / "train_gpt.py").write_text("print('hi')\n")
    (folder / "submission.json").write_text(json.dumps(
        {"author": "x", "val_loss": 2.07269931, "val_bpb": 1.2243657, "bytes_total": 15863489, "bytes_code": 47642}))
    findings = R.check_folder(folder)
    assert _errors(findings) == []
    assert any(f.level == "unchecked" and "do not embed their source" in f.what for f in findings)
    (folder / "submission.json").write_text(json.dumps({"val_bpb": 1.21687994, "bytes_total": 15863068}))
    errs = _errors(R.check_folder(folder))
    assert len(errs) == 2 and "val_bpb = 1.21687994" in errs[0] and "bytes_total" in errs[1]


def test_packed_policy(tmp_path):
    (tmp_path / "train_gpt.py").write_bytes(SOURCE)
    packed = R.pack_with(tmp_path / "train_gpt.py")  # train_gpt.py's own pack_source, without importing torch
    assert packed.startswith(b"import lzma") and len(packed) < len(SOURCE) / 2
    assert R.packed_matches(packed, SOURCE) and not R.packed_matches(packed, SOURCE + b"x = 1\n")
    specs = [dict(seed=s, policy="packed", val_loss=v) for s, v in [(1, 2.07), (2, 2.071)]]
    dest, _ = build(tmp_path, specs)
    assert (dest / R.PACKED_NAME).read_bytes() == packed
    assert json.loads((dest / "submission.json").read_text())["bytes_code"] == len(packed)
    assert _errors(R.check_folder(dest)) == []
    (dest / R.PACKED_NAME).write_bytes(packed.replace(b"import lzma", b"import  lzma"))
    assert _errors(R.check_folder(dest)) == []  # same program
    (dest / R.PACKED_NAME).write_bytes(b'import lzma,base64\nexec(lzma.decompress(base64.b85decode("00")))\n')
    assert any("does not hold the program" in e for e in _errors(R.check_folder(dest)))


def test_cli_exit_codes_and_one_line_errors(tmp_path, capsys):
    logs = write_logs(tmp_path, THREE)
    assert R.main(["stats", *map(str, logs), "--prev-best-bpb", "1.2460"]) == 0
    out = capsys.readouterr().out
    assert "significant" in out and "val_bpb" in out
    assert R.main(["stats", *map(str, logs), "--prev-best-loss", "1.2460"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--prev-best-bpb" in err
    parsed = (R.main(["parse", str(logs[0])]), json.loads(capsys.readouterr().out)[0])
    assert parsed[0] == 0 and parsed[1]["seed"] == 1 and parsed[1]["config"]["preset"] == "tiny"
    code = tmp_path / "train_gpt.py"
    code.write_bytes(SOURCE)
    args = ["build", *map(str, logs), "--track", "track_non_record_16mb", "--name", "cli", "--code", str(code),
            "--author", "A", "--github-id", "a", "--out", str(tmp_path / "rec"), "--date", "2026-05-02"]
    assert R.main(args) == 0
    dest = tmp_path / "rec" / "track_non_record_16mb" / "2026-05-02_cli"
    assert R.main(["check", str(dest)]) == 0
    capsys.readouterr()
    assert R.main(args) == 2 and "exists" in capsys.readouterr().err
    assert R.main(["check", str(tmp_path / "nowhere")]) == 2


def test_help_runs_as_a_script():
    out = subprocess.run([sys.executable, str(ROOT / "records" / "records.py"), "build", "--help"],
                         capture_output=True, text=True, timeout=60)
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
    """Regression guard: every record folder in the repository passes `check` (warnings allowed)."""
    findings = R.check_folder(folder)
    assert _errors(findings) == [] and any(f.level == "ok" for f in findings)
    assert R.main(["check", str(folder)]) == 0
    for log in R.find_logs(folder):  # their configuration is the hyperparameter block and nothing after it
        run = R.parse_log(log)
        if run.fmt == "toolkit":
            after = {"model_params", "warmup_step", "quant_role", "tensors", "code_bytes_raw", "code_bytes_packed"}
            assert run.config and not run.config.keys() & after and run.config["seed"] == str(run.seed)
            assert "git_commit" in run.header and "model_params" in run.facts


@pytest.mark.slow
def test_real_tiny_run_log(tmp_path):
    """Logs written by a real (tiny, CPU) run of train_gpt.py parse and pass the checks."""
    tok = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
    val = SHARED / "fineweb_val_prefix" / "fineweb_val_000000.bin"
    if not (tok.is_file() and val.is_file()):
        pytest.skip(f"shared data not found at {SHARED}")
    import numpy as np

    import train_gpt

    data = tmp_path / "data"
    data.mkdir()
    tokens = train_gpt.load_shard(val)
    train_gpt.write_shard(data / "fineweb_train_000000.bin", tokens[65_536:])  # a smoke run, not a record
    train_gpt.write_shard(data / "fineweb_val_000000.bin", np.asarray(tokens[:65_536]))
    script = tmp_path / "train_gpt.py"  # a private copy: the shared checkout may be edited while this runs
    script.write_bytes(SOURCE)
    env = {**os.environ, "PRESET": "tiny", "SEED": "5", "RUN_ID": "tiny_real", "ITERATIONS": "2", "WARMUP_STEPS": "1",
           "TRAIN_LOG_EVERY": "1", "GPTQ": "0", "EVAL_STRIDE": "0", "VAL_MAX_TOKENS": "1024",
           "DATA_PATH": str(data), "TOKENIZER_PATH": str(tok), "LOG_DIR": str(tmp_path / "logs"),
           "ARTIFACT_PATH": str(tmp_path / "a.pgz")}
    subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, check=True, timeout=900,
                   capture_output=True)
    run = R.parse_log(tmp_path / "logs" / "tiny_real.txt")
    assert run.complete and run.seed == 5 and run.source == SOURCE and run.steps == 2
    assert run.score.name == "final_int6_roundtrip_exact" and run.total_bytes < R.BYTE_LIMIT
    assert _errors(R.check_runs([run], SOURCE)) == []
