"""report.json and report.md of a run, and the table printed on the terminal."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from rankdistill.paths import atomic_write_text
from rankdistill.pipeline import REPORT_METRICS, RunConfig, RunResult, config_dict, gap_recovered

MODEL_ORDER = ("popularity", "teacher", "student", "distilled")


def build_report(result: RunResult, config: RunConfig) -> dict:
    data, split = result.data, result.split
    models = {name: result.models[name].summary() for name in MODEL_ORDER if name in result.models}
    m = {name: tm.metrics for name, tm in result.models.items()}
    report = {
        "dataset": {"name": data.name, "users": data.n_users, "items": data.n_items, "interactions": len(data),
                    "train": split.train.nnz, "valid": split.valid.nnz, "test": split.test.nnz,
                    "dropped": split.dropped, "source": data.source, "split_options": split.options},
        "protocol": {"split": split.kind, "candidates": "all-unseen-items", "k": list(config.ks),
                     "selection": f"validation {config.train.select_metric}", "sampled": False,
                     "ties": "score descending, then item index ascending"},
        "models": models,
        "gap_recovered": gap_recovered(m["teacher"], m["student"], m["distilled"]) if "distilled" in m else {},
        "sizes": [{"embedding_dim": dim, "params": alone.model.num_parameters(),
                   "student": {k: round(v, 6) for k, v in alone.metrics.items()},
                   "distilled": {k: round(v, 6) for k, v in taught.metrics.items()},
                   **({"fidelity": {"student": alone.summary().get("fidelity"),
                                    "distilled": taught.summary().get("fidelity")}} if taught.fidelity else {})}
                  for dim, (alone, taught) in sorted(result.sizes.items())],
        "config": config_dict(config),
        "seconds": round(result.seconds, 2),
        "timings": {**result.timings, "total": round(result.seconds + result.timings.get("load", 0.0), 2)},
        "curves": curves(result, config.train.select_metric),
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": config.device, "threads": torch.get_num_threads()},
    }
    return report


def curves(result: RunResult, metric: str) -> dict[str, list[list[float]]]:
    """Every trained model's validation ``metric`` against the wall-clock seconds since its training began:
    {model: [[seconds, value], ...]}, the ``--kd auto`` pilots as ``pilot <spec>``."""
    out = {}
    for name, trained in result.models.items():
        if trained.fit is not None:
            out[name] = [[h["elapsed_seconds"], h["valid"][metric]] for h in trained.fit.history
                         if "elapsed_seconds" in h and metric in h["valid"]]
        for spec, points in (trained.auto or {}).get("pilot_curves", {}).items():
            out[f"pilot {spec}"] = points
    return {k: v for k, v in out.items() if v}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, path: str | Path, title: str, xlabel: str, ylabel: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    _pyplot().close(fig)
    return Path(path)


def plot_curves(report: dict, path: str | Path) -> Path:
    """Validation NDCG@20 against wall-clock seconds, one line per model trained (pilots dashed)."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2), dpi=120)
    for name, points in report["curves"].items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, "--" if name.startswith("pilot") else "o-", label=name, markersize=3,
                alpha=0.6 if name.startswith("pilot") else 1.0)
    return _save(fig, ax, path, f"{report['dataset']['name']}: validation against time",
                 "seconds since the model's training began", report["protocol"]["selection"])


def timings_table(report: dict) -> str:
    """Where the time went: one row per phase (a model's training, its validation share and its test
    evaluation), with its share of the total."""
    t = report["timings"]
    total = t["total"] or 1.0
    lines = ["| phase | seconds | share |", "|---|---|---|"]
    for phase, value in t.items():
        if phase == "total":
            continue
        if isinstance(value, dict):
            parts = [f"{k} {v:.1f} s" for k, v in value.items() if k != "total"]
            lines.append(f"| {phase} ({', '.join(parts)}) | {value['total']:.1f} | {value['total'] / total:.0%} |")
        else:
            lines.append(f"| {phase} | {value:.1f} | {value / total:.0%} |")
    lines.append(f"| total | {t['total']:.1f} | 100% |")
    return "\n".join(lines)


def metric_columns(ks: list[int]) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in REPORT_METRICS]


def table(report: dict) -> str:
    """A markdown table: one row per model, params, train time and the metrics."""
    cols = metric_columns(report["protocol"]["k"])
    head = ["model", "dim", "params", "train s"] + cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in report["models"].items():
        label = f"{name} ({m['method']})" if "method" in m else name
        row = [label, str(m["embedding_dim"]), f"{m['params']:,}", f"{m['train_seconds']:.1f}"]
        row += [f"{m['metrics'][c]:.4f}" for c in cols]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    d, p = report["dataset"], report["protocol"]
    gap = ", ".join(f"{k} {'n/a' if v is None else f'{100 * v:.0f}%'}" for k, v in report["gap_recovered"].items())
    return "\n".join([
        f"# rankdistill run on {d['name']}",
        "",
        f"{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions "
        f"(train {d['train']:,}, valid {d['valid']:,}, test {d['test']:,}). Dropped: {d['dropped'] or 'nothing'}.",
        f"Protocol: {p['split']} split, full ranking over all unseen items, model selection on "
        f"{p['selection']}; test means over users.",
        "",
        table(report),
        "",
        f"Teacher–student gap recovered by distillation: {gap}.",
        *serving_lines(report),
        *_auto_lines(report),
        *_fidelity_lines(report),
        f"Total time {report['seconds']:.1f} s on {report['environment']['device']}.",
        "",
    ])


def serving_lines(report: dict, metric: str = "ndcg@20") -> list[str]:
    """The serving cost table: bytes fp32 and int8 (fused 8-bit rows, as `export --quantize int8` stores them),
    the time to score all items for one user and take the top 100, and ``metric`` in fp32 and int8."""
    rows = [(name, m) for name, m in report["models"].items() if m.get("serving")]
    if not rows:
        return []
    threads = rows[0][1]["serving"]["threads"]
    lines = ["", f"Serving cost (ms: score every item for one user and take the top 100, median and p99 over "
                 f"users, {threads} thread(s); int8: `rankdistill export --quantize int8`):", "",
             f"| model | dim | bytes fp32 | bytes int8 | int8/fp32 | ms/user p50 | ms/user p99 | {metric} fp32 | "
             f"{metric} int8 |", "|" + "---|" * 9]
    for name, m in rows:
        s = m["serving"]
        b, t, low = s["bytes"], s["ms_per_user"], s.get("int8_metrics") or {}
        fp32_value, int8_value = (f"{v[metric]:.4f}" if metric in v else "–" for v in (m["metrics"], low))
        lines.append(f"| {name} | {m['embedding_dim']} | {b['fp32']:,} | {b['int8']:,} | {b['int8'] / b['fp32']:.3f} | "
                     f"{t['p50']:.3f} | {t['p99']:.3f} | {fp32_value} | {int8_value} |")
    return lines + [""]


def _auto_lines(report: dict) -> list[str]:
    """--kd auto: the pilots' validation figures, the student alone's, and the choice with its reason."""
    auto = report["models"].get("distilled", {}).get("auto")
    if not auto:
        return []
    lines = ["", f"Distillation method chosen by `--kd auto` on {auto['metric']} after {auto['pilot_epochs']} "
                 f"pilot epoch(s) each ({auto['seconds']:.0f} s in all, pilots {auto['pilot_seconds']:.0f} s):", "",
             "| method | pilot validation |", "|---|---|",
             f"| student alone (true labels) | {auto['student_alone']:.4f} |"]
    lines += [f"| `{spec}` | {value:.4f} |" for spec, value in auto["pilots"].items()]
    lines += ["", f"Chosen: `{auto['chosen']}`: {auto['reason']}.", ""]
    return lines


def _fidelity_lines(report: dict) -> list[str]:
    """One line per student with fidelity to the teacher (overlap of the top-k lists, Kendall tau)."""
    lines = []
    for name, m in report["models"].items():
        if m.get("fidelity"):
            values = ", ".join(f"{k} {v:.3f}" for k, v in m["fidelity"].items())
            lines.append(f"Fidelity of {name} to the teacher: {values}.")
    return lines


def main_metric(report: dict) -> str:
    """NDCG@20 when the run computed it, else NDCG at its largest cut-off (``--ks``)."""
    ks = report["protocol"]["k"]
    return "ndcg@20" if 20 in ks else f"ndcg@{max(ks)}"


def sizes_table(report: dict, metric: str = "ndcg@20") -> str:
    lines = [f"| student dim | params | alone {metric} | distilled {metric} |", "|---|---|---|---|"]
    for row in report["sizes"]:
        lines.append(f"| {row['embedding_dim']} | {row['params']:,} | {row['student'][metric]:.4f} | "
                     f"{row['distilled'][metric]:.4f} |")
    teacher = report["models"]["teacher"]
    lines.append(f"| teacher {teacher['embedding_dim']} | {teacher['params']:,} | {teacher['metrics'][metric]:.4f} | |")
    return "\n".join(lines)


def plot_sizes(report: dict, path: str | Path, metric: str = "ndcg@20") -> Path:
    """NDCG@20 against parameter count: students alone and distilled as two curves, the teacher as a line."""
    rows = report["sizes"]
    params = [r["params"] for r in rows]
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(params, [r["student"][metric] for r in rows], "o-", label="student alone")
    ax.plot(params, [r["distilled"][metric] for r in rows], "s-",
            label=f"student distilled ({report['models']['distilled'].get('method', 'kd')})")
    teacher = report["models"]["teacher"]
    ax.axhline(teacher["metrics"][metric], color="k", ls="--",
               label=f"teacher (dim {teacher['embedding_dim']}, {teacher['params']:,} params)")
    for r in rows:
        ax.annotate(f"d={r['embedding_dim']}", (r["params"], r["student"][metric]), textcoords="offset points",
                    xytext=(0, -12), ha="center", fontsize=8)
    ax.set_xscale("log")
    return _save(fig, ax, path, f"{report['dataset']['name']}: quality against size", "student parameters",
                 f"test {metric.upper()} (full ranking)")


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / "report.json", out / "report.md"
    atomic_write_text(j, json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    if report["sizes"]:
        metric = main_metric(report)
        plot_sizes(report, out / "sizes.png", metric)
        text += (f"\n## Quality against size\n\n{sizes_table(report, metric)}\n\n"
                 f"![{metric.upper()} against parameters](sizes.png)\n")
    if report.get("curves"):
        try:
            plot_curves(report, out / "curves.png")
            figure = "![validation against wall-clock seconds](curves.png)"
        except ImportError:
            figure = "(curves.png not drawn: matplotlib is missing; `pip install rankdistill[plot]`)"
        text += "\n## Where the time went\n\n" + timings_table(report) + "\n\n" + figure + "\n"
    atomic_write_text(m, text)
    return j, m
