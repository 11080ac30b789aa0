"""Bad input to the data tools: exit code 2, one line `error: ...` naming the file / flag / value, no file changed.

Also the proof of a tokenizer by content (datalib.prove_tokenizer) on the real official val prefix: the look-alike
tokenizer passes every structural check but fails the proof.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import datalib as dl
import export as ex
import numpy as np
import pytest
import sample
import tokenizer as tk
import verify as vf
from conftest import shared_path

import toolkit
import train_gpt as tg


def state(root):
    """Every file under root with the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refused(tmp_path, capsys, main, argv):
    """Run a tool that must refuse: exit 2, one stderr line, and no file under tmp_path created or changed."""
    before = state(tmp_path)
    code = toolkit.run_cli(main, argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and not [x for x in lines if x.startswith(("Traceback", "  "))]
    assert state(tmp_path) == before
    return lines[-1][len("error: ") :]


@pytest.fixture
def val_dir(tmp_path):
    """A dataset folder holding the real official val prefix (109 documents, official sp1024 tokens)."""
    d = tmp_path / "ds"
    d.mkdir()
    shutil.copy(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin"), d / "fineweb_val_000000.bin")
    return d


@pytest.fixture
def docs40(tmp_path):
    lines = shared_path("text", "fineweb_docs_200.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / "docs40.jsonl"
    path.write_text("".join(lines[:40]), encoding="utf-8")
    return path


OFFICIAL = ("tokenizers", "fineweb_1024_bpe.model")
WRONG = ("tokenizers", "wrong_fineweb_1024_bpe.model")


# ---------------------------------------------------------------------------------------------------------------------
# the proof by content
# ---------------------------------------------------------------------------------------------------------------------


def test_prove_tokenizer_on_the_official_val_prefix():
    val = tg.load_token_split(str(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin")), 1024)
    dl.prove_tokenizer(dl.load_tokenizer(shared_path(*OFFICIAL)), val)  # the 108 complete documents re-encode
    wrong = dl.load_tokenizer(shared_path(*WRONG))  # loads, vocab 1024, standalone "▁": structurally fine
    with pytest.raises(toolkit.UserError) as e:
        dl.prove_tokenizer(wrong, val, tokenizer="W.model", source="V/", max_docs=5)
    assert str(e.value) == (
        "W.model is not the tokenizer V/ were made with: 5 of 5 val documents do not re-encode to "
        "their tokens (first: document 0); use the tokenizer the shards were made with"
    )
    with pytest.raises(toolkit.UserError, match="no BOS"):
        dl.prove_tokenizer(wrong, np.array([300, 301], dtype="<u2"), source="V/")


def test_prove_tokenizer_on_a_prefix_that_cuts_a_character():
    """A prefix of val (eval --max-tokens, a shard prefix) may end inside a multi-byte character spelled as byte
    tokens: that last document cannot re-encode to its ids, so the proof leaves it out."""
    sp = dl.load_tokenizer(shared_path(*OFFICIAL))
    val = np.array(tg.load_shard(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin")))
    lead = np.array([sp.is_byte(i) and int(sp.id_to_piece(i)[3:5], 16) >= 0xC2 for i in range(1024)])
    cut = int(np.flatnonzero(lead[val])[0]) + 1  # just after the first byte of a multi-byte character
    prefix = val[:cut]
    last = prefix[int(np.flatnonzero(prefix == tg.BOS_ID)[-1]) + 1 :].tolist()
    assert sp.encode(sp.decode(last)) != last  # the cut document alone would fail ...
    dl.prove_tokenizer(sp, prefix)  # ... and is not held against the right tokenizer
    starts, ends = dl.proof_documents(prefix)
    assert ends[-1] == starts[-1] + 1 + len(sp.encode(sp.decode(val[starts[-1] + 1 : ends[-1]].tolist())))


def test_check_with_data_proves_or_refuses(val_dir, tmp_path, capsys):
    assert toolkit.run_cli(tk.main, ["--check", str(shared_path(*WRONG))]) == 0  # structure only: it looks fine
    assert "not proven against any shards" in capsys.readouterr().out
    assert toolkit.run_cli(tk.main, ["--check", str(shared_path(*OFFICIAL)), "--data", str(val_dir)]) == 0
    assert f"proven on 108 val documents of {val_dir}" in capsys.readouterr().out
    msg = refused(tmp_path, capsys, tk.main, ["--check", str(shared_path(*WRONG)), "--data", str(val_dir)])
    assert msg.startswith(
        f"{shared_path(*WRONG)} is not the tokenizer {val_dir} (1 val shard(s)) were made with: "
        "108 of 108 val documents do not re-encode"
    )
    shard = val_dir / "fineweb_val_000000.bin"  # a shard file works too; so does another vocab size
    msg = refused(
        tmp_path,
        capsys,
        tk.main,
        ["--check", str(shared_path("tokenizers", "fineweb_8192_bpe.model")), "--data", str(shard), "--max-docs", "3"],
    )
    assert "3 of 3 val documents do not re-encode" in msg


def test_check_data_errors(val_dir, tmp_path, capsys):
    tok = str(shared_path(*OFFICIAL))
    msg = refused(tmp_path, capsys, tk.main, ["--check", tok, "--data", str(tmp_path / "none")])
    assert (
        msg == f"--data {tmp_path / 'none'}: no val shards there (a dataset folder with fineweb_val_*.bin, or shard "
        "files)"
    )
    toks = np.array(tg.load_shard(val_dir / "fineweb_val_000000.bin"))
    toks[40] = 5000
    toolkit.write_shard(val_dir / "fineweb_val_000000.bin", toks)
    msg = refused(tmp_path, capsys, tk.main, ["--check", tok, "--data", str(val_dir)])
    assert "token id 5000 at position 40 is >= vocab size 1024" in msg and str(val_dir) in msg
    msg = refused(tmp_path, capsys, tk.main, ["--data", str(val_dir)])
    assert msg == "--data goes with --check MODEL (to train, pass --docs and --out)"


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer training
# ---------------------------------------------------------------------------------------------------------------------


def test_vocab_larger_than_the_text_supports_is_refused_with_the_largest(docs40, tmp_path, capsys):
    """hard_vocab_limit=False would quietly give fewer pieces; we refuse and say the largest size, which then
    trains to exactly that size."""
    out = tmp_path / "t.model"
    model = shared_path("tokenizers", "fineweb_1024_bpe.model").read_bytes()
    out.write_bytes(model)  # --overwrite: still untouched when the training is refused
    msg = refused(
        tmp_path,
        capsys,
        tk.main,
        ["--docs", str(docs40), "--out", str(out), "--vocab-size", "30000", "--overwrite", "--threads", "1"],
    )
    m = re.fullmatch(
        r"--vocab-size 30000: these 40 documents support at most (\d+) pieces; pass --vocab-size \1 or "
        r"less, or add text \(nothing written\)",
        msg,
    )
    assert m, msg
    largest = int(m.group(1))
    assert 1024 < largest < 30000
    tk.train_tokenizer([docs40], tmp_path / "ok.model", largest, threads=1)
    assert dl.load_tokenizer(tmp_path / "ok.model").vocab_size() == largest


@pytest.mark.parametrize(
    "argv, want",
    [
        (["--vocab-size", "70000"], "--vocab-size 70000 is too large: shards store uint16 ids, so at most 65536"),
        (["--vocab-size", "200"], "--vocab-size 200 is too small: byte fallback alone needs 256 + 4 special ids"),
        (["--skip-docs", "40"], "--skip-docs 40 leaves no documents to train on in {docs}; lower it"),
        (["--skip-docs", "-1"], "--skip-docs -1 must be >= 0 (0 = all)"),
        (["--threads", "-2"], "--threads -2 must be >= 0 (0 = all)"),
        (["--out", "{tmp}/t.bin"], "--out {tmp}/t.bin: the file name must end in .model"),
    ],
)
def test_tokenizer_flag_errors(docs40, tmp_path, capsys, argv, want):
    argv = [a.format(tmp=tmp_path) for a in argv]
    base = ["--docs", str(docs40), "--out", str(tmp_path / "t.model")]
    msg = refused(tmp_path, capsys, tk.main, base + argv)
    assert msg == want.format(docs=docs40, tmp=tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# export, sample, verify
# ---------------------------------------------------------------------------------------------------------------------


def test_export_val_docs_zero_and_other_flags(docs40, tmp_path, capsys):
    tok = str(shared_path(*OFFICIAL))
    base = ["--docs", str(docs40), "--tokenizer", tok]
    out = tmp_path / "out"
    msg = refused(tmp_path, capsys, ex.main, [*base, "--out", str(out), "--val-docs", "0"])
    assert msg == (
        "--val-docs 0: the val split would be empty (train_gpt.py scores on it and verify checks it); pass "
        "at least 1 (default 50,000)"
    )
    msg = refused(tmp_path, capsys, ex.main, [*base, "--out", str(out), "--val-docs", "40"])
    assert (
        msg == "only 40 documents, all taken by --val-docs 40: nothing is left for training; lower --val-docs or "
        "add documents"
    )
    msg = refused(tmp_path, capsys, ex.main, [*base, "--out", str(out), "--threads", "-1"])
    assert msg == "--threads -1 must be >= 0 (0 = all)"
    msg = refused(tmp_path, capsys, ex.main, [*base, "--out", str(out), "--shard-tokens", "0"])
    assert msg == "--shard-tokens 0 must be in [1, 2^31 - 1]"
    msg = refused(tmp_path, capsys, ex.main, [*base, "--out", str(docs40)])
    assert msg == f"--out {docs40}: is a file, not a folder"
    msg = refused(tmp_path, capsys, ex.main, ["--tokenizer", tok, "--out", str(out)])
    assert msg.startswith("--docs is required")
    assert not out.exists()


def test_export_into_an_existing_dataset_keeps_it(docs40, tmp_path, capsys):
    tok = shared_path(*OFFICIAL)
    out = tmp_path / "out"
    ex.export([str(docs40)], tok, out, val_docs=5, quiet=True)
    msg = refused(
        tmp_path,
        capsys,
        ex.main,
        ["--docs", str(docs40), "--tokenizer", str(tok), "--out", str(out), "--val-docs", "0", "--overwrite"],
    )
    assert msg.startswith("--val-docs 0:")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": " "}\n')
    msg = refused(
        tmp_path, capsys, ex.main, ["--docs", str(empty), "--tokenizer", str(tok), "--out", str(out), "--overwrite"]
    )
    assert msg == "the input holds no documents (every file empty, or only blank documents)"


def test_official_export_checks_the_sidecar(docs40, tmp_path, capsys):
    """docs_selected.jsonl whose sidecar (the real one: 15,368,808 documents) does not describe it."""
    docs = tmp_path / "docs_selected.jsonl"
    shutil.copy(docs40, docs)
    sidecar = shared_path("text", "docs_selected.source_manifest.json")
    shutil.copy(sidecar, tmp_path / "docs_selected.source_manifest.json")
    msg = refused(
        tmp_path,
        capsys,
        ex.main,
        ["--docs", str(docs), "--official", "--tokenizer", str(shared_path(*OFFICIAL)), "--out", str(tmp_path / "o")],
    )
    assert msg == (
        f"{tmp_path / 'docs_selected.source_manifest.json'}: says num_docs 15,368,808 but the input holds "
        "40 documents (a truncated or different docs file; pass the docs file it describes)"
    )
    (tmp_path / "docs_selected.source_manifest.json").write_text(json.dumps({"num_docs": 40}))
    msg = refused(
        tmp_path,
        capsys,
        ex.main,
        ["--docs", str(docs), "--official", "--tokenizer", str(shared_path(*OFFICIAL)), "--out", str(tmp_path / "o")],
    )
    assert msg == f"{tmp_path / 'docs_selected.source_manifest.json'}: docs_val is None, expected a positive integer"


def test_official_export_keeps_every_document(tmp_path):
    """As the official export: an empty document is a lone BOS and a train copy of a val document stays (the
    default export drops both, and says so in its manifest)."""
    texts = ["first val doc", "second val doc", "a train doc", "   ", "first val doc", "last one"]
    docs = tmp_path / "docs_selected.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "docs_selected.source_manifest.json").write_text(json.dumps({"num_docs": 6, "docs_val": 2}))
    tok = shared_path(*OFFICIAL)
    m = ex.export([str(docs)], tok, tmp_path / "o", official=True, quiet=True)
    sp = dl.load_tokenizer(tok)
    train = np.array(tg.load_shard(tmp_path / "o" / "fineweb_train_000000.bin"))
    np.testing.assert_array_equal(train, np.concatenate([[1, *ids] for ids in sp.encode(texts[2:])]))
    assert m["splits"]["val"]["docs"] == 2 and m["splits"]["train"]["docs"] == 4
    m = ex.export([str(docs)], tok, tmp_path / "d", val_docs=2, quiet=True)
    assert m["splits"]["train"]["docs"] == 2 and m["dropped"]["empty_docs"] == 1
    assert m["dropped"]["train_docs_equal_to_a_val_doc"] == 1


@pytest.mark.parametrize(
    "argv, want",
    [
        (["--val-docs", "0"], "--val-docs 0: the val split would be empty"),
        (["--vocab-size", "70000"], "--vocab-size 70000 is too large"),
    ],
)
def test_sample_refuses_before_training(docs40, tmp_path, capsys, argv, want):
    msg = refused(tmp_path, capsys, sample.main, ["--docs", str(docs40), "--out", str(tmp_path / "s"), *argv])
    assert msg.startswith(want) and not (tmp_path / "s").exists()


def test_verify_flag_errors(val_dir, tmp_path, capsys):
    msg = refused(tmp_path, capsys, vf.main, [str(val_dir), "--max-docs", "-1"])
    assert msg == "--max-docs -1 must be >= 0 (0 = all)"
    msg = refused(tmp_path, capsys, vf.main, [str(val_dir), "--tokenizer", str(tmp_path / "no.model")])
    assert msg.startswith(f"--tokenizer {tmp_path / 'no.model'}: no such file")
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert refused(tmp_path, capsys, vf.main, [str(f)]) == f"{f}: is a file, not a dataset folder"
