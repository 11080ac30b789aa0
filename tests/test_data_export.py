"""The tokenizer trainer and the export: BOS per document, val/train split, shard boundaries, manifest, bad input."""

from __future__ import annotations

import hashlib
import json
import struct

import datalib as dl
import export as ex
import numpy as np
import pytest
import sentencepiece as spm
import tokenizer as tk
from conftest import shared_path

import toolkit
import train_gpt as tg

SPACE = "\u2581"


@pytest.fixture(scope="module")
def official_tok():
    return shared_path("tokenizers", "fineweb_1024_bpe.model")


@pytest.fixture(scope="module")
def fineweb_texts():
    return [json.loads(line)["text"] for line in shared_path("text", "fineweb_docs_200.jsonl").open()]


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def read_split(folder, split):
    return np.concatenate([tg.load_shard(f) for f in dl.split_files(folder, split)])


def run(main, argv, capsys):
    code = toolkit.run_cli(main, argv)
    return code, capsys.readouterr().err.strip()


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def _varint(buf, i):
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, i


def _put_varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def rename_space_piece(model: bytes, new: str) -> bytes:
    """Rewrite a SentencePiece ModelProto so its standalone "▁" piece is called `new` (a real, loadable model
    without the piece; there is no protobuf package here, so the two wire-format levels are walked by hand)."""
    out, i = bytearray(), 0
    while i < len(model):
        key, j = _varint(model, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, k = _varint(model, j)
            body = model[k : k + n]
            if field == 1:  # a SentencePiece message: field 1 is its piece string
                pkey, p = _varint(body, 0)
                plen, q = _varint(body, p)
                if pkey == 0x0A and body[q : q + plen].decode("utf-8") == SPACE:
                    enc = new.encode("utf-8")
                    body = body[:p] + _put_varint(len(enc)) + enc + body[q + plen :]
            out += _put_varint(key) + _put_varint(len(body)) + body
            i = k + n
        elif wire == 0:
            _, k = _varint(model, j)
            out += model[i:k]
            i = k
        elif wire == 5:
            out += model[i : j + 4]
            i = j + 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return bytes(out)


def test_train_official_settings(tmp_path, fineweb_texts):
    docs = write_jsonl(tmp_path / "docs.jsonl", fineweb_texts[:60])
    model = tk.train_tokenizer([docs], tmp_path / "t.model", 400)
    sp = dl.load_tokenizer(model)
    assert sp.vocab_size() == 400 and (tmp_path / "t.vocab").is_file()
    assert [sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()] == [0, 1, 2, 3]
    assert sum(sp.is_byte(i) for i in range(400)) == 256  # byte fallback
    assert [sp.id_to_piece(i) for i in sp.encode("2024")] == ["2", "0", "2", "4"]  # split digits
    assert sp.encode("hello")[0] != sp.piece_to_id(SPACE)  # no dummy prefix
    assert sp.decode(sp.encode("a\u00a0\u00a0b")) == "a b"  # nmt_nfkc + whitespace collapse
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "t.model", "t.vocab"]


def test_model_without_space_piece_is_refused(tmp_path, official_tok, capsys):
    bad = tmp_path / "nospace.model"
    bad.write_bytes(rename_space_piece(official_tok.read_bytes(), "\u2042\u2042"))
    sp = spm.SentencePieceProcessor(model_file=str(bad))  # loads fine ...
    assert sp.vocab_size() == 1024
    with pytest.raises((ValueError, tg.UserError), match="no standalone"):  # ... the byte rule refuses it
        tg.build_byte_tables(sp, 1024)
    code, err = run(tk.main, ["--check", str(bad)], capsys)
    assert code == 2 and "no standalone" in err and str(bad) in err and "\n" not in err
    code, err = run(
        ex.main,
        [str(shared_path("text", "fineweb_docs_200.jsonl")), "--tokenizer", str(bad), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and "no standalone" in err


def test_tokenizer_cli_errors(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = run(tk.main, ["--docs", str(empty), "--out", str(tmp_path / "t.model")], capsys)
    assert code == 2 and "no documents" in err and not (tmp_path / "t.model").exists()
    code, err = run(tk.main, ["--docs", str(tmp_path / "missing*.jsonl"), "--out", str(tmp_path / "t.model")], capsys)
    assert code == 2 and "missing*.jsonl" in err


# ---------------------------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------------------------


def test_export_real_fineweb_docs(tmp_path, official_tok, fineweb_texts):
    """Against a brute-force reference: BOS + encode(doc) per document, first 30 to val, shards cut at 50,000."""
    out = tmp_path / "ds"
    m = ex.export(
        [str(shared_path("text", "fineweb_docs_200.jsonl"))],
        official_tok,
        out,
        val_docs=30,
        shard_tokens=50_000,
        quiet=True,
    )
    sp = dl.load_tokenizer(official_tok)
    ref = [np.array([tg.BOS_ID, *ids]) for ids in sp.encode(fineweb_texts)]
    val, train = read_split(out, "val"), read_split(out, "train")
    np.testing.assert_array_equal(val, np.concatenate(ref[:30]))
    np.testing.assert_array_equal(train, np.concatenate(ref[30:]))
    assert val.size + train.size == 628_257 + 200 and int((train == 1).sum()) == 170
    sizes = [tg.read_shard_header(f) for f in dl.split_files(out, "train")]
    assert all(s == 50_000 for s in sizes[:-1]) and 0 < sizes[-1] <= 50_000
    tables = tg.build_byte_tables(sp, 1024)
    nbytes = sum(tg.count_target_bytes(s[:-1].astype(np.int64), s[1:].astype(np.int64), tables) for s in (val, train))
    assert nbytes == 1_489_418  # normalised bytes (MANIFEST.md); the raw text is 1,489,515 bytes
    assert m["splits"]["val"]["docs"] == 30 and m["splits"]["train"]["tokens"] == train.size
    assert m["splits"]["train"]["files"] == [f.name for f in dl.split_files(out, "train")]
    assert m["tokenizer"]["sha256"] == dl.sha256_file(official_tok) and m["tokenizer"]["vocab_size"] == 1024
    h = hashlib.sha256()
    for t in ref[:30]:
        h.update(dl.doc_digest(t[1:]))
    assert m["splits"]["val"]["docs_sha256"] == h.hexdigest()
    assert json.loads((out / "manifest.json").read_text()) == m
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".bin")) == ["manifest.json"]


def test_text_inputs_and_blocks(tmp_path, official_tok):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "a.txt").write_text("First document.\n\nStill the first.\n")
    (folder / "b.txt").write_text("Second document.")
    m = ex.export([str(folder)], official_tok, tmp_path / "o1", val_docs=1, quiet=True)
    assert (m["splits"]["val"]["docs"], m["splits"]["train"]["docs"]) == (1, 1)
    m = ex.export([str(folder / "a.txt")], official_tok, tmp_path / "o2", val_docs=1, blocks=True, quiet=True)
    assert (m["splits"]["val"]["docs"], m["splits"]["train"]["docs"]) == (1, 1)
    sp = dl.load_tokenizer(official_tok)
    assert sp.decode(read_split(tmp_path / "o2", "train")[1:].tolist()) == "Still the first."


def test_bad_lines_stop_or_skip(tmp_path, official_tok, capsys):
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"text": "one doc"}\n\n{"text": "two"}\n{"text": broken\n["no text field"]\n{"text": "three"}\n')
    code, err = run(
        ex.main, [str(docs), "--tokenizer", str(official_tok), "--out", str(tmp_path / "o"), "--val-docs", "1"], capsys
    )
    assert code == 2 and f"{docs}:4: malformed JSON" in err and "--on-bad-line skip" in err
    assert not (tmp_path / "o").exists()  # nothing written, staging and the new folder removed
    m = ex.export([str(docs)], official_tok, tmp_path / "o", val_docs=1, on_bad_line="skip", quiet=True)
    assert m["dropped"]["bad_lines"] == 2 and m["splits"]["train"]["docs"] == 2
    assert "d.jsonl:5: not a JSON object" in capsys.readouterr().err


def test_non_utf8_empty_and_too_few(tmp_path, official_tok, capsys):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    code, err = run(ex.main, [str(bad), "--tokenizer", str(official_tok), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{bad}:2: not valid UTF-8 (byte 0xe9" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('\n{"text": "   "}\n')
    code, err = run(ex.main, [str(empty), "--tokenizer", str(official_tok), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no documents" in err
    two = write_jsonl(tmp_path / "two.jsonl", ["a b", "c d"])
    code, err = run(ex.main, [str(two), "--tokenizer", str(official_tok), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "nothing is left for training" in err
    code, err = run(
        ex.main, [str(tmp_path / "nope*.jsonl"), "--tokenizer", str(official_tok), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "nope*.jsonl" in err
    assert not (tmp_path / "o").exists()


def test_refuse_then_overwrite(tmp_path, official_tok, capsys):
    out = tmp_path / "o"
    ex.export(
        [str(write_jsonl(tmp_path / "a.jsonl", ["x y"] + [f"doc {i} " * 300 for i in range(6)]))],
        official_tok,
        out,
        val_docs=1,
        shard_tokens=500,
        quiet=True,
    )
    n_before = len(dl.split_files(out, "train"))
    small = write_jsonl(tmp_path / "b.jsonl", ["p q", "r s"])
    code, err = run(ex.main, [str(small), "--tokenizer", str(official_tok), "--out", str(out)], capsys)
    assert code == 2 and "already holds a dataset" in err and "--overwrite" in err
    assert len(dl.split_files(out, "train")) == n_before
    ex.export([str(small)], official_tok, out, val_docs=1, overwrite=True, quiet=True)
    assert n_before > 1 and len(dl.split_files(out, "train")) == 1  # stale shards gone
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["docs"] == 1


def test_interrupted_export_leaves_no_shards(tmp_path, official_tok, monkeypatch):
    calls = {"n": 0}
    real = toolkit.write_shard

    def dies_on_third(path, tokens):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, tokens)

    monkeypatch.setattr(toolkit, "write_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        ex.export(
            [str(shared_path("text", "fineweb_docs_200.jsonl"))],
            official_tok,
            tmp_path / "o",
            val_docs=10,
            shard_tokens=50_000,
            quiet=True,
        )
    assert not (tmp_path / "o").exists()


def test_train_copy_of_val_doc_is_dropped(tmp_path, official_tok):
    docs = write_jsonl(tmp_path / "d.jsonl", ["the same text", "other val", "fresh train", "the  same text", "more"])
    m = ex.export([str(docs)], official_tok, tmp_path / "o", val_docs=2, quiet=True)
    # "the  same text" normalises to the same tokens as the first val document
    assert m["dropped"]["train_docs_equal_to_a_val_doc"] == 1 and m["splits"]["train"]["docs"] == 2


def test_shard_header_written_by_export(tmp_path, official_tok):
    ex.export(
        [str(write_jsonl(tmp_path / "d.jsonl", ["a b c", "d e f"]))],
        official_tok,
        tmp_path / "o",
        val_docs=1,
        quiet=True,
    )
    raw = (tmp_path / "o" / "fineweb_val_000000.bin").read_bytes()
    magic, version, n = struct.unpack("<3i", raw[:12])
    assert (magic, version) == (20240520, 1) and len(raw) == 1024 + 2 * n and raw[12:1024] == bytes(1012)
