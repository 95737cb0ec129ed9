"""`OUT/report.html`: one self-contained page (inline SVG plots, no script, no server, nothing fetched)
about a finished job: the funnel of documents and bytes per stage, drop reasons, languages, perplexity
per language with the bucket cut-offs, dedup cluster sizes, tokens per source and per phase, tokenizer
bytes per token per language, and the time of every stage and step. Plots are matplotlib (Agg) SVG."""

from __future__ import annotations

import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

MAX_ROWS = 500_000  # rows read for the per-document plots (a random-free prefix of each file is enough)


def _plt():
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none", "figure.dpi": 96})
    return plt


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    _plt().close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>"):] if start >= 0 and end > start else text


def _barh(labels: list[str], values: list[float], title: str, xlabel: str, color: str = "#4c72b0") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.0))
    ax.barh(range(len(labels)), values, color=color)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.4g}", va="center", fontsize=8)
    return _svg(fig)


def _columns(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.dataset as ds  # late: it imports pandas (40 MB in every process)

    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        return {}
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    present = [n for n in names if n in dataset.schema.names]
    if not present:
        return {}
    table = dataset.head(MAX_ROWS, columns=present)
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in present}


def _funnel(stats: dict) -> str:
    plt = _plt()
    stages = stats["stages"]
    labels = ["input"] + [s["key"] for s in stages]
    docs = [stats["input"]["docs"]] + [s["docs_out"] for s in stages]
    mb = [stats["input"]["bytes"] / 1e6] + [s["bytes_out"] / 1e6 for s in stages]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(labels) + 1.2), sharey=True)
    for ax, values, name, color in ((axes[0], docs, "documents", "#4c72b0"), (axes[1], mb, "MB of text", "#55a868")):
        ax.barh(range(len(labels)), values, color=color)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"{name} left after each stage")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.4g}", va="center", fontsize=8)
    axes[0].invert_yaxis()
    return _svg(fig)


def _perplexity(columns: dict[str, np.ndarray], models_dir: str | None) -> list[str]:
    plt = _plt()
    if "ppl" not in columns or "lang" not in columns:
        return []
    cutoffs = {}
    if models_dir and (Path(models_dir) / "quality.json").exists():
        meta = json.loads((Path(models_dir) / "quality.json").read_text()).get("kenlm", {})
        cutoffs = {lang: entry["cutoffs"]["ppl"] for lang, entry in meta.items()}
    plots = []
    ppl, lang = columns["ppl"].astype(float), columns["lang"].astype(str)
    for language in sorted(set(lang[np.isfinite(ppl)].tolist())):
        values = ppl[(lang == language) & np.isfinite(ppl)]
        if len(values) < 5:
            continue
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ax.hist(np.log10(values), bins=60, color="#8172b2")
        ax.set_xlabel("log10 perplexity")
        ax.set_ylabel("documents")
        ax.set_title(f"perplexity, {language} ({len(values):,} documents scored)")
        for name, color in (("head", "#2ca02c"), ("middle", "#d62728")):
            if language in cutoffs:
                ax.axvline(np.log10(cutoffs[language][name]), color=color, linestyle="--", label=f"{name} cut-off")
        if language in cutoffs:
            ax.legend()
        plots.append(_svg(fig))
    return plots


def _clusters(stats: dict) -> str | None:
    plt = _plt()
    rows = []
    for key, result in stats.get("aggregates", {}).items():
        sizes = {int(k.rsplit("_", 1)[1]): v for k, v in result.items() if k.startswith("cluster_size_")}
        if sizes:
            rows.append((key, sizes))
    if not rows:
        return None
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 2.8), squeeze=False)
    for ax, (key, sizes) in zip(axes[0], rows):
        xs = sorted(sizes)
        ax.bar([str(x) if x < 10 else "10+" for x in xs], [sizes[x] for x in xs], color="#c44e52")
        ax.set_yscale("log")
        ax.set_xlabel("cluster size (documents)")
        ax.set_title(f"{key}: clusters")
    return _svg(fig)


def _tokens(out: Path) -> list[str]:
    plots = []
    pack = out / "packed" / "pack.json"
    if pack.exists():
        summary = json.loads(pack.read_text())
        names = list(summary["sources"])
        plots.append(_barh(names, [summary["sources"][n]["document_tokens"] / 1e6 for n in names],
                           "tokens per source (packed, millions)", "million tokens", "#dd8452"))
    manifest = out / "manifest.json"
    if manifest.exists():
        plt = _plt()
        data = json.loads(manifest.read_text())
        sources = list(data["sources"])
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(data["phases"]) + 1.2))
        left = np.zeros(len(data["phases"]))
        for source in sources:
            values = np.array([sum(r["count"] for r in p["allocation"].get(source, [])) * data["seq_len"] / 1e6
                               for p in data["phases"]])
            ax.barh([p["name"] for p in data["phases"]], values, left=left, label=source)
            left += values
        ax.invert_yaxis()
        ax.set_xlabel("million tokens")
        ax.set_title("tokens per phase and source (manifest)")
        ax.legend(fontsize=7, ncol=4, loc="lower right")
        plots.append(_svg(fig))
    return plots


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(out: str | Path, models_dir: str | None = None) -> Path:
    out = Path(out)
    stats = json.loads((out / "stats.json").read_text())
    sections: list[tuple[str, list[str]]] = []
    sections.append(("Funnel", [_funnel(stats)]))
    reasons: Counter = Counter(stats["input"]["dropped"])
    for stage in stats["stages"]:
        reasons.update(stage["dropped"])
    if reasons:
        top = reasons.most_common(25)
        sections.append(("Drop reasons", [_barh([r for r, _ in top], [c for _, c in top], "documents dropped, by reason",
                                                 "documents", "#c44e52")]))
    kept = _columns(out / "kept", ["lang", "ppl", "dataset"])
    rejected = _columns(out / "rejected", ["lang", "ppl"])
    if "lang" in kept:
        counts = Counter(kept["lang"].astype(str).tolist()).most_common(25)
        sections.append(("Languages", [_barh([c for c, _ in counts], [n for _, n in counts],
                                             "kept documents by language (lid)", "documents", "#64b5cd")]))
    both = {k: np.concatenate([kept[k], rejected[k]]) for k in ("ppl", "lang") if k in kept and k in rejected}
    ppl_plots = _perplexity(both, models_dir)
    if ppl_plots:
        sections.append(("Perplexity (kept and rejected documents, bucket cut-offs dashed)", ppl_plots))
    clusters = _clusters(stats)
    if clusters:
        sections.append(("Dedup clusters", [clusters]))
    token_plots = _tokens(out)
    if token_plots:
        sections.append(("Tokens", token_plots))
    evaluation = out / "tokenizer" / "eval.json"
    if evaluation.exists():
        groups = json.loads(evaluation.read_text())["groups"]
        names = list(groups)
        sections.append(("Tokenizer", [_barh(names, [groups[g]["bytes_per_token"] for g in names],
                                              "bytes per token by language group (higher is better)", "bytes per token",
                                              "#937860")]))
    times = [[s["key"], f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", f"{s['docs_in']:,}", f"{s['docs_out']:,}"] for s in stats["stages"]]
    job = out / "job.json"
    steps = json.loads(job.read_text()).get("steps", {}) if job.exists() else {}
    time_plot = _barh(list(steps), list(steps.values()), "wall time per job step (s)", "seconds", "#8c8c8c") if steps else ""
    sections.append(("Run times", [time_plot, _table(times, ["stage", "wall s (summed over workers)", "cpu s", "docs in", "docs out"])]))

    summary = (f"input {stats['input']['docs']:,} documents ({stats['input']['bytes'] / 1e6:,.1f} MB); kept "
               f"{stats['output']['kept_docs']:,} ({stats['output']['kept_bytes'] / 1e6:,.1f} MB); rejected "
               f"{stats['output']['rejected_docs']:,}; curation wall time {stats['wall_s']:.1f} s")
    parts = [f'<section><h2>{html.escape(title)}</h2>' + "".join(f'<div class="plot">{p}</div>' for p in plots) + "</section>"
             for title, plots in sections]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>curation report: {html.escape(str(out))}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}} h2{{border-bottom:1px solid #ccc}}
.plot{{margin:0.5em 0}} table{{border-collapse:collapse;font-size:0.85em}} td,th{{border:1px solid #ddd;padding:2px 6px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head>
<body><h1>curation report</h1><p>{html.escape(summary)}</p>
{''.join(parts)}
</body></html>
"""
    target = out / "report.html"
    tmp = target.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target
