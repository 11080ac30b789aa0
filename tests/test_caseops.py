"""CaseOps end to end: the transform is lossless, a CaseOps tokenizer and export write val byte sidecars whose total
is exactly the original text's UTF-8 length, train_gpt.py scores with them (and refuses a tokenizer/setting
mismatch), and a tiny run trains, exports and scores with phased TTT on CaseOps data."""

from __future__ import annotations

import json
import re

import caseops
import datalib as dl
import export as data_export
import numpy as np
import pytest
import sentencepiece as spm
import tokenizer as data_tokenizer
import torch
from conftest import shared_path

import train_gpt as tg

TITLE, ALLCAPS, CAPNEXT, ESC = tg.CASEOPS_OPERATORS
VAL_DOCS = 24


@pytest.mark.parametrize(
    "text,encoded",
    [
        ("The NASA launch", f"{TITLE}the {ALLCAPS}nasa launch"),
        ("iPhone HTTPServer A x", f"i{CAPNEXT}phone {TITLE}h{CAPNEXT}t{CAPNEXT}t{CAPNEXT}p{CAPNEXT}server {TITLE}a x"),
        (f"a{TITLE}b{ESC}", f"a{ESC}{TITLE}b{ESC}{ESC}"),  # operators in the text itself are escaped
        ("Ünïcode MIXED1caSe", f"Ünïcode {ALLCAPS}mixed1ca{CAPNEXT}se"),  # only ASCII letters change
        ("", ""),
    ],
)
def test_transform_examples_round_trip(text, encoded):
    assert caseops.encode(text) == encoded and caseops.decode(encoded) == text


def test_transform_is_lossless_on_real_documents():
    docs = list(dl.iter_documents([shared_path("text", "c4_docs_1000.jsonl")], "auto", False, "stop"))[:300]
    rng = np.random.default_rng(0)
    for doc in docs:
        assert caseops.decode(caseops.encode(doc)) == doc
    alphabet = list("aAbBzZ .1é") + list(tg.CASEOPS_OPERATORS)
    for _ in range(300):
        s = "".join(rng.choice(alphabet, size=int(rng.integers(0, 12))))
        assert caseops.decode(caseops.encode(s)) == s


@pytest.mark.parametrize("bad", [f"{TITLE} x", "ABC", f"x{CAPNEXT}", f"{ESC}"])
def test_decode_refuses_text_encode_cannot_produce(bad):
    with pytest.raises(ValueError):
        caseops.decode(bad)


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory):
    """A CaseOps tokenizer (vocab 512) trained on C4 documents past the val ones, and an export of 400 documents."""
    tmp = tmp_path_factory.mktemp("caseops")
    docs = shared_path("text", "c4_docs_1000.jsonl")
    model = data_tokenizer.train_tokenizer(
        [docs], tmp / "tok.model", 512, skip_docs=VAL_DOCS, max_docs=400, threads=1, caseops_text=True
    )
    subset = tmp / "docs.jsonl"
    lines = docs.read_text(encoding="utf-8").splitlines()[:400]
    subset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data_export.export([str(subset)], model, tmp / "data", VAL_DOCS, 1 << 20, threads=1, quiet=True, caseops_text=True)
    return tmp, model, subset


def test_sidecar_bytes_are_the_original_texts_utf8_length(caseops_data):
    tmp, model, subset = caseops_data
    sp = spm.SentencePieceProcessor(model_file=str(model))
    manifest = json.loads((tmp / "data" / "manifest.json").read_text())
    assert manifest["caseops"]["val_bytes_files"] == ["fineweb_val_bytes_000000.bin"]
    val = tg.load_token_split(str(tmp / "data" / "fineweb_val_*.bin"))  # the sidecars are not val shards
    counts = tg.load_token_split(str(tmp / "data" / "fineweb_val_bytes_*.bin"))
    assert len(counts) == len(val) and counts[0] == 0
    originals = list(dl.iter_documents([subset], "auto", False, "stop"))[:VAL_DOCS]
    bos = np.flatnonzero(val == tg.BOS_ID).tolist() + [len(val)]
    exact = 0
    for doc, a, b in zip(originals, bos, bos[1:]):
        text = caseops.decode(sp.decode(val[a + 1 : b].tolist()))  # what the tokenizer kept of the document
        assert int(counts[a + 1 : b].sum()) == len(text.encode("utf-8"))
        exact += text == sp.normalize(doc).replace("▁", " ")  # the original as the tokenizer normalises it
    assert exact == VAL_DOCS
    ops, esc = caseops.operator_ids(sp)
    rule = tg.count_target_bytes(val[:-1], val[1:], tg.build_byte_tables(sp, 512))
    n_ops = int(np.isin(val, ops).sum())
    assert n_ops > 100 and rule == int(counts.sum()) + 3 * n_ops  # the table rule would count each operator's 3 bytes


def test_train_gpt_scores_caseops_val_with_the_sidecars(caseops_data):
    tmp, model, _ = caseops_data
    env = {"PRESET": "tiny", "VOCAB_SIZE": "512", "DATA_PATH": str(tmp / "data"), "TOKENIZER_PATH": str(model)}
    h = tg.Hyperparameters.from_env({**env, "CASEOPS": "1", "EVAL_SEQ_LEN": "64"})
    tables, val = tg.load_validation(h)
    counts = tg.load_token_split(str(tmp / "data" / "fineweb_val_bytes_*.bin"))
    assert tables.target_bytes is not None and np.array_equal(tables.target_bytes, counts[: len(val)])
    model_ = tg.build_model(h.model).eval()
    r = tg.eval_flat(model_, val, tables, h, tg.Dist())
    assert r.bytes == int(counts[1 : len(val)].sum()) and r.targets == len(val) - 1
    with pytest.raises(tg.UserError, match="is a CaseOps tokenizer: set CASEOPS=1"):
        tg.load_validation(tg.Hyperparameters.from_env(env))
    plain = shared_path("tokenizers", "fineweb_1024_bpe.model")
    prefix = shared_path("fineweb_val_prefix")
    with pytest.raises(tg.UserError, match="has no case operator pieces"):
        tg.load_validation(tg.Hyperparameters.from_env({"PRESET": "tiny", "CASEOPS": "1", "DATA_PATH": str(prefix),
                                                        "TOKENIZER_PATH": str(plain)}))  # fmt: skip
    with pytest.raises(dl.DataError, match="pass --caseops"):
        data_export.export([str(tmp / "docs.jsonl")], model, tmp / "again", VAL_DOCS, 1 << 20, threads=1, quiet=True)


def test_tiny_run_with_caseops_data_and_phased_ttt(caseops_data):
    tmp, model, _ = caseops_data
    env = {
        "PRESET": "tiny", "VOCAB_SIZE": "512", "CASEOPS": "1", "DATA_PATH": str(tmp / "data"),
        "TOKENIZER_PATH": str(model), "NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1",
        "ROPE_DIMS": "8", "TRAIN_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "512", "ITERATIONS": "6", "WARMUP_STEPS": "1",
        "EVAL_STRIDE": "0", "VAL_MAX_TOKENS": "1536", "GPTQ_CALIB_BATCHES": "1", "TTT_MODE": "phased",
        "TTT_LORA_RANK": "4", "TTT_LORA_DOCS": "4", "TTT_PHASES": "2", "TTT_PHASE_DOCS": "8", "TTT_CHUNK_TOKENS": "256",
        "LOG_DIR": str(tmp / "logs"), "RUN_ID": "r", "ARTIFACT_PATH": str(tmp / "art" / "r.pgz"),
    }  # fmt: skip
    torch.manual_seed(0)
    tg.run(tg.Hyperparameters.from_env(env), tg.Dist())
    log = (tmp / "logs" / "r.txt").read_text()
    summary = json.loads(re.search(r"^run_summary (\{.*\})$", log, re.M)[1])
    names = [s["name"] for s in summary["scores"]]
    assert names[-1] == "final_int6_ttt" and summary["final"] == "final_int6_ttt"
    counts = tg.load_token_split(str(tmp / "data" / "fineweb_val_bytes_*.bin"))
    n = int(summary["val_targets"]) + 1
    assert summary["val_bytes"] == int(counts[1:n].sum())
    assert all(np.isfinite(s["val_bpb"]) for s in summary["scores"])


def test_verify_checks_the_sidecars_against_the_val_tokens(caseops_data, tmp_path):
    import shutil

    import verify

    import toolkit

    tmp, model, _ = caseops_data
    report = verify.verify(tmp / "data", model, echo=False)
    assert not report.failures and any(ok and c == "caseops" for ok, c, _ in report.lines), report.lines
    bad = tmp_path / "data"
    shutil.copytree(tmp / "data", bad)
    side = bad / "fineweb_val_bytes_000000.bin"
    counts = tg.load_shard(side).copy()
    counts[10] += 1
    toolkit.write_shard(side, counts)
    report = verify.verify(bad, model, echo=False)
    assert report.failures == ["caseops: val byte sidecars differ from the counts of the val tokens at position 10"]
