"""Shared test helpers: the repository root and data tools on sys.path, and the shared real data (../shared/data)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
for _p in (REPO, REPO / "data"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the calling test with a reason when it is absent (a fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is absent (see ../shared/data/MANIFEST.md)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder (../shared/data); skips when absent."""
    return shared_path()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run in one intra-op thread: on two shared cores, two threads that fight other processes are several
    times slower than one, and results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
