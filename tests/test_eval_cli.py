"""eval_bpb.py: rescoring artifacts and checkpoints (also through a record's own train_gpt.py), bad input as one-line
errors with exit status 2, text generation, torchrun, and an end-to-end run whose logged score is reproduced."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from conftest import REPO, shared_path

import eval_bpb
import toolkit as tk
import train_gpt as tg

SEQ = 32
MAX_TOKENS = 2048


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A tiny model (real architecture, tiny preset) saved as a float checkpoint and as an int6 artifact."""
    tok = shared_path("tokenizers", "fineweb_1024_bpe.model")
    root = tmp_path_factory.mktemp("eval_cli")
    h = tk.preset("tiny", eval_seq_len=SEQ, eval_stride=8, gptq=0)
    torch.manual_seed(0)
    model = tg.build_model(h.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    tg.save_checkpoint(root / "m.ckpt.pt", h.model, state, h.flat())
    blob, _ = tg.build_artifact(state, tg.param_roles(model), h.model, h)
    (root / "m.pgz").write_bytes(blob)
    return {
        "root": str(root),
        "ckpt": str(root / "m.ckpt.pt"),
        "artifact": str(root / "m.pgz"),
        "tok": str(tok),
        "val": str(shared_path("fineweb_val_prefix") / tk.VAL_GLOB),
    }


def cli(files, *argv: str) -> list[str]:
    return [
        "--val",
        files["val"],
        "--tokenizer",
        files["tok"],
        "--seq-len",
        str(SEQ),
        "--stride",
        "8",
        "--max-tokens",
        str(MAX_TOKENS),
        *argv,
    ]


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = eval_bpb.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def exact(out: str, name: str) -> dict[str, str]:
    line = next(x for x in out.splitlines() if x.startswith(f"{name}_exact "))
    return dict(kv.split(":", 1) for kv in line.split()[1:])


def in_process(files, mode: str, **kw) -> tg.EvalResult:
    config, state, _ = tg.read_artifact(Path(files["artifact"]).read_bytes())
    model = tg.build_model(config)
    model.load_state_dict(state)
    model.eval().set_loops(tk.eval_loops(config))
    h = tk.preset("tiny", eval_seq_len=SEQ, **{"eval_stride": 8, **kw})
    tables = tg.build_byte_tables(spm.SentencePieceProcessor(model_file=files["tok"]), 1024)
    val = tg.prepare_val_tokens(tg.load_token_split(files["val"], 1024)[: MAX_TOKENS + 1], SEQ, False)
    fn = {"flat": tg.eval_flat, "sliding": tg.eval_sliding, "ttt": tg.eval_ttt}[mode]
    return fn(model, val, tables, h, tg.Dist())


def test_artifact_rescoring_equals_the_library(files, capsys):
    rc, out, _ = run_main(capsys, cli(files, "--artifact", files["artifact"], "--mode", "flat"))
    assert rc == 0
    got, ref = exact(out, "eval_flat"), in_process(files, "flat")
    assert got["val_bpb"] == f"{ref.val_bpb:.8f}" and got["val_loss"] == f"{ref.val_loss:.8f}"
    assert (int(got["targets"]), int(got["bytes"])) == (ref.targets, ref.bytes) == (MAX_TOKENS, ref.bytes)
    assert re.search(r"^eval_flat val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$", out, re.M)
    assert "wall_time:" in out


def test_artifact_rescoring_defaults_to_its_recorded_window(files, capsys, monkeypatch):
    """An artifact records the window its run scored at: rescored alone (no --seq-len, no environment), it is scored
    at that window, not at the preset's default (frontier: 2,048), and gives the same score as with --seq-len."""
    for k in ("PRESET", "TRAIN_SEQ_LEN", "EVAL_SEQ_LEN"):
        monkeypatch.delenv(k, raising=False)
    assert tg.decode_artifact(Path(files["artifact"]).read_bytes())[2] == {"train_seq_len": 128, "eval_seq_len": SEQ}
    argv = cli(files, "--artifact", files["artifact"], "--mode", "flat")
    rc, out, _ = run_main(capsys, argv[:4] + argv[6:])  # without --seq-len
    assert rc == 0 and f" window:{SEQ} " in out
    assert exact(out, "eval_flat")["val_bpb"] == f"{in_process(files, 'flat').val_bpb:.8f}"


def test_checkpoint_and_ttt_modes(files, capsys):
    rc, out, _ = run_main(capsys, cli(files, "--checkpoint", files["ckpt"], "--mode", "sliding", "--stride", "8"))
    assert rc == 0
    sliding = float(exact(out, "eval_sliding")["val_bpb"])
    assert sliding == pytest.approx(in_process(files, "sliding", eval_stride=8).val_bpb, abs=0.05)  # float vs int6
    rc, out, _ = run_main(
        capsys,
        cli(
            files,
            "--artifact",
            files["artifact"],
            "--mode",
            "ttt",
            "--ttt-mode",
            "lora",
            "--ttt-lora-chunk",
            "16",
            "--name",
            "lora",
            "--max-tokens",
            "320",
        ),
    )
    assert rc == 0 and exact(out, "lora")["targets"] == "320"


def test_code_flag_uses_that_file(files, capsys, tmp_path):
    record = tmp_path / "records" / "track_non_record_16mb" / "2026-01-01_x"
    record.mkdir(parents=True)
    shutil.copy(REPO / "train_gpt.py", record / "train_gpt.py")
    args = cli(files, "--artifact", files["artifact"], "--mode", "flat")
    rc, out_ours, _ = run_main(capsys, args)
    rc2, out_code, _ = run_main(capsys, [*args, "--code", str(record / "train_gpt.py"), "--trust-code"])
    assert rc == rc2 == 0
    assert exact(out_code, "eval_flat")["val_bpb"] == exact(out_ours, "eval_flat")["val_bpb"]
    assert f"code:{record / 'train_gpt.py'}" in out_code
    (tmp_path / "old.py").write_text("import torch\n\ndef main():\n    pass\n")
    rc, _, err = run_main(capsys, [*args, "--code", str(tmp_path / "old.py"), "--trust-code"])
    assert rc == 2 and "does not define Hyperparameters, setting_fields, build_model" in err and err.count("\n") == 1


def test_bad_inputs_exit_2_with_one_line(files, capsys, tmp_path):
    bad_shard = tmp_path / "fineweb_val_000000.bin"
    tk.write_shard(bad_shard, np.array([1, 5, 2000, 7] * 40, dtype=np.uint16))
    (tmp_path / "junk.pgz").write_bytes(b"not an artifact" * 10)
    art = ["--artifact", files["artifact"]]
    cases = {
        "must be positive": cli(files, *art, "--stride", "0"),
        "longer than the window": cli(files, *art, "--stride", "64"),
        "fewer than one window": [*cli(files, *art), "--max-tokens", "10"],
        "differs from the tokenizer": [
            *cli(files, *art),
            "--tokenizer",
            str(shared_path("tokenizers", "fineweb_8192_bpe.model")),
        ],
        ">= vocab size 1024": [*cli(files, *art), "--val", str(bad_shard)],
        "no such file": cli(files, "--artifact", str(tmp_path / "missing.pgz")),
        "junk.pgz": cli(files, "--artifact", str(tmp_path / "junk.pgz")),
        "no shard files match": [*cli(files, *art), "--val", str(tmp_path / "nothing_*.bin")],
        "--mode ttt needs": cli(files, "--checkpoint", files["ckpt"], "--mode", "ttt"),  # the tiny preset: TTT off
        "TTT_LORA_CHUNK=48": cli(files, *art, "--mode", "ttt"),  # no recorded settings: the frontier's phased TTT
    }
    for message, argv in cases.items():
        rc, out, err = run_main(capsys, argv)
        assert rc == 2, (message, out, err)
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, (message, err)


def test_sample_writes_text(files, capsys):
    argv = [
        "--artifact",
        files["artifact"],
        "--tokenizer",
        files["tok"],
        "--sample",
        "The weather today",
        "--max-new-tokens",
        "12",
        "--temperature",
        "0",
    ]
    rc, first, _ = run_main(capsys, argv)
    rc2, second, _ = run_main(capsys, argv)
    assert rc == rc2 == 0 and first == second and first.startswith("The weather today")
    assert len(first.strip()) > len("The weather today")
    rc, out, _ = run_main(capsys, [*argv[:-2], "--temperature", "1.0", "--top-k", "5", "--seed", "3"])
    assert rc == 0 and out.startswith("The weather today")


def _subprocess(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(files, tmp_path):
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
    args = cli(files, "--artifact", files["artifact"], "--mode", "sliding", "--stride", "8")
    one = _subprocess([sys.executable, str(REPO / "eval_bpb.py"), *args], tmp_path)
    two = _subprocess([torchrun, "--standalone", "--nproc_per_node=2", str(REPO / "eval_bpb.py"), *args], tmp_path)
    a, b = exact(one, "eval_sliding"), exact(two, "eval_sliding")
    assert (a["targets"], a["bytes"]) == (b["targets"], b["bytes"])
    assert float(a["val_bpb"]) == pytest.approx(float(b["val_bpb"]), abs=2e-8)
    assert "world_size:2" in two


@pytest.mark.slow
def test_end_to_end_run_is_reproduced_by_rescoring(tmp_path):
    sample = REPO / "data" / "sample"
    if not (sample / "tokenizer.model").is_file():
        pytest.skip("data/sample is absent (python data/sample.py builds it)")
    env = {
        "PRESET": "tiny",
        "ITERATIONS": "8",
        "WARMUP_STEPS": "1",
        "GPTQ": "0",
        "RUN_ID": "e2e",
        "VAL_MAX_TOKENS": "4096",
        "DATA_PATH": str(sample),
        "TOKENIZER_PATH": str(sample / "tokenizer.model"),
    }
    log = _subprocess([sys.executable, str(REPO / "train_gpt.py")], tmp_path, env)
    logged = exact(log, "final_int6_roundtrip")
    artifact = tmp_path / re.search(r"^artifact_path:(\S+)$", log, re.M).group(1)
    rescore = [sys.executable, str(REPO / "eval_bpb.py"), "--artifact", str(artifact), "--max-tokens", "4096"]
    rescore += ["--val", str(sample / tk.VAL_GLOB), "--tokenizer", str(sample / "tokenizer.model")]
    got = exact(_subprocess([*rescore, "--mode", "flat"], tmp_path, {"PRESET": "tiny"}), "eval_flat")
    assert (got["val_loss"], got["val_bpb"]) == (logged["val_loss"], logged["val_bpb"])
    ttt = ["--mode", "ttt", "--ttt-mode", "sgd", "--ttt-chunk-tokens", "1024"]
    assert exact(_subprocess([*rescore, *ttt], tmp_path, {"PRESET": "tiny"}), "eval_ttt")["targets"] == "4096"


def test_probe_scores_each_item_alone_and_continues_some(files, capsys, tmp_path):
    items = ["The weather today is sunny and warm.", "Paris is the capital of France. " * 3, "x"]
    path = tmp_path / "probe.jsonl"
    path.write_text("\n".join(f'{{"text": "{t}"}}' for t in items) + "\n")
    argv = ["--artifact", files["artifact"], "--tokenizer", files["tok"], "--seq-len", "16", "--probe", str(path)]
    rc, out, _ = run_main(capsys, [*argv, "--probe-samples", "1", "--max-new-tokens", "4", "--temperature", "0"])
    assert rc == 0
    rows = [dict(kv.split(":", 1) for kv in line.split()[1:6]) for line in out.splitlines() if " tokens:" in line]
    assert len(rows) == 4 and rows[-1]["items"] == "3"
    sp = spm.SentencePieceProcessor(model_file=files["tok"])
    config, state, _ = tg.read_artifact(Path(files["artifact"]).read_bytes())
    model = tg.build_model(config)
    model.load_state_dict(state)
    model.eval().set_loops(tk.eval_loops(config))
    tables = tg.build_byte_tables(sp, 1024)
    for row, text in zip(rows, items):
        ids = torch.tensor([sp.bos_id()] + sp.encode(text))
        with torch.no_grad():  # windows of 16: each scored with only its own context
            chunks = [ids[a : a + 17] for a in range(0, len(ids) - 1, 16)]
            loss = sum(float(model(c[:-1][None], c[1:][None], reduction="none").sum()) for c in chunks)
        n = len(ids) - 1
        nbytes = tg.count_target_bytes(ids[:-1].numpy(), ids[1:].numpy(), tables)
        assert (int(row["tokens"]), int(row["bytes"])) == (n, nbytes) and row["loss"] == f"{loss / n:.4f}"
        assert row["bpb"] == f"{loss / (math.log(2) * nbytes):.4f}"
    assert sum("continuation:" in line for line in out.splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    rc, _, err = run_main(capsys, [*argv[:-1], str(bad)])
    assert rc == 2 and 'line 1 has no "text" string' in err
