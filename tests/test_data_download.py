"""download against a local mirror in the official layout, built from real shards, text and tokenizers (no network).

The behaviours mirror the official data/cached_challenge_fineweb.py: positional shard count and its default of 80,
any sp<N> / byte260 variant the manifest lists, --with-docs, --skip-manifest, the MATCHED_FINEWEB_* overrides, the
manifest kept at <out>/manifest.json; and the rebuild route from docs_selected.jsonl through export.py --official.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import urllib.error
import urllib.request

import datalib as dl
import download as dn
import export as ex
import numpy as np
import pytest
import verify as vf
from conftest import shared_path

import toolkit

NAME = "fineweb10B_sp1024"
BYTE = "fineweb10B_byte260"
N_DOCS, N_VAL = 40, 10  # the mirror's docs_selected.jsonl and its sidecar


def byte_tokens(texts):
    """The official pure-byte tokenizer: BOS, then each UTF-8 byte + 4."""
    return np.concatenate([np.array([1, *(b + 4 for b in t.encode("utf-8"))]) for t in texts])


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The official layout: manifest.json, docs_selected.jsonl (+ sidecar), datasets/fineweb10B_sp1024/ (the real val
    prefix shard + 3 train shards exported from real text), datasets/fineweb10B_byte260/, tokenizers/ (the official
    sp1024 files and a byte260 JSON)."""
    root = tmp_path_factory.mktemp("mirror")
    ds = root / "datasets" / NAME
    tok = shared_path("tokenizers", "fineweb_1024_bpe.model")
    docs = shared_path("text", "fineweb_docs_200.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    staging = root / "staging"
    ex.export(
        [str(shared_path("text", "fineweb_docs_200.jsonl"))], tok, staging, val_docs=1, shard_tokens=250_000, quiet=True
    )
    ds.mkdir(parents=True)
    for f in dl.split_files(staging, "train"):
        shutil.copy(f, ds / f.name)
    shutil.rmtree(staging)
    shutil.copy(shared_path("fineweb_val_prefix", "fineweb_val_000000.bin"), ds / "fineweb_val_000000.bin")
    texts = [json.loads(line)["text"] for line in docs[:3]]
    (root / "datasets" / BYTE).mkdir()
    toolkit.write_shard(root / "datasets" / BYTE / "fineweb_val_000000.bin", byte_tokens(texts[:1]))
    toolkit.write_shard(root / "datasets" / BYTE / "fineweb_train_000000.bin", byte_tokens(texts[1:]))
    (root / "tokenizers").mkdir()
    for suffix in (".model", ".vocab"):
        shutil.copy(tok.with_suffix(suffix), root / "tokenizers" / f"fineweb_1024_bpe{suffix}")
    (root / "tokenizers" / "fineweb_pure_byte_260.json").write_text('{"tokenizer_type": "pure_byte"}\n')
    (root / "docs_selected.jsonl").write_text("".join(docs[:N_DOCS]), encoding="utf-8")
    sidecar = json.loads(shared_path("text", "docs_selected.source_manifest.json").read_text())
    sidecar.update(num_docs=N_DOCS, docs_val=N_VAL, num_val_docs=N_VAL, docs_train=N_DOCS - N_VAL)
    (root / "docs_selected.source_manifest.json").write_text(json.dumps(sidecar))
    n_train = len(dl.split_files(ds, "train"))
    manifest = {
        "datasets": [
            {
                "name": NAME,
                "tokenizer_name": "sp_bpe_1024",
                "vocab_size": 1024,
                "stats": {"files_val": 1, "files_train": n_train, "docs_val": 109, "tokens_val": 131_072},
            },
            {"name": BYTE, "tokenizer_name": "pure_byte_260", "stats": {"files_val": 1, "files_train": 1}},
            {"name": "fineweb10B_sp4096", "tokenizer_name": "x", "stats": {}},
        ],
        "tokenizers": [
            {
                "name": "sp_bpe_1024",
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            },
            {"name": "pure_byte_260", "path": "tokenizers/fineweb_pure_byte_260.json"},
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def same_bytes(a, b):
    return a.read_bytes() == b.read_bytes()


def state(root):
    """Every file under root with the sha256 of its bytes: 'no existing file changed' is state(before) <= after."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(argv, capsys):
    code = toolkit.run_cli(dn.main, argv)
    return code, capsys.readouterr().err


def test_download_from_folder_then_skip(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    got = dn.download("sp1024", 2, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"))
    names = [p.relative_to(out).as_posix() for p in got]
    assert names == [
        f"datasets/{NAME}/fineweb_val_000000.bin",
        f"datasets/{NAME}/fineweb_train_000000.bin",
        f"datasets/{NAME}/fineweb_train_000001.bin",
        "tokenizers/fineweb_1024_bpe.model",
        "tokenizers/fineweb_1024_bpe.vocab",
    ]
    assert all(same_bytes(p, mirror / p.relative_to(out)) for p in got)
    assert same_bytes(out / "manifest.json", mirror / "manifest.json")  # where the official script keeps it
    assert not (out / "datasets" / "manifest.json").exists() and not list(out.rglob(".*part*"))
    assert not (out / "docs_selected.jsonl").exists()  # only with --with-docs
    capsys.readouterr()
    dn.download("sp1024", 2, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"))
    err = capsys.readouterr().err
    assert err.count("present, skipped") == 5 and "0 fetched, 5 already present" in err
    # verify finds the official manifest at <out>/manifest.json: val counts compared, train not (2 of 3 shards)
    report = vf.verify(out / "datasets" / NAME, out / "tokenizers" / "fineweb_1024_bpe.model", echo=False)
    assert not report.failures
    assert any(
        f"{out / 'manifest.json'} (official" in m and "train counts not compared" in m for _, _, m in report.lines
    )
    assert any("109 documents, 131,072 tokens, match the manifest" in m for _, _, m in report.lines)
    # and it compares them: a manifest that disagrees is a failure
    m = json.loads((out / "manifest.json").read_text())
    m["datasets"][0]["stats"]["docs_val"] = 110
    (out / "manifest.json").write_text(json.dumps(m))
    fails = vf.verify(out / "datasets" / NAME, out / "tokenizers" / "fineweb_1024_bpe.model", echo=False).failures
    assert fails == [
        f"val documents: the BOS (document) count is 109 but {out / 'manifest.json'} (official, dataset "
        f"{NAME}) says 110"
    ]


def test_positional_count_and_default_of_80(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    code, err = run(["--base-url", str(mirror), "--out", str(out), "--quiet", "2"], capsys)
    assert code == 0 and len(dl.split_files(out / "datasets" / NAME, "train")) == 2
    assert dn.build_parser().parse_args([]).train_shards == 80
    before = state(out)
    code, err = run(["--base-url", str(mirror), "--out", str(out)], capsys)  # the default asks for 80 of 3
    assert code == 2 and err == f"error: --train-shards 80: {NAME} has only 3 train shards\n"
    assert state(out) == before


def test_with_docs_and_byte260(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    got = dn.download(
        "byte260", 1, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"), quiet=True, with_docs=True
    )
    assert [p.relative_to(out).as_posix() for p in got] == [
        "docs_selected.jsonl",
        "docs_selected.source_manifest.json",
        f"datasets/{BYTE}/fineweb_val_000000.bin",
        f"datasets/{BYTE}/fineweb_train_000000.bin",
        "tokenizers/fineweb_pure_byte_260.json",
    ]
    assert all(same_bytes(p, mirror / p.relative_to(out)) for p in got)


def test_skip_manifest_uses_the_local_copy(mirror, tmp_path, capsys):
    out = tmp_path / "data"
    code, err = run(["--base-url", str(mirror), "--out", str(out), "0", "--skip-manifest"], capsys)
    assert code == 2 and err == (
        f"error: --skip-manifest: no local manifest at {out / 'manifest.json'}; run once "
        "without --skip-manifest to fetch it\n"
    )
    assert not out.exists()
    no_manifest = tmp_path / "mirror"
    shutil.copytree(mirror, no_manifest)
    (no_manifest / "manifest.json").unlink()
    out.mkdir()
    shutil.copy(mirror / "manifest.json", out / "manifest.json")
    code, err = run(["--base-url", str(no_manifest), "--out", str(out), "1", "--skip-manifest"], capsys)
    assert code == 0 and "warning" not in err and "4 fetched, 0 already present" in err
    assert same_bytes(
        out / "datasets" / NAME / "fineweb_train_000000.bin", mirror / "datasets" / NAME / "fineweb_train_000000.bin"
    )


def test_environment_overrides_pick_repo_and_root(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/their-export")
    monkeypatch.setenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "export_50B")
    urls = []

    def offline(url, timeout=None):
        urls.append(url)
        raise urllib.error.URLError("offline test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, err = run(["--out", str(tmp_path / "d")], capsys)
    want = "https://huggingface.co/datasets/someone/their-export/resolve/main/export_50B/manifest.json"
    assert (
        code == 2
        and urls == [want]
        and err == f"error: {want}: cannot fetch (offline test); check the network or --base-url\n"
    )
    code, err = run(["--out", str(tmp_path / "d"), "--repo", "x/y", "--remote-root", "r"], capsys)  # flags win
    assert urls[-1] == "https://huggingface.co/datasets/x/y/resolve/main/r/manifest.json"


def test_rebuild_from_docs_with_any_tokenizer(mirror, tmp_path, capsys):
    """The official download_hf_docs_and_tokenize.py route: fetch the docs, then export them with another tokenizer;
    the shards equal the official algorithm's (BOS + encode(text) per line, the sidecar's docs_val first, 10^8-token
    shards here cut at 20,000), and verify accepts them."""
    out = tmp_path / "data"
    dn.download("sp1024", 0, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"), quiet=True, with_docs=True)
    tok = shared_path("tokenizers", "fineweb_8192_bpe.model")
    folder = out / "datasets" / "fineweb10B_sp8192"
    code = toolkit.run_cli(
        ex.main,
        [
            "--docs",
            str(out / "docs_selected.jsonl"),
            "--official",
            "--tokenizer",
            str(tok),
            "--out",
            str(folder),
            "--shard-tokens",
            "20000",
            "--quiet",
        ],
    )
    assert code == 0
    sp = dl.load_tokenizer(tok)
    texts = [json.loads(line)["text"] for line in (out / "docs_selected.jsonl").open(encoding="utf-8")]
    for split, docs in (("val", texts[:N_VAL]), ("train", texts[N_VAL:])):
        stream = np.concatenate([[1, *ids] for ids in sp.encode(docs)]).astype("<u2")
        files = dl.split_files(folder, split)
        assert len(files) == -(-stream.size // 20_000)
        for i, f in enumerate(files):
            assert f.read_bytes() == toolkit.shard_bytes(stream[i * 20_000 : (i + 1) * 20_000])
    m = json.loads((folder / "manifest.json").read_text())
    assert m["official"] and m["sidecar"]["num_docs"] == N_DOCS and m["val_docs_requested"] == N_VAL
    assert not vf.verify(folder, tok, echo=False).failures
    assert vf.verify(folder, shared_path("tokenizers", "fineweb_1024_bpe.model"), echo=False).failures


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
    with pytest.raises(toolkit.UserError, match="transfer failed after 4096 bytes .connection reset by peer."):
        dn.download("sp1024", 1, out, dn.base_url(str(mirror), dn.DEFAULT_REPO, "datasets"), quiet=True)
    folder = out / "datasets" / NAME
    assert [p.name for p in folder.iterdir()] == ["fineweb_val_000000.bin"]  # no partial train shard, no temp


def test_file_url_and_truncated_local_file_is_refetched(mirror, tmp_path):
    out = tmp_path / "data"
    base = dn.base_url(mirror.as_uri(), dn.DEFAULT_REPO, "datasets")
    dn.download("sp1024", 1, out, base, quiet=True)
    shard = out / "datasets" / NAME / "fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:5000])  # a truncated file from some other tool
    dn.download("sp1024", 1, out, base, quiet=True)
    assert same_bytes(shard, mirror / "datasets" / NAME / shard.name)


def test_sha256_in_manifest_is_enforced(mirror, tmp_path, capsys):
    bad = tmp_path / "mirror"
    shutil.copytree(mirror, bad)
    m = json.loads((bad / "manifest.json").read_text())
    rel = f"datasets/{NAME}/fineweb_val_000000.bin"
    m["files"] = {rel: {"sha256": "0" * 64}}
    (bad / "manifest.json").write_text(json.dumps(m))
    code, err = run(["--base-url", str(bad), "--out", str(tmp_path / "d"), "--train-shards", "0"], capsys)
    assert code == 2 and "sha256 differs from the manifest" in err
    assert not (tmp_path / "d" / rel).exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["--variant", "sp8192"],
            "no dataset 'fineweb10B_sp8192' (it lists: fineweb10B_sp1024, fineweb10B_byte260, fineweb10B_sp4096)",
        ),
        (["--train-shards", "9"], "--train-shards 9: fineweb10B_sp1024 has only 3 train shards"),
        (["--variant", "sp4096"], "lacks stats.files_val"),
        (["--variant", "gpt2"], "--variant gpt2: expected sp<VOCAB_SIZE> (sp1024, sp4096, sp8192, ...) or byte260"),
        (["--train-shards", "-1"], "--train-shards -1 must be >= 0"),
    ],
)
def test_manifest_and_flag_errors(mirror, tmp_path, capsys, argv, needle):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("an existing file")
    before = state(out)
    code, err = run(["--base-url", str(mirror), "--out", str(out), *argv], capsys)
    assert code == 2 and needle in err and err.count("\n") == 1
    after = state(out)
    assert {k: after[k] for k in before} == before and set(after) <= {*before, "manifest.json"}


def test_malformed_manifest(mirror, tmp_path, capsys):
    bad = tmp_path / "mirror"
    shutil.copytree(mirror, bad)
    (bad / "manifest.json").write_text(json.dumps({"datasets": {"name": NAME}}))
    code, err = run(["--base-url", str(bad), "--out", str(tmp_path / "d"), "0"], capsys)
    assert code == 2 and err == (
        f"error: {bad.as_uri()}/manifest.json: 'datasets' is not a list of objects (not a parameter-golf manifest?)\n"
    )
    (bad / "manifest.json").write_text("[1, 2]")
    code, err = run(["--base-url", str(bad), "--out", str(tmp_path / "d"), "0"], capsys)
    assert code == 2 and "expected a JSON object with datasets and tokenizers" in err


def test_unreachable_source_and_out_a_file(tmp_path, capsys):
    code, err = run(["--base-url", str(tmp_path / "nope"), "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "no such folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run(["--base-url", str(empty), "--out", str(tmp_path / "d")], capsys)
    assert code == 2 and "manifest.json: cannot fetch" in err
    (tmp_path / "f").write_text("x")
    code, err = run(["--base-url", str(empty), "--out", str(tmp_path / "f")], capsys)
    assert code == 2 and err == f"error: --out {tmp_path / 'f'}: is a file, not a folder\n"
    assert (tmp_path / "f").read_text() == "x"


def test_default_url_is_the_hf_resolve_url():
    assert (
        dn.base_url(None, dn.DEFAULT_REPO, "datasets")
        == "https://huggingface.co/datasets/willdepueoai/parameter-golf/resolve/main/datasets/"
    )
    assert dn.base_url(None, "kevclark/parameter-golf", "datasets").startswith(
        "https://huggingface.co/datasets/kevclark/parameter-golf/resolve/main/"
    )
