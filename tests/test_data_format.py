"""The shard format (train_gpt.py DATA section), document streams, and the byte rule on the real val prefix."""

from __future__ import annotations

import json
import os

import datalib as dl
import numpy as np
import pytest
from conftest import shared_path

import toolkit as tk
import train_gpt as tg


def _raw_shard(path, magic=tg.SHARD_MAGIC, version=tg.SHARD_VERSION, n=None, tokens=(1, 5, 6)):
    tokens = np.asarray(tokens, dtype="<u2")
    header = np.zeros(256, dtype="<i4")
    header[:3] = (magic, version, tokens.size if n is None else n)
    path.write_bytes(header.tobytes() + tokens.tobytes())
    return path


def test_round_trip_and_size(tmp_path):
    toks = np.random.default_rng(0).integers(0, 65536, size=1000)
    tk.write_shard(tmp_path / "a.bin", toks)
    assert (tmp_path / "a.bin").stat().st_size == 1024 + 2 * 1000
    got = tg.load_shard(tmp_path / "a.bin")
    assert isinstance(got, np.memmap) and got.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(got, toks)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary left behind


@pytest.mark.parametrize(
    "kwargs, size_cut, needle",
    [
        (dict(magic=12345), 0, "bad magic 12345"),
        (dict(version=2), 0, "unsupported shard version 2"),
        (dict(n=4), 0, "header says 4 tokens"),
        (dict(), 1, "header says 3 tokens"),  # truncated mid-token
        (dict(), 1024 + 6 - 100, "shorter than the 1024-byte header"),
    ],
)
def test_every_rejection_names_the_file(tmp_path, kwargs, size_cut, needle):
    path = _raw_shard(tmp_path / "fineweb_val_000000.bin", **kwargs)
    if size_cut:
        path.write_bytes(path.read_bytes()[:-size_cut])
    with pytest.raises(tg.ShardError) as e:
        tg.load_shard(path)
    assert needle in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_pattern_and_id_above_vocab(tmp_path):
    with pytest.raises((FileNotFoundError, tg.ShardError), match="fineweb_val_"):  # ShardError once a UserError
        tg.load_token_split(str(tmp_path / tk.VAL_GLOB))
    _raw_shard(tmp_path / "fineweb_val_000000.bin", tokens=(1, 5, 1024))
    with pytest.raises(tg.ShardError, match="token id 1024 at position 2 is >= vocab size 1024"):
        tg.load_token_split(str(tmp_path / tk.VAL_GLOB), vocab_size=1024)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    """A full disk (fsync fails) or an interruption leaves no file under the final name and no temporary."""

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(tg.UserError, match="fineweb_train_000000.bin: cannot write it .No space left on device"):
        tk.write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(10))
    assert list(tmp_path.iterdir()) == []


def test_stream_docs_across_shard_boundaries(tmp_path):
    rng = np.random.default_rng(1)
    docs = [rng.integers(2, 1000, size=int(n)) for n in rng.integers(0, 40, size=60)]
    stream = np.concatenate([np.concatenate(([1], d)) for d in docs])
    cuts = [0, 7, 8, 9, 150, 151, 600, stream.size]  # includes a cut right after a BOS and one-token shards
    files = []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        files.append(tmp_path / dl.shard_name("train", i))
        tk.write_shard(files[-1], stream[a:b])
    got = list(dl.iter_stream_docs(files, "train"))
    assert len(got) == len(docs)
    for g, d in zip(got, docs):
        np.testing.assert_array_equal(g, d)


def test_stream_must_start_with_bos(tmp_path):
    tk.write_shard(tmp_path / "fineweb_val_000000.bin", np.array([5, 1, 6]))
    with pytest.raises(dl.DataError, match="does not start with BOS"):
        list(dl.iter_stream_docs([tmp_path / "fineweb_val_000000.bin"], "val"))


# ---------------------------------------------------------------------------------------------------------------------
# real data: the official val prefix and tokenizer (expectations from ../shared/data/MANIFEST.md)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official():
    sp = dl.load_tokenizer(shared_path("tokenizers", "fineweb_1024_bpe.model"))
    toks = tg.load_token_split(str(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin")), vocab_size=1024)
    return sp, toks


def test_val_prefix_reencodes_exactly(official):
    sp, toks = official
    docs = [json.loads(line) for line in shared_path("fineweb_val_prefix", "val_prefix_docs_sp1024.jsonl").open()]
    assert len(docs) == 108 and int((toks == tg.BOS_ID).sum()) == 109
    encoded = sp.encode([d["text"] for d in docs])
    for d, ids in zip(docs, encoded):
        assert toks[d["token_start"]] == tg.BOS_ID  # token_start points at the document's BOS
        assert [tg.BOS_ID, *ids] == toks[d["token_start"] : d["token_end"]].tolist()


def test_byte_rule_on_val_prefix(official):
    sp, toks = official
    tables = tg.build_byte_tables(sp, 1024)
    x, y = toks[:-1].astype(np.int64), toks[1:].astype(np.int64)
    assert y.size == 131_071 and tg.count_target_bytes(x, y, tables) == 315_257
    n = (toks.size - 1) // 1024 * 1024
    assert tg.count_target_bytes(x[:n], y[:n], tables) == 312_934
    # slow reference: per complete document, decoded UTF-8 length
    docs = list(dl.iter_stream_docs([shared_path("fineweb_val_prefix", "fineweb_val_000000.bin")], "val"))[:-1]
    for d in docs:
        d = d.astype(np.int64)
        rule = tg.count_target_bytes(np.concatenate(([1], d[:-1])), d, tables)
        assert rule == len(sp.decode(d.tolist()).encode("utf-8"))
