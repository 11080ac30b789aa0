"""eval_bpb.py: score a model in bits per byte, or let it write text; a command-line tool over train_gpt.py's
EVALUATION section (it keeps no copy of the scoring code).

    PRESET=tiny python eval_bpb.py --artifact model.pgz --val 'data/sample/fineweb_val_*.bin' --mode flat
    python eval_bpb.py --checkpoint model.ckpt.pt --mode ttt --ttt-mode lora
    python eval_bpb.py --artifact old.pgz --code records/track_10min_16mb/2026-05-01_x/train_gpt.py --trust-code
    python eval_bpb.py --official-artifact final_model.int8.ptz --mode flat --val ... --tokenizer ...
    torchrun --standalone --nproc_per_node=2 eval_bpb.py --artifact model.pgz --mode sliding   # gloo on CPU
    python eval_bpb.py --artifact model.pgz --sample "The capital of France" --max-new-tokens 60 --top-k 40

Settings, lowest precedence first: Hyperparameters defaults (PRESET and the upper-case environment variables, as
for train_gpt.py), the hyperparameters a float checkpoint recorded, the model config stored in the artifact or
checkpoint, then the flags below. --code imports that train_gpt.py by path and uses its own build_model,
read_artifact/load_checkpoint and eval functions, so a past record's artifact is rescored by the code that made it:
importing a file RUNS it, so --code needs --trust-code. --official-checkpoint / --official-artifact read the public
baseline's own final_model.pt / final_model.int8.ptz (pickles, loaded with torch.load(weights_only=True): nothing in
them runs; anything but tensors, str, int, float, dict and list is refused) into PRESET=baseline's model, names
mapped, dequantised as the official code does, and score them with this toolkit's metric.
Prints `NAME val_loss:… val_bpb:…` and `NAME_exact …` with 8 decimals, targets, bytes, the scoring-loop time and the
full wall time; while scoring, a progress line on stderr at most every --progress-every seconds. Exit status 2 with a
one-line message on bad input.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

import toolkit as tk

NEEDED = (
    "Hyperparameters",
    "setting_fields",
    "build_model",
    "read_artifact",
    "load_validation",
    "eval_flat",
    "eval_sliding",
    "eval_ttt",
    "init_distributed",
    "cleanup_distributed",
    "ModelConfig",
    "check_shapes",
)
FLAG_FIELDS = {  # flag dest -> Hyperparameters field
    "seq_len": "eval_seq_len", "stride": "eval_stride", "batch_seqs": "eval_batch_seqs", "loops": "eval_loops",
    "ttt_mode": "ttt_mode", "ttt_chunk_tokens": "ttt_chunk_tokens", "ttt_lr": "ttt_lr", "ttt_epochs": "ttt_epochs",
    "ttt_momentum": "ttt_momentum", "ttt_grad_clip": "ttt_grad_clip", "ttt_lora_rank": "ttt_lora_rank",
    "ttt_lora_lr": "ttt_lora_lr", "ttt_lora_chunk": "ttt_lora_chunk", "ttt_lora_docs": "ttt_lora_docs",
    "device": "device", "seed": "seed",
}  # fmt: skip
PROGRESS_EVERY = 5.0  # seconds between progress lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--artifact", help="a quantised artifact written by train_gpt.py / quantize.py")
    src.add_argument("--checkpoint", help="a float checkpoint written by train_gpt.py (save_checkpoint)")
    src.add_argument(
        "--official-checkpoint",
        metavar="FINAL_MODEL_PT",
        help="the official baseline's final_model.pt (a torch.save'd state_dict), scored by PRESET=baseline's model",
    )
    src.add_argument(
        "--official-artifact",
        metavar="FINAL_MODEL_INT8_PTZ",
        help="the official baseline's final_model.int8.ptz (zlib + torch.save'd int8 object), dequantised as the\n"
        "official code does and scored by PRESET=baseline's model",
    )
    p.add_argument(
        "--code",
        help="score with THIS train_gpt.py (e.g. a record's), imported by path: this RUNS the file, so it also\n"
        "needs --trust-code",
    )
    p.add_argument("--trust-code", action="store_true", help="allow --code to import (run) its file")
    p.add_argument("--val", help=f"glob of val shards (default: DATA_PATH/{tk.VAL_GLOB})")
    p.add_argument("--tokenizer", help="SentencePiece .model (default: TOKENIZER_PATH)")
    p.add_argument("--mode", choices=("flat", "sliding", "ttt"), default="sliding", help="default: sliding")
    p.add_argument("--name", help="label of the printed lines (default: eval_MODE)")
    p.add_argument("--include-tail", action="store_true", help="also score the tail the official loader drops")
    p.add_argument("--max-tokens", type=int, default=0, help="score only this many val targets (quick checks)")
    p.add_argument(
        "--progress-every",
        type=float,
        default=PROGRESS_EVERY,
        metavar="SECONDS",
        help=f"a progress line on stderr at most this often while scoring (default {PROGRESS_EVERY:g}; 0 = none)",
    )
    g = p.add_argument_group("window and TTT knobs (default: what the checkpoint or artifact recorded, or the preset)")
    g.add_argument("--seq-len", type=int, help="window length (EVAL_SEQ_LEN)")
    g.add_argument("--stride", type=int, help="sliding-window stride (EVAL_STRIDE)")
    g.add_argument("--batch-seqs", type=int, help="windows per forward (EVAL_BATCH_SEQS)")
    g.add_argument("--loops", type=int, help="times the recurrent span runs (EVAL_LOOPS)")
    g.add_argument("--ttt-mode", choices=("sgd", "lora", "phased"), help="TTT flavour for --mode ttt")
    for flag, kind in (
        ("chunk-tokens", int),
        ("lr", float),
        ("epochs", int),
        ("momentum", float),
        ("grad-clip", float),
        ("lora-rank", int),
        ("lora-lr", float),
        ("lora-chunk", int),
        ("lora-docs", int),
    ):
        g.add_argument(f"--ttt-{flag}", type=kind, help=f"TTT_{flag.upper().replace('-', '_')}")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: DEVICE (auto)")
    s = p.add_argument_group("text generation (instead of scoring)")
    s.add_argument("--sample", metavar="PROMPT", help="decode a continuation of PROMPT and print it")
    s.add_argument(
        "--probe",
        metavar="FILE",
        help="score each item of FILE (.jsonl with a text field, or plain text with items separated by blank lines) "
        "alone: tokens, loss and bpb per item; --probe-samples of them also get a continuation of their opening",
    )
    s.add_argument("--probe-samples", type=int, default=3, help="items that get a continuation (default 3)")
    s.add_argument("--max-new-tokens", type=int, default=100)
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=50, help="0 = the whole vocabulary")
    s.add_argument("--seed", type=int, help="sampling seed (default: SEED)")
    return p.parse_args(argv)


def load_code(path: str | None, trusted: bool = False) -> ModuleType:
    """The train_gpt module: ours, or the file at `path` imported (so run) under its own name, only if `trusted`."""
    if path is None:
        import train_gpt

        return train_gpt
    if not trusted:
        raise tk.UserError(f"--code {path} runs that file as Python (it imports it); pass --trust-code if you trust it")
    file = Path(path)
    if not file.is_file():
        raise tk.UserError(f"--code {path}: no such file")
    name = f"rescore_{abs(hash(str(file.resolve())))}"
    # an explicit source loader: the suffix decides nothing (README.md is read as Python and fails as such)
    spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, str(file)))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(file)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # a SyntaxError for a file that is not Python, or the file's own error
        sys.modules.pop(spec.name, None)
        msg = str(e).splitlines()[0] if str(e) else ""
        raise tk.UserError(f"--code {path}: importing it failed ({type(e).__name__}: {msg})") from None
    missing = [name for name in NEEDED if not hasattr(module, name)]
    if missing:
        raise tk.UserError(
            f"--code {path} does not define {', '.join(missing)}: it is not a train_gpt.py this tool "
            "can rescore with (needs the build_model / eval_* API of this toolkit)"
        )
    return module


def make_hparams(tg: ModuleType, args: argparse.Namespace, loaded: tk.Loaded):
    """Settings: flags > environment > what the checkpoint recorded > its model config > preset."""
    flags = {FLAG_FIELDS[k].upper(): v for k, v in vars(args).items() if k in FLAG_FIELDS and v is not None}
    flags.update(VAL_MAX_TOKENS=args.max_tokens or None, INCLUDE_TAIL=1 if args.include_tail else None)
    if (args.mode != "sliding" or args.probe or args.sample) and args.stride is None:
        flags["EVAL_STRIDE"] = 0  # only the sliding mode uses a stride: the model's own may exceed --seq-len
    if args.mode != "ttt":
        flags["TTT_MODE"] = "off"  # only --mode ttt adapts: the TTT settings (the frontier's phased) do not apply

    return tk.settings({**loaded.recorded, **loaded.config}, flags, code=tg)


def generate(
    model: torch.nn.Module,
    ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    window: int,
    device: torch.device,
    gen: torch.Generator,
) -> list[int]:
    """Autoregressive decoding from the model's own soft-capped logits (context: the last `window` tokens)."""
    out = list(ids)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            ctx = torch.tensor(out[-window:], dtype=torch.long, device=device)[None]
            logits = model(ctx)[0, -1].float().cpu()
            if temperature == 0:
                out.append(int(logits.argmax()))
                continue
            logits = logits / temperature
            if 0 < top_k < logits.numel():
                logits[logits < torch.topk(logits, top_k).values[-1]] = -float("inf")
            out.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
    return out


def check_args(args: argparse.Namespace) -> None:
    for name in ("seq_len", "batch_seqs", "ttt_chunk_tokens", "ttt_lora_rank", "ttt_lora_chunk", "ttt_lora_docs"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise tk.UserError(f"--{name.replace('_', '-')} {value}: must be positive")
    if args.stride is not None and args.stride <= 0:
        raise tk.UserError(f"--stride {args.stride}: must be positive (windows would never advance)")
    if args.progress_every < 0:
        raise tk.UserError(f"--progress-every {args.progress_every}: must be >= 0 (0 = no progress lines)")
    if args.max_tokens < 0 or args.max_new_tokens <= 0 or args.temperature < 0 or args.top_k < 0:
        raise tk.UserError("--max-tokens, --temperature and --top-k must be >= 0 and --max-new-tokens positive")


def run(args: argparse.Namespace, t_start: float) -> None:
    import sentencepiece as spm

    check_args(args)
    official = args.official_checkpoint or args.official_artifact
    if official and args.code:
        raise tk.UserError("--code cannot score --official-*: the official files are scored by PRESET=baseline's model")
    tg = load_code(args.code, args.trust_code)
    loaded = load(args, tg)
    h = make_hparams(tg, args, loaded)
    tok_path = args.tokenizer or h.tokenizer_path
    if not Path(tok_path).is_file():
        raise tk.UserError(f"tokenizer {tok_path}: no such file (pass --tokenizer)")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(tok_path))
    except (RuntimeError, OSError) as e:  # sentencepiece's error for a file that is not a model
        raise tk.UserError(f"tokenizer {tok_path}: not a SentencePiece model ({str(e).splitlines()[0]})") from None
    if int(sp.vocab_size()) != h.model.vocab_size:
        raise tk.UserError(
            f"the model's vocab_size {h.model.vocab_size} differs from the tokenizer's "
            f"{sp.vocab_size()} ({tok_path}): pass the tokenizer the model was trained with"
        )
    d = tg.init_distributed(h.device)
    try:
        model = loaded.model.to(d.device).eval()
        model.set_loops(tk.eval_loops(h.model))
        if args.sample is not None or args.probe is not None:
            if d.rank == 0:
                (sample if args.sample is not None else probe)(model, sp, args, h, d)
            return
        score(tg, model, tok_path, args, h, d, t_start)
    finally:
        tg.cleanup_distributed()


def load(args: argparse.Namespace, tg: ModuleType) -> tk.Loaded:
    """The model of whichever source was given; a file of the official format under --artifact / --checkpoint is
    refused with the flag that reads it."""
    if args.official_checkpoint or args.official_artifact:
        return tk.load_official(args.official_checkpoint, args.official_artifact)
    try:
        return tk.load_model(args.artifact, args.checkpoint, code=tg)
    except tk.UserError as e:
        kind = tk.sniff_official(args.artifact or args.checkpoint)
        if kind:
            raise tk.UserError(f"{e}; it looks like an official baseline file: pass it as --official-{kind}") from None
        raise


def sample(model: torch.nn.Module, sp, args: argparse.Namespace, h, d) -> None:
    gen = torch.Generator().manual_seed(h.seed)
    ids = [int(sp.bos_id())] + sp.encode(args.sample)
    out = generate(
        model, ids, args.max_new_tokens, args.temperature, args.top_k, h.effective_eval_seq_len, d.device, gen
    )
    print(sp.decode(out[1:]), flush=True)


PROBE_PROMPT_TOKENS = 32  # a probe continuation starts from the item's first tokens


def probe_items(path: str) -> list[str]:
    """The items of a probe file: a .jsonl's "text" fields, or blank-line separated blocks of a text file."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise tk.UserError(f"--probe {path}: cannot read it as UTF-8 text ({e})") from None
    if path.endswith(".jsonl"):
        items = []
        for n, line in enumerate(raw.splitlines(), 1):
            try:
                obj = json.loads(line) if line.strip() else None
            except json.JSONDecodeError as e:
                raise tk.UserError(f"--probe {path}: line {n} is not JSON ({e.msg})") from None
            if obj is not None:
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise tk.UserError(f'--probe {path}: line {n} has no "text" string')
                items.append(obj["text"])
    else:
        items = [b.strip() for b in raw.split("\n\n") if b.strip()]
    if not items:
        raise tk.UserError(f"--probe {path}: no items")
    return items


def probe(model: torch.nn.Module, sp, args: argparse.Namespace, h, d) -> None:
    """Each item scored alone (BOS + its tokens; items longer than the window in windows of it, each with only its
    own context): tokens, bytes (the byte rule; a CaseOps tokenizer has none, so no bpb), nats per token and bpb."""
    tg_ = tk.tg  # the byte rule and the tokenizer check of this toolkit's train_gpt.py
    tables, window = tg_.build_byte_tables(sp, h.model.vocab_size), h.effective_eval_seq_len
    caseops = tg_.is_caseops_tokenizer(sp)
    gen, total = torch.Generator().manual_seed(h.seed), [0.0, 0]
    for i, text in enumerate(probe_items(args.probe)):
        ids = np.array([int(sp.bos_id())] + sp.encode(text), dtype=np.int64)
        if len(ids) < 2:
            print(f"probe item:{i} tokens:0 (empty)")
            continue
        loss = 0.0
        with torch.inference_mode():
            for a in range(0, len(ids) - 1, window):
                chunk = torch.from_numpy(ids[a : a + window + 1]).to(d.device)[None]
                loss += float(model(chunk[:, :-1], chunk[:, 1:], reduction="none").double().sum())
        n = len(ids) - 1
        nbytes = tg_.count_target_bytes(ids[:-1], ids[1:], tables)
        bpb = "-" if caseops or not nbytes else f"{loss / (math.log(2) * nbytes):.4f}"
        total = [total[0] + loss, total[1] + n]
        print(f"probe item:{i} tokens:{n} bytes:{nbytes} loss:{loss / n:.4f} bpb:{bpb} text:{text[:60]!r}")
        if i < args.probe_samples:
            out = generate(model, ids[: PROBE_PROMPT_TOKENS + 1].tolist(), args.max_new_tokens, args.temperature,
                           args.top_k, window, d.device, gen)  # fmt: skip
            print(f"probe item:{i} continuation: {sp.decode(out[1:])!r}")
    print(f"probe items:{i + 1} tokens:{total[1]} loss:{total[0] / max(total[1], 1):.4f}", flush=True)


def score(tg: ModuleType, model: torch.nn.Module, tok_path: str, args: argparse.Namespace, h, d, t_start) -> None:
    main = d.rank == 0
    tables, val = tg.load_validation(h, tok_path, args.val)
    if args.mode == "ttt" and h.ttt_mode == "off":
        raise tk.UserError("--mode ttt needs --ttt-mode sgd, lora or phased (or TTT_MODE)")
    if main:
        knobs = f"window:{h.effective_eval_seq_len} stride:{h.eval_stride} batch_seqs:{h.eval_batch_seqs}"
        if args.mode == "ttt":
            knobs += f" ttt_mode:{h.ttt_mode}"
        print(
            f"rescore source:{args.artifact or args.checkpoint or args.official_checkpoint or args.official_artifact} "
            f"code:{args.code or 'train_gpt.py'} "
            f"mode:{args.mode} {knobs} loops:{tk.eval_loops(h.model)} world_size:{d.world_size} "
            f"device:{d.device.type} val_tokens:{len(val)}",
            flush=True,
        )
    name = args.name or f"eval_{args.mode}"
    lines = (
        (lambda m: print(f"progress {name}: {m}", file=sys.stderr, flush=True))
        if main and args.progress_every
        else None
    )
    fn = {"flat": tg.eval_flat, "sliding": tg.eval_sliding, "ttt": tg.eval_ttt}[args.mode]  # in NEEDED: any --code
    res = fn(model, val, tables, h, d, progress=lines, progress_every=args.progress_every)
    if main:
        wall = time.perf_counter() - t_start
        times = f" eval_time:{1000 * res.seconds:.0f}ms wall_time:{1000 * wall:.0f}ms"
        print("\n".join(tk.tg.score_lines(name, res, exact_extra=f" targets:{res.targets} bytes:{res.bytes}{times}")))
        sys.stdout.flush()


def _main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    run(parse_args(argv), t_start)
    return 0


def main(argv: list[str] | None = None) -> int:
    return tk.run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
