"""`OUT/report.html`: one self-contained page (inline SVG plots, no script, no server, nothing fetched)
about a finished job: the funnel of documents and bytes per stage, drop reasons, languages by documents
and bytes, perplexity per language (documents of the files that trained the model apart) with the bucket
cut-offs and how many documents they came from, dedup cluster sizes, tokens per source and per phase,
tokenizer bytes per token per language on held-out text, and the time of every stage and step. Plots
are matplotlib (Agg) SVG; counts print with thousands separators, bytes in KB/MB/GB. OUT may be a URI
(object storage): everything is read and the page written through `curation.storage`."""

from __future__ import annotations

import html
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.manifest import Manifest

MAX_ROWS = 500_000  # rows read for the per-document plots (a random-free prefix of each file is enough)


def _plt():
    import matplotlib  # only when a report is drawn: matplotlib costs 0.5 s and 40 MB in every importer

    logging.getLogger("matplotlib").setLevel(logging.WARNING)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): the backend is chosen before pyplot loads

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


def count_text(value: float) -> str:
    """A count with thousands separators: 194,120 (not 1.941e+05)."""
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.3g}"


def bytes_text(value: float) -> str:
    """Bytes in the unit that keeps three digits or fewer: 812 B, 45.2 KB, 56.1 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:,.3g} {unit}" if value / scale < 1000 else f"{value / scale:,.0f} {unit}"
    return f"{value:,.0f} B"


def _axis(ax, kind: str, which: str = "x") -> None:
    """Ticks as counts or bytes, at most 4 on a bar axis: labels as wide as "150,000" at 9 px need about
    45 px each, and the narrowest axis here (a 5.5 inch panel of the funnel) is 400 px wide."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator  # matplotlib only when a report is drawn

    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=2, integer=kind == "count"))
    axis.set_major_formatter(FuncFormatter(lambda v, _: bytes_text(v) if kind == "bytes" else count_text(v)))


def _bars(ax, labels: list[str], values: list[float], kind: str, color: str, title: str) -> None:
    """Horizontal bars with their values at the ends; the x range leaves room for the value labels."""
    ax.barh(range(len(labels)), values, color=color)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title(title)
    _axis(ax, kind)
    ax.set_xlim(0, max(max(values, default=0), 1e-9) * 1.3)  # the widest value label fits inside
    for i, v in enumerate(values):
        ax.text(v, i, " " + (bytes_text(v) if kind == "bytes" else count_text(v)), va="center", fontsize=8)
    ax.invert_yaxis()


def _barh(labels: list[str], values: list[float], title: str, xlabel: str, color: str = "#4c72b0",
          kind: str = "count") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.0))
    _bars(ax, labels, values, kind, color, title)
    ax.set_xlabel(xlabel)
    return _svg(fig)


def _pair(labels: list[str], docs: list[float], size: list[float], what: str) -> str:
    """Documents and bytes side by side, one label column."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * len(labels) + 1.2), sharey=True)
    _bars(axes[0], labels, docs, "count", "#4c72b0", f"documents {what}")
    _bars(axes[1], labels, size, "bytes", "#55a868", f"bytes of text {what}")
    axes[1].invert_yaxis()  # shared y: undo the second inversion
    return _svg(fig)


def _columns(folder: Path | str, names: list[str], part_files: bool = False) -> dict[str, np.ndarray]:
    """Columns of the Parquet files of `folder` (at most MAX_ROWS rows); "text" gives the UTF-8 bytes of
    each text as "text_bytes"; `part_files` adds "part" (the file each row came from)."""

    files = storage.parquet_files(folder)  # one listing; a missing folder has none
    found: dict[str, list[np.ndarray]] = {}
    rows = 0
    for path in files:
        if rows >= MAX_ROWS:
            break
        parquet = pq.ParquetFile(storage.parquet_source(path))
        present = [n for n in names if n in parquet.schema_arrow.names]
        if not present:
            continue
        table = parquet.read(columns=present).slice(0, MAX_ROWS - rows)
        rows += table.num_rows
        for name in present:
            column = table.column(name)
            if name == "text":
                found.setdefault("text_bytes", []).append(pc.binary_length(column).to_numpy(zero_copy_only=False))
            else:
                found.setdefault(name, []).append(column.to_numpy(zero_copy_only=False))
        if part_files:
            found.setdefault("part", []).append(np.full(table.num_rows, f"{storage.basename(folder)}/{storage.basename(path)}",
                                                        dtype=object))
    return {name: np.concatenate(parts) for name, parts in found.items()}


def _funnel(stats: dict) -> str:
    stages = stats["stages"]
    labels = ["input"] + [s["key"] for s in stages]
    docs = [stats["input"]["docs"]] + [s["docs_out"] for s in stages]
    size = [stats["input"]["bytes"]] + [s["bytes_out"] for s in stages]
    return _pair(labels, docs, size, "left after each stage")


def _resolved(location: str) -> str:
    return storage.normalise(location) if storage.is_uri(location) else str(Path(location).resolve())


def gold_parts(out: Path | str, gold: dict[str, list[str]]) -> dict[str, str]:
    """Output part file ("kept/part-00003.parquet") -> the language whose KenLM model its input trained
    (OUT/shards.json maps parts to inputs; paths compared resolved)."""
    index = storage.join(out, "shards.json")
    if not gold or not storage.exists(index):
        return {}
    trained = {_resolved(f): lang for lang, files in gold.items() for f in files}
    parts = {}
    for entry in storage.read_json(index):
        lang = trained.get(_resolved(entry["input"]))
        if lang is not None:
            parts[entry["kept"]] = parts[entry["rejected"]] = lang
    return parts


def _perplexity(columns: dict[str, np.ndarray], meta: dict, parts: dict[str, str]) -> list[str]:
    """Histograms of log10 perplexity per language: documents from the files that trained that language's
    model apart from the others (scored by a model that saw them, they sit low and would pull the picture
    towards "good"), with the bucket cut-offs."""
    plt = _plt()
    if "ppl" not in columns or "lang" not in columns:
        return []
    plots = []
    ppl, lang = columns["ppl"].astype(float), columns["lang"].astype(str)
    part = columns.get("part", np.full(len(ppl), "", dtype=object)).astype(str)
    for language in sorted(set(lang[np.isfinite(ppl)].tolist())):
        rows = (lang == language) & np.isfinite(ppl)
        if rows.sum() < 5:
            continue
        from_gold = rows & np.isin(part, [p for p, l in parts.items() if l == language])
        others, golden = np.log10(ppl[rows & ~from_gold]), np.log10(ppl[from_gold])
        # side by side, each on its own range: the model has all but memorised its training documents
        # (English gold at log10 ppl about 0.8, web about 2.5-3.5), so one axis squashes the web
        fig, axes = plt.subplots(1, 2 if len(golden) else 1, figsize=(11 if len(golden) else 7, 2.8), squeeze=False)
        entry = meta.get(language)
        for ax, values, title, color in ((axes[0][0], others, "other sources", "#8172b2"),
                                         *(((axes[0][1], golden, "gold sources: trained the model, or held out for"
                                            " its cut-offs", "#ff7f0e"),) if len(golden) else ())):
            ax.hist(values, bins=60, color=color)
            ax.set_xlabel("log10 perplexity")
            ax.set_ylabel("documents")
            _axis(ax, "count", "y")
            ax.set_title(f"{language}, {title} ({count_text(len(values))} documents)", fontsize=8)
            if entry:
                for name, line in (("head", "#2ca02c"), ("middle", "#d62728")):
                    ax.axvline(np.log10(entry["cutoffs"]["ppl"][name]), color=line, linestyle="--", label=f"{name} cut-off")
                ax.legend(fontsize=7, loc="upper right")
        fig.suptitle(f"perplexity, {language} ({count_text(int(rows.sum()))} documents scored)", y=1.02)
        plots.append(_svg(fig))
    return plots


def _cutoff_note(meta: dict, gold: dict[str, list[str]]) -> str:
    """Where each language's bucket cut-offs came from, in words."""
    notes = []
    for language, entry in sorted(meta.items()):
        if "cutoff_sample_docs" not in entry:
            continue
        where = ("documents given to calibrate" if entry.get("cutoff_sample") == "calibrate" else
                 f"held-out gold documents (every {entry['holdout_every']}th, not trained on)" if entry.get("holdout_every")
                 else "held-out gold documents (not trained on)")
        files = ", ".join(Path(f).name for f in gold.get(language, []))
        notes.append(f"{language}: cut-offs from {count_text(entry['cutoff_sample_docs'])} {where}; model trained on "
                     f"{count_text(entry.get('train_docs', 0))} documents" + (f" of {files}" if files else ""))
    return "; ".join(notes)


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


def _tokens(out: Path | str) -> list[str]:
    plots = []
    pack = storage.join(out, "packed", "pack.json")
    if storage.exists(pack):
        summary = storage.read_json(pack)
        names = list(summary["sources"])
        plots.append(_barh(names, [summary["sources"][n]["document_tokens"] for n in names],
                           "tokens per source (packed)", "tokens", "#dd8452"))
    manifest = storage.join(out, "manifest.json")
    if storage.exists(manifest):
        plt = _plt()
        data = Manifest.from_json(storage.read_json(manifest), manifest)
        sources = list(data.sources)
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(data.phases) + 1.2))
        left = np.zeros(len(data.phases))
        for source in sources:
            values = np.array([sum(r.count for r in p.allocation.get(source, ())) * data.seq_len for p in data.phases])
            ax.barh([p.name for p in data.phases], values, left=left, label=source)
            left += values
        ax.invert_yaxis()
        _axis(ax, "count")
        ax.set_xlim(0, max(left.max(), 1) * 1.02)
        ax.set_xlabel("tokens")
        ax.set_title("tokens per phase and source (manifest)")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))  # below: never over a bar
        plots.append(_svg(fig))
    return plots


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tokenizer_section(evaluation: dict) -> list[str]:
    groups = evaluation["groups"]
    names = list(groups)
    held = evaluation.get("held_out")
    plots = [_barh(names, [groups[g]["bytes_per_token"] for g in names],
                   "bytes per token on held-out text, by language group (higher is better)", "bytes per token", "#937860")]
    if held:
        plots.insert(0, "<p>" + html.escape(
            f"Held out of the tokenizer's training sample by a hash of the document id ({held['id_column']}): "
            f"{held['fraction']:.0%} of the curated documents, {count_text(held['docs'])} documents "
            f"({bytes_text(held['bytes'])}); at most {bytes_text(held['max_bytes_per_group'])} per group measured. "
            "None of them was in the sample. The table adds the same measure on the text the sample was drawn "
            "from (in-sample), which flatters a tokenizer.") + "</p>")
        rows = [[g, count_text(r["docs"]), bytes_text(r["bytes"]), f"{r['bytes_per_token']:.3f}",
                 f"{r['training_text_bytes_per_token']:.3f}" if "training_text_bytes_per_token" in r else "-"]
                for g, r in groups.items()]
        plots.append(_table(rows, ["group", "held-out documents", "held-out text", "bytes per token, held out",
                                   "bytes per token, training text"]))
    return plots


def write_report(out: str | Path, models_dir: str | None = None, gold: dict[str, list[str]] | None = None) -> Path:
    """Write OUT/report.html. `gold`: language -> the files its KenLM model was trained on (the job's
    quality_models.kenlm), so that their documents are plotted apart."""
    out = str(out).rstrip("/") if storage.is_uri(out) else Path(out)
    gold = gold or {}
    stats = storage.read_json(storage.join(out, "stats.json"))
    sections: list[tuple[str, list[str]]] = []
    sections.append(("Funnel", [_funnel(stats)]))
    reasons: Counter = Counter(stats["input"]["dropped"])
    for stage in stats["stages"]:
        reasons.update(stage["dropped"])
    if reasons:
        top = reasons.most_common(25)
        sections.append(("Drop reasons", [_barh([r for r, _ in top], [c for _, c in top], "documents dropped, by reason",
                                                 "documents", "#c44e52")]))
    kept = _columns(storage.join(out, "kept"), ["lang", "ppl", "text"], part_files=True)
    rejected = _columns(storage.join(out, "rejected"), ["lang", "ppl"], part_files=True)
    if "lang" in kept:
        by_docs = Counter(kept["lang"].astype(str).tolist())
        by_bytes: Counter = Counter()
        for language, size in zip(kept["lang"].astype(str).tolist(), kept["text_bytes"].tolist()):
            by_bytes[language] += size
        top = sorted(set(l for l, _ in by_docs.most_common(25)) | set(l for l, _ in by_bytes.most_common(25)),
                     key=lambda l: -by_bytes[l])[:30]
        sections.append(("Languages", [_pair(top, [by_docs[l] for l in top], [by_bytes[l] for l in top],
                                             "kept, by language (lid)")]))
    both = {k: np.concatenate([kept[k], rejected[k]]) for k in ("ppl", "lang", "part") if k in kept and k in rejected}
    meta = {}
    if models_dir and (Path(models_dir) / "quality.json").exists():
        meta = json.loads((Path(models_dir) / "quality.json").read_text()).get("kenlm", {})
    ppl_plots = _perplexity(both, meta, gold_parts(out, gold))
    if ppl_plots:
        note = _cutoff_note(meta, gold)
        sections.append(("Perplexity (kept and rejected documents, bucket cut-offs dashed)",
                         ([f"<p>{html.escape(note)}</p>"] if note else []) + ppl_plots))
    clusters = _clusters(stats)
    if clusters:
        sections.append(("Dedup clusters", [clusters]))
    token_plots = _tokens(out)
    if token_plots:
        sections.append(("Tokens", token_plots))
    evaluation = storage.join(out, "tokenizer", "eval.json")
    if storage.exists(evaluation):
        sections.append(("Tokenizer", _tokenizer_section(storage.read_json(evaluation))))
    times = [[s["key"], f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}", count_text(s["docs_in"]), count_text(s["docs_out"])]
             for s in stats["stages"]]
    job = storage.join(out, "job.json")
    steps = storage.read_json(job).get("steps", {}) if storage.exists(job) else {}
    time_plot = _barh(list(steps), list(steps.values()), "wall time per job step (s)", "seconds", "#8c8c8c") if steps else ""
    sections.append(("Run times", [time_plot, _table(times, ["stage", "wall s (summed over workers)", "cpu s", "docs in", "docs out"])]))

    summary = (f"input {count_text(stats['input']['docs'])} documents ({bytes_text(stats['input']['bytes'])}); kept "
               f"{count_text(stats['output']['kept_docs'])} ({bytes_text(stats['output']['kept_bytes'])}); rejected "
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
    target = storage.join(out, "report.html")
    storage.write_bytes(target, page.encode("utf-8"))  # whole or not at all, on disk or in a bucket
    return target if storage.is_uri(target) else Path(target)
