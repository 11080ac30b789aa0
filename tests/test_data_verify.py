"""verify: accepts good datasets (including the one-command sample) and rejects each bad input with its own message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import datalib as dl
import export as ex
import numpy as np
import pytest
import sample
import verify as vf
from conftest import REPO, shared_path

import toolkit as tk
import train_gpt as tg


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """fineweb_docs_200 exported with the official tokenizer: 20 val docs, several train shards."""
    out = tmp_path_factory.mktemp("good") / "ds"
    ex.export(
        [str(shared_path("text", "fineweb_docs_200.jsonl"))],
        shared_path("tokenizers", "fineweb_1024_bpe.model"),
        out,
        val_docs=20,
        shard_tokens=100_000,
        quiet=True,
    )
    return out


@pytest.fixture
def copy(good, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(good, dst)
    return dst


def failures(folder, tokenizer=None, **kw):
    return vf.verify(folder, tokenizer, echo=False, **kw).failures


def only_failure(folder, tokenizer=None):
    f = failures(folder, tokenizer)
    assert len(f) == 1, f
    return f[0]


def test_good_dataset_passes(good, capsys):
    report = vf.verify(good)
    assert not report.failures and len(report.lines) == 11
    out = capsys.readouterr().out
    assert "val byte rule: " in out and "train/val disjoint: none of 180" in out
    assert vf.main([str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_wrong_tokenizer_by_hash_and_by_round_trip(copy):
    wrong = shared_path("tokenizers", "wrong_fineweb_1024_bpe.model")
    msg = only_failure(copy, wrong)
    assert msg.startswith("tokenizer: ") and "is not the tokenizer the shards were made with" in msg
    (copy / "manifest.json").unlink()
    msg = only_failure(copy, wrong)
    assert msg == (
        f"val round trip: {wrong} is not the tokenizer the val shards of {copy} were made with: 19 of 19 "
        "val documents do not re-encode to their tokens (first: document 0); use the tokenizer the shards "
        "were made with"
    )
    assert not failures(copy, shared_path("tokenizers", "fineweb_1024_bpe.model"))


def test_official_val_prefix_without_manifest(tmp_path):
    """The real official val prefix (cut-off last document included) passes with the official tokenizer."""
    shutil.copy(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin"), tmp_path / "fineweb_val_000000.bin")
    tk.write_shard(tmp_path / "fineweb_train_000000.bin", np.array([1, 300, 301]))
    report = vf.verify(tmp_path, shared_path("tokenizers", "fineweb_1024_bpe.model"), echo=False)
    assert not report.failures
    assert any("109 documents, 131,072 tokens" in m for _, _, m in report.lines)
    msg = only_failure(tmp_path, shared_path("tokenizers", "wrong_fineweb_1024_bpe.model"))
    assert "108 of 108 val documents do not re-encode to their tokens" in msg


def test_bad_magic_and_truncated_shard(copy):
    f = copy / "fineweb_train_000002.bin"
    raw = bytearray(f.read_bytes())
    raw[0:4] = (7).to_bytes(4, "little")
    f.write_bytes(bytes(raw))
    assert only_failure(copy).startswith(f"train shards: {f}: bad magic 7")
    v = copy / "fineweb_val_000000.bin"
    v.write_bytes(v.read_bytes()[:-3])
    fails = failures(copy)
    assert any(m.startswith(f"val shards: {v}: file is") and "truncated" in m for m in fails)


def test_token_id_above_vocab(copy):
    f = copy / "fineweb_train_000001.bin"
    toks = np.array(tg.load_shard(f))
    toks[17] = 5000
    tk.write_shard(f, toks)
    fails = failures(copy)
    assert fails[0] == (
        f"train token ids: {f}: token id 5000 at position 17 is >= vocab size 1024 (wrong tokenizer or corrupt shard)"
    )
    assert any(m.startswith("train documents: the documents' sha256") for m in fails)


def test_counts_against_manifest(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["splits"]["val"]["docs"] = 21
    m["splits"]["train"]["tokens"] += 1
    (copy / "manifest.json").write_text(json.dumps(m))
    fails = failures(copy)
    assert "val documents: the BOS (document) count is 20 but" in fails[0]
    assert fails[1].startswith("train documents: the token count is 553475 but")
    assert len(fails) == 2


def test_missing_split_and_missing_folder(copy, tmp_path, capsys):
    for f in dl.split_files(copy, "train"):
        f.unlink()
    msg = [m for m in failures(copy) if m.startswith("train shards")]
    assert msg == [f"train shards: no files match {copy / 'fineweb_train_*.bin'}"]
    assert tk.run_cli(vf.main, [str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such dataset folder" in capsys.readouterr().err


def test_train_val_overlap(tmp_path):
    sp = dl.load_tokenizer(shared_path("tokenizers", "fineweb_1024_bpe.model"))
    docs = [[1, *sp.encode(t)] for t in ("a val document", "another val one", "train text", "more train")]
    tk.write_shard(tmp_path / "fineweb_val_000000.bin", np.concatenate(docs[:2]))
    tk.write_shard(tmp_path / "fineweb_train_000000.bin", np.concatenate([docs[2], docs[1], docs[3]]))
    msg = only_failure(tmp_path, shared_path("tokenizers", "fineweb_1024_bpe.model"))
    assert msg.startswith("train/val disjoint: 1 train document(s) equal a val document (first: train document 1)")


def test_byte_rule_mismatch_and_missing_bos(tmp_path):
    """A lone byte piece decodes to U+FFFD (3 bytes) while the byte rule counts 1: verify must say so."""
    sp = dl.load_tokenizer(shared_path("tokenizers", "fineweb_1024_bpe.model"))
    lone = sp.piece_to_id("<0xFF>")
    tk.write_shard(tmp_path / "fineweb_val_000000.bin", np.array([1, *sp.encode("fine"), 1, lone]))
    tk.write_shard(tmp_path / "fineweb_train_000000.bin", np.array([1, *sp.encode("train")]))
    fails = failures(tmp_path, shared_path("tokenizers", "fineweb_1024_bpe.model"))
    assert fails[0] == (
        "val byte rule: 1 of 2 val documents: the byte rule's count differs from the decoded text's "
        "UTF-8 length (first: document 1, 1 vs 3 bytes)"
    )
    tk.write_shard(tmp_path / "fineweb_train_000000.bin", np.array([300, 1, 301]))
    assert any("train split does not start with BOS" in m for m in failures(tmp_path))


def test_tokenizer_missing(copy):
    (copy / "manifest.json").unlink()
    assert only_failure(copy).startswith("tokenizer: none given and none found")


def test_sample_builds_a_verified_dataset(tmp_path, capsys):
    out = tmp_path / "sample"
    m = sample.build_sample(
        [str(shared_path("text", "c4_docs_1000.jsonl"))], out, vocab_size=1024, val_docs=100, quiet=True
    )
    assert m["splits"]["val"]["docs"] == 100 and m["splits"]["train"]["docs"] == 900
    assert len(m["splits"]["train"]["files"]) >= 2 and (out / "tokenizer.model").is_file()
    assert not vf.verify(out, echo=False).failures  # finds out/tokenizer.model by itself
    assert tk.run_cli(sample.main, ["--docs", str(shared_path("text", "c4_docs_1000.jsonl")), "--out", str(out)]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["download", "tokenizer", "export", "verify", "sample"])
def test_every_tool_has_help(tool, capsys):
    module = __import__(tool)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: ")


def test_script_runs_from_repo_root_and_user_error_is_one_line(tmp_path):
    """As a script (python data/verify.py): imports resolve, and a user error is one line with exit code 2."""
    p = subprocess.run(
        [sys.executable, "data/verify.py", str(tmp_path / "none")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"tokenizer": "x"}, "tokenizer is a str, expected an object"),
        ({"splits": []}, "splits is a list, expected an object"),
        ({"splits": {"val": "x"}}, "splits.val is a str, expected an object"),
        ({"tokenizer": {"path": 5}}, "tokenizer.path = 5 (int), expected str"),
        ({"splits": {"val": {"docs": "20"}}}, "splits.val.docs = '20' (str), expected int"),
        ({"splits": {"val": {"files": "abc"}}}, "splits.val.files is a str, expected a list"),
    ],
)
def test_a_manifest_with_wrong_field_types_is_one_failed_check(copy, change, needle):
    """Issue 27: these were AttributeError / ValueError / TypeError tracebacks (or, for a list of splits, silently
    nothing compared)."""
    manifest = json.loads((copy / dl.MANIFEST_NAME).read_text())
    (copy / dl.MANIFEST_NAME).write_text(json.dumps({**manifest, **change}))
    bad = [f for f in failures(copy, shared_path("tokenizers", "fineweb_1024_bpe.model"), max_docs=5)]
    assert len(bad) == 1 and bad[0].startswith("manifest: ") and needle in bad[0] and "\n" not in bad[0], bad


def test_an_official_manifest_with_wrong_field_types_is_one_failed_check(copy, tmp_path):
    root = tmp_path / "root"
    folder = root / "datasets" / "fineweb10B_sp1024"
    shutil.copytree(copy, folder)
    (folder / dl.MANIFEST_NAME).unlink()
    (root / dl.MANIFEST_NAME).write_text(json.dumps({"datasets": [{"name": "fineweb10B_sp1024", "stats": []}]}))
    bad = failures(folder, shared_path("tokenizers", "fineweb_1024_bpe.model"), max_docs=5)
    assert bad == [f"manifest: {root / dl.MANIFEST_NAME}: datasets[0].stats is a list, expected an object; not "
                   "compared against it (fetch it again with download.py)"]  # fmt: skip
