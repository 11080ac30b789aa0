"""Bad inputs to a training run (issue 14): each is refused in one line before any work, names the file, setting
or value, changes no existing file and burns no RUN_ID (no log is created for a start that fails its checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SMALL

import toolkit as tk
import train_gpt as tg


def env_for(dataset, tmp_path, **over) -> dict[str, str]:
    return {
        **SMALL,
        **dataset,
        "LOG_DIR": str(tmp_path / "logs"),
        "RUN_ID": "r",
        "ARTIFACT_PATH": str(tmp_path / "art" / "r.pgz"),
        **{k: str(v) for k, v in over.items()},
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(env: dict[str, str], needle: str, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(tg.UserError) as e:
        tg.run(tg.Hyperparameters.from_env(env), tg.Dist())
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert snapshot(tmp_path) == before  # no file changed, none created (the RUN_ID is not burned)


def shards(tmp_path: Path, dataset, train: dict[str, bytes]) -> str:
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_val_000000.bin").write_bytes((Path(dataset["DATA_PATH"]) / "fineweb_val_000000.bin").read_bytes())
    for name, blob in train.items():
        (data / name).write_bytes(blob)
    return str(data)


def test_an_existing_artifact_is_not_replaced_without_overwrite(dataset, tmp_path):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "r.pgz").write_bytes(tg.ARTIFACT_MAGIC + b"an earlier artifact")
    refused(env_for(dataset, tmp_path), "r.pgz exists; choose another path or set OVERWRITE=1", tmp_path)


def test_the_script_itself_is_never_an_artifact_path(dataset, tmp_path):
    script = tmp_path / "train_gpt.py"
    script.write_text("print('a script')\n")
    refused(env_for(dataset, tmp_path, ARTIFACT_PATH=script, OVERWRITE=1), "is not an artifact", tmp_path)


@pytest.mark.parametrize(
    "train,needle",
    [
        ({"fineweb_train_000000.bin": tk.shard_bytes(np.zeros(0, np.uint16))}, "hold no tokens"),
        ({"fineweb_train_000000.bin": b"\0" * 2048}, "bad magic 0"),
        ({"fineweb_train_000000.bin": b""}, "shorter than the 1024-byte header"),
        ({"fineweb_train_000000.bin": tk.shard_bytes(np.array([1, 5, 3000, 7] * 300))}, "token id 3000"),
        ({"fineweb_train_000002.bin": tk.shard_bytes(np.array([1, 5, 7] * 300 + [4000]))}, "token id 4000 at position"),
    ],
)
def test_train_shards_are_checked_before_training(dataset, tmp_path, train, needle):
    """An empty split used to spin forever; a corrupt shard was found only when reached (step ~96 here), and a bad
    id in the last of three shards only when the run got there (minutes in at full size)."""
    ok = tk.shard_bytes(np.arange(2, 1002) % 1000)
    good = {"fineweb_train_000000.bin": ok, "fineweb_train_000001.bin": ok}
    data = shards(tmp_path, dataset, {**good, **train} if "id" in needle else train)
    refused(env_for(dataset, tmp_path, DATA_PATH=data), needle, tmp_path)


def test_a_read_only_log_folder_is_one_line(dataset, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders: the permission check cannot be exercised as root")
    (tmp_path / "logs").mkdir(mode=0o500)
    refused(env_for(dataset, tmp_path), "LOG_DIR", tmp_path)


def test_refusal_exits_2_with_one_line_and_no_log(dataset, tmp_path):
    env = {**os.environ, **env_for(dataset, tmp_path, RUN_ID="../../x")}
    out = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "RUN_ID='../../x': must be a plain name" in out.stderr and not (tmp_path / "logs").exists()


def test_help_lists_every_setting_and_touches_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "train_gpt.py"), "--help"], capture_output=True, text=True,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0 and list(tmp_path.iterdir()) == []
    for name, _ in tg.Hyperparameters.from_env({"RUN_ID": "x"}).flat().items():
        assert name == "preset" or f"\n  {name.upper()} " in out.stdout, name
    assert "[training schedule]" in out.stdout and "0 = off" in out.stdout
    sections = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert [s.split(" ")[0].strip("[]") for s in sections] == [
        "data", "training", "model", "optimisers", "evaluation", "quantisation", "runtime"
    ]  # a wrapped comment continues its setting's help and never becomes a section  # fmt: skip
    assert "instead of exporting" in next(line for line in out.stdout.splitlines() if line.startswith("  STOP_AFTER "))


def test_the_docstring_map_names_only_what_exists_in_section_order():
    """The MAP at the top of train_gpt.py is how a forker finds where to change a thing: every entry point it names
    exists (a function, class or a GPT method), and its sections are the file's banners, in order."""
    import re

    doc = tg.__doc__.split("MAP:")[1]
    names = {n for n in re.findall(r"\b[A-Za-z_]\w*\b", doc) if "_" in n.strip("_") or n[1:] != n[1:].lower()}
    names = {n for n in names if not n.isupper()} - {"AdamW", "LoRA"}  # settings and section titles are upper case
    missing = {n for n in names if not hasattr(tg, n) and not hasattr(tg.GPT, n)}
    assert len(names) > 50 and not missing, sorted(missing)
    source = Path(tg.__file__).read_text(encoding="utf-8")
    banners = re.findall(r"^# (\d+)\. ([A-Z]+)", source, flags=re.M)
    listed = re.findall(r"^ *(\d+)\. +([A-Z]+)", doc, flags=re.M)
    assert banners == listed and [int(n) for n, _ in banners] == list(range(1, len(banners) + 1)), (banners, listed)
