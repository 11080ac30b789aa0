"""eval_bpb.py: --code runs a file, so it needs --trust-code (and a file that is not Python is a one-line error);
progress lines on stderr while scoring, which change neither the scores nor the stdout lines."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import REPO, shared_path

import eval_bpb
import toolkit as tk
import train_gpt as tg


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = eval_bpb.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A tiny float checkpoint (real architecture, tiny preset)."""
    path = tmp_path_factory.mktemp("trust") / "m.ckpt.pt"
    h = tk.preset("tiny", eval_seq_len=32, eval_stride=8)
    torch.manual_seed(0)
    model = tg.build_model(h.model)
    tg.save_checkpoint(path, h.model, {k: v.detach() for k, v in model.state_dict().items()}, h.flat())
    return str(path)


def scoring(ckpt: str, *argv: str) -> list[str]:
    val = shared_path("fineweb_val_prefix") / tk.VAL_GLOB
    tok = shared_path("tokenizers", "fineweb_1024_bpe.model")
    return ["--checkpoint", ckpt, "--val", str(val), "--tokenizer", str(tok), "--seq-len", "32", *argv]


def test_code_without_trust_code_runs_nothing_and_says_why(ckpt, tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    code = tmp_path / "train_gpt.py"
    code.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    rc, out, err = run_main(capsys, scoring(ckpt, "--code", str(code)))
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert "runs that file as Python" in err and "pass --trust-code if you trust it" in err
    assert not marker.exists()
    rc, _, err = run_main(capsys, scoring(ckpt, "--code", str(code), "--trust-code"))
    assert marker.read_text() == "ran"  # with the flag it does run (then lacks the API: one line)
    assert rc == 2 and "does not define Hyperparameters" in err and err.count("\n") == 1


def test_code_that_is_not_python_is_one_line(ckpt, capsys):
    rc, _, err = run_main(capsys, scoring(ckpt, "--code", str(REPO / "README.md"), "--trust-code"))
    assert rc == 2 and err.startswith("error: --code ") and "importing it failed (SyntaxError" in err, err
    assert err.count("\n") == 1


def test_help_says_code_runs_the_file(capsys):
    with pytest.raises(SystemExit):
        eval_bpb.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--trust-code" in text and "RUNS the file" in text and "--progress-every" in text
    assert "--official-checkpoint" in text and "--official-artifact" in text


def test_progress_lines_appear_and_change_nothing(ckpt, capsys):
    argv = scoring(ckpt, "--mode", "sliding", "--stride", "8", "--max-tokens", "2048", "--batch-seqs", "8")
    rc, quiet, quiet_err = run_main(capsys, [*argv, "--progress-every", "0"])
    assert rc == 0 and "progress" not in quiet_err
    rc, out, err = run_main(capsys, [*argv, "--progress-every", "0.000001"])  # the run takes far longer than that
    assert rc == 0
    lines = err.splitlines()
    assert len(lines) >= 2 and all(x.startswith("progress eval_sliding: ") for x in lines), err
    pattern = r"progress eval_sliding: (\d+\.\d)% of 2,048 targets, elapsed \d+s, eta (\d+s|\?)"
    fractions = [float(re.fullmatch(pattern, x).group(1)) for x in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 100.0  # counts every target, ends at all of them
    timeless = [re.sub(r" (eval|wall)_time:\d+ms", "", x) for x in (out, quiet)]
    assert timeless[0] == timeless[1]  # the stdout lines and the scores are unchanged


def test_progress_counts_ttt_too(ckpt, capsys):
    argv = scoring(ckpt, "--mode", "ttt", "--ttt-mode", "lora", "--ttt-lora-chunk", "16", "--max-tokens", "320")
    rc, _, err = run_main(capsys, [*argv, "--progress-every", "0.000001", "--name", "lora"])
    assert rc == 0 and err.splitlines()[-1].startswith("progress lora: 100.0% of 320 targets"), err
    rc, _, err = run_main(capsys, [*argv, "--progress-every", "-1"])
    assert rc == 2 and "--progress-every -1.0: must be >= 0" in err
