"""download against a local mirror built from real shards and the real tokenizer (no network)."""

from __future__ import annotations

import io
import json
import shutil
import urllib.request

import datalib as dl
import download as dn
import export as ex
import pytest
import verify as vf
from conftest import shared_path

NAME = "fineweb10B_sp1024"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A mirror in the official layout: manifest.json, datasets/<name>/ (the real val prefix shard + 3 train
    shards exported from real text), tokenizers/ (the official sp1024 files)."""
    root = tmp_path_factory.mktemp("mirror")
    ds = root / "datasets" / NAME
    tok = shared_path("tokenizers", "fineweb_1024_bpe.model")
    staging = root / "staging"
    ex.export([str(shared_path("text", "fineweb_docs_200.jsonl"))], tok, staging, val_docs=1, shard_tokens=250_000,
              quiet=True)
    ds.mkdir(parents=True)
    for f in dl.split_files(staging, "train"):
        shutil.copy(f, ds / f.name)
    shutil.rmtree(staging)
    shutil.copy(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin"), ds / "fineweb_val_000000.bin")
    (root / "tokenizers").mkdir()
    for suffix in (".model", ".vocab"):
        shutil.copy(tok.with_suffix(suffix), root / "tokenizers" / f"fineweb_1024_bpe{suffix}")
    n_train = len(dl.split_files(ds, "train"))
    manifest = {
        "datasets": [{"name": NAME, "tokenizer_name": "sp_bpe_1024", "vocab_size": 1024,
                      "stats": {"files_val": 1, "files_train": n_train, "docs_val": 109, "tokens_val": 131_072}},
                     {"name": "fineweb10B_sp4096", "tokenizer_name": "x", "stats": {}}],
        "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                        "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def same_bytes(a, b):
    return a.read_bytes() == b.read_bytes()


def test_download_from_folder_then_skip(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    got = dn.download("sp1024", 2, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"))
    names = [p.relative_to(out).as_posix() for p in got]
    assert names == [f"datasets/{NAME}/fineweb_val_000000.bin", f"datasets/{NAME}/fineweb_train_000000.bin",
                     f"datasets/{NAME}/fineweb_train_000001.bin", "tokenizers/fineweb_1024_bpe.model",
                     "tokenizers/fineweb_1024_bpe.vocab"]
    assert all(same_bytes(p, mirror / p.relative_to(out)) for p in got)
    assert (out / "datasets" / "manifest.json").is_file()
    assert not list(out.rglob(".*part*"))
    capsys.readouterr()
    dn.download("sp1024", 2, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"))
    err = capsys.readouterr().err
    assert err.count("present, skipped") == 5 and "0 fetched, 5 already present" in err
    # the official manifest one folder up drives verify's count checks (val only: 2 of 3 train shards present)
    report = vf.verify(out / "datasets" / NAME, out / "tokenizers" / "fineweb_1024_bpe.model", echo=False)
    assert not report.failures
    assert any("train counts not compared" in m for _, _, m in report.lines)


def test_file_url_and_truncated_local_file_is_refetched(mirror, tmp_path):
    out = tmp_path / "data"
    base = dn.base_url(mirror.as_uri(), dn.DEFAULT_REPO, "datasets")
    dn.download("sp1024", 1, out, base, quiet=True)
    shard = out / "datasets" / NAME / "fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:5000])  # a truncated file from some other tool
    dn.download("sp1024", 1, out, base, quiet=True)
    assert same_bytes(shard, mirror / "datasets" / NAME / shard.name)


def test_interrupted_transfer_leaves_no_file(mirror, tmp_path, monkeypatch):
    real_open = urllib.request.urlopen

    class Dies(io.RawIOBase):
        def __init__(self, resp):
            self.resp, self.headers, self.n = resp, resp.headers, 0

        def read(self, size=-1):
            self.n += 1
            if self.n == 2 and "train" in self.resp.url:
                raise ConnectionResetError("connection reset by peer")
            return self.resp.read(min(size, 4096))

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Dies(real_open(url, timeout=timeout)))
    out = tmp_path / "data"
    with pytest.raises(dl.DataError, match="transfer failed after 4096 bytes .connection reset by peer."):
        dn.download("sp1024", 1, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"), quiet=True)
    folder = out / "datasets" / NAME
    assert [p.name for p in folder.iterdir()] == ["fineweb_val_000000.bin"]  # no partial train shard, no temp


def test_sha256_in_manifest_is_enforced(mirror, tmp_path, capsys):
    bad = tmp_path / "mirror"
    shutil.copytree(mirror, bad)
    m = json.loads((bad / "manifest.json").read_text())
    rel = f"datasets/{NAME}/fineweb_val_000000.bin"
    m["files"] = {rel: {"sha256": "0" * 64}}
    (bad / "manifest.json").write_text(json.dumps(m))
    code = dl.run_cli(dn.main, ["--base-url", str(bad), "--out", str(tmp_path / "d"), "--train-shards", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "sha256 differs from the manifest" in err
    assert not (tmp_path / "d" / rel).exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--variant", "sp8192"], "no dataset 'fineweb10B_sp8192' (it lists: fineweb10B_sp1024, fineweb10B_sp4096)"),
        (["--train-shards", "9"], "has only 3 train shards"),
        (["--variant", "sp4096"], "lacks stats.files_val"),
    ],
)
def test_manifest_errors(mirror, tmp_path, capsys, argv, needle):
    code = dl.run_cli(dn.main, ["--base-url", str(mirror), "--out", str(tmp_path / "d"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1


def test_unreachable_source(tmp_path, capsys):
    assert dl.run_cli(dn.main, ["--base-url", str(tmp_path / "nope"), "--out", str(tmp_path / "d")]) == 2
    assert "no such folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert dl.run_cli(dn.main, ["--base-url", str(empty), "--out", str(tmp_path / "d")]) == 2
    assert "manifest.json: cannot fetch" in capsys.readouterr().err


def test_default_url_is_the_hf_resolve_url():
    assert dn.base_url(None, dn.DEFAULT_REPO, "datasets") == \
        "https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets/"
    assert dn.base_url(None, "kevclark/parameter-golf", "datasets").startswith(
        "https://huggingface.co/datasets/kevclark/parameter-golf/resolve/main/")
