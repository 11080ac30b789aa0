"""What `build` writes besides the logs and the code: submission.json, the README and requirements.txt, every number
taken from the logs."""

from __future__ import annotations

import ast
import sys
import textwrap

from record_stats import RECORD_MARGIN_NATS
from rules import BYTE_LIMIT, PACKED_NAME, Finding, RunLog

STDLIB = set(sys.stdlib_module_names)
PER_RUN_KEYS = ("seed", "run_id", "artifact_path")  # config keys that differ between the seeds of one record


def log_name(run: RunLog) -> str:
    """The file name a seed's log gets in the folder."""
    return f"train_seed{run.seed}.log"


def _round(x: float | None, nd: int = 8) -> float | None:
    return None if x is None else round(x, nd)


def submission_json(runs: list[RunLog], meta: dict, stats: dict, findings: list[Finding], code_bytes: int) -> dict:
    env, max_bytes = runs[0].header, max(r.total_bytes for r in runs)
    errors = {f.what for f in findings if f.level == "error"}
    sub = {
        **{k: meta[k] for k in ("author", "github_id", "name", "blurb", "date", "track")},
        **{k: _round(stats[k]) for k in ("val_loss", "val_bpb", "val_loss_std", "val_bpb_std")},
        "seeds": [r.seed for r in runs],
        "seed_results": {
            str(r.seed): {
                "val_loss": _round(r.score.val_loss),
                "val_bpb": _round(r.score.val_bpb),
                "artifact_bytes": r.total_bytes,
                "steps": r.steps,
                "step_avg_ms": _round(r.step_avg_ms, 2),
                "train_time_s": _round(r.train_time_ms / 1e3, 3),
                "eval_time_s": _round(r.eval_time_ms / 1e3, 3),
                "log": log_name(r),
            }
            for r in runs
        },
        "score_metric": runs[0].score.name,
        "bytes_total": max_bytes,
        "bytes_code": code_bytes,
        "artifact_bytes_max": max_bytes,
        "code_policy": runs[0].code_policy,
        "hardware": f"{env.get('world_size', '1')}x {env.get('device', 'unknown device')}",
        "python_version": env.get("python"),
        "pytorch_version": env.get("torch"),
        "cuda_version": env.get("cuda"),
        "source_sha256": runs[0].source_sha256,
        "compliance": {
            "train_under_600s": all(r.train_time_ms + (r.gptq_calibration_ms or 0) <= 600e3 for r in runs),
            "artifact_under_16mb": max_bytes <= BYTE_LIMIT,
            "eval_under_600s": all(r.eval_time_ms <= 600e3 for r in runs),
            "three_seeds": len(runs) >= 3,
            "same_code_all_seeds": not any("different code" in e for e in errors),
            "code_matches_logs": not any("differs from the code" in e for e in errors),
        },
    }
    if meta.get("technique_summary"):
        sub["technique_summary"] = meta["technique_summary"]
    for key in ("vs_previous_best", "vs_against"):
        if key in stats:
            sub[key] = {k: _round(v) if isinstance(v, float) else v for k, v in stats[key].items()}
    sub["generated_by"] = "records/records.py build (every number from the logs)"
    return sub


def requirements_for(source: bytes) -> list[str]:
    """Third-party packages the script imports, beyond torch (whose build depends on the machine)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return sorted(names - STDLIB - {"torch", "__future__"})  # every module the toolkit imports has its pip name


def readme_text(sub: dict, runs: list[RunLog]) -> str:
    rows = [
        f"| {seed} | {r['steps']} | {r['train_time_s']:.1f} | {r['eval_time_s']:.1f} | {r['val_loss']:.8f} | "
        f"{r['val_bpb']:.8f} | {r['artifact_bytes']:,} |"
        for seed, r in sub["seed_results"].items()
    ]
    std = f", std {sub['val_bpb_std']:.8f}" if sub["val_bpb_std"] is not None else ""
    lines = [
        f"# {sub['name']}",
        "",
        f"**val_bpb {sub['val_bpb']:.8f}** ({len(runs)}-seed mean{std}) | val_loss "
        f"{sub['val_loss']:.8f} nats | max artifact {sub['bytes_total']:,} bytes | {sub['hardware']} | track "
        f"`{sub['track']}`",
        "",
    ]
    if "cpu" in sub["hardware"].lower() and "cuda" not in sub["hardware"].lower():
        lines += [
            "> **CPU-sized configuration.** These runs trained a small model on a CPU for a short time. They "
            "show that the toolkit works end to end; the score is not comparable with 8xH100 records.",
            "",
        ]
    lines += [
        "## Results (from the logs)",
        "",
        f"Score line: `{sub['score_metric']}`. Code bytes counted with the `{sub['code_policy']}` policy.",
        "",
        "| Seed | Steps | Train time (s) | Eval time (s) | val_loss (nats) | val_bpb | Artifact bytes |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    if v := sub.get("vs_previous_best"):
        lines += [
            f"Against the previous best {v['prev_best_loss']:.6f} nats ({v['prev_best_bpb']:.6f} bpb): "
            f"{v['test']} against {v['target_loss']:.6f} nats (best - {RECORD_MARGIN_NATS} nats): "
            f"t = {v['t']:.4f}, df = {v['df']}, p = {v['p_value']:.3g}.",
            "",
        ]
    if v := sub.get("vs_against"):
        lines += [f"{v['test']}: t = {v['t']:.4f}, df = {v['df']:.2f}, p = {v['p_value']:.3g}.", ""]
    lines += ["## Compliance (checked by `records/records.py check`)", ""]
    lines += [f"- {k}: {'yes' if ok else 'NO'}" for k, ok in sub["compliance"].items()]
    cfg = " ".join(f"{k}:{v}" for k, v in runs[0].config.items() if k not in PER_RUN_KEYS)
    lines += [
        "",
        "## Configuration (resolved, from the first log's run_summary)",
        "",
        "```",
        textwrap.fill(cfg, 116, break_long_words=False) if cfg else "(the log lists no configuration)",
        "```",
        "",
        "## Reproduce",
        "",
        f"Seeds {', '.join(str(r.seed) for r in runs)}; every log lists its full configuration.",
        "TODO(author): the exact command line (environment variables and launcher).",
        "",
    ]
    for title, todo in [
        ("What changed", "what this submission changes against its starting point."),
        ("Why", "why it should help; negative results are welcome too."),
        ("Credits", "where each idea came from (people, pull requests, papers)."),
    ]:
        lines += [f"## {title}", "", f"TODO(author): {todo}", ""]
    lines += [
        "## Included files",
        "",
        "- `README.md`, `submission.json` (generated by `records/records.py build`)",
        "- `train_gpt.py` (the exact code the logs ran)",
    ]
    if sub["code_policy"] == "packed":
        lines.append(f"- `{PACKED_NAME}` (self-extracting form whose bytes are counted)")
    return "\n".join(lines + [f"- `{log_name(r)}`" for r in runs]) + "\n"
