"""toolkit.py: the glue the command-line tools share, built on train_gpt.py (which stays self-contained).

train_gpt.py is the recipe a record runs alone; everything only the tools need lives here, once: the user-error
type and the one-line CLI runner, the shard writer, and (see the sections below) settings, model loading,
validation data, checkpoint I/O, packing and reports. quantize.py, eval_bpb.py, data/, records/ and benchmarks/
import this module; none keeps a copy of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import train_gpt as tg

ROOT = Path(__file__).resolve().parent
UserError = tg.UserError  # the one user-error type: one line, exit 2, no traceback


# =====================================================================================================================
# CLI
# =====================================================================================================================


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a tool's main: a UserError prints `error: ...` on one line and exits 2; Ctrl-C exits 130; any other
    exception is a bug and keeps its traceback."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial file was left under a final name", file=sys.stderr)
        return 130


# =====================================================================================================================
# SHARDS
# =====================================================================================================================


def shard_bytes(tokens: np.ndarray) -> bytes:
    """Serialise tokens (any integer array with values < 65536) as an official shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > 0xFFFF):
        raise tg.ShardError("token ids must be in [0, 65535] to fit the uint16 shard format")
    header = np.zeros(tg.SHARD_HEADER_INTS, dtype="<i4")
    header[:3] = (tg.SHARD_MAGIC, tg.SHARD_VERSION, tokens.size)
    return header.tobytes() + tokens.astype(tg.SHARD_TOKEN_DTYPE, copy=False).tobytes()


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write a shard atomically (no partial file under the final name on interruption or a full disk)."""
    tg.atomic_write_bytes(path, shard_bytes(tokens))
