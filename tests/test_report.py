"""The report's pieces: number formats, which part files trained a model, and the label-overlap check
that tests/test_job.py runs on the job's real report in headless Chromium (shown here to find overlaps
when there are some)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from curation.report import _plt, _svg, bytes_text, count_text, gold_parts

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Collects the rendered box of every non-empty SVG <text> per plot and writes the pairs that overlap by
# more than 1 px each way (and how many labels were measured) into the DOM, for --dump-dom to return.
OVERLAP_SCRIPT = """<script>
(function () {
  const found = [];
  let measured = 0;
  document.querySelectorAll("svg").forEach((svg, plot) => {
    const boxes = [];
    svg.querySelectorAll("text").forEach((t) => {
      const r = t.getBoundingClientRect();
      if (t.textContent.trim() && r.width > 0 && r.height > 0) boxes.push([t.textContent.trim(), r]);
    });
    measured += boxes.length;
    for (let a = 0; a < boxes.length; a++) {
      for (let b = a + 1; b < boxes.length; b++) {
        const ra = boxes[a][1], rb = boxes[b][1];
        const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
        const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
        if (w > 1 && h > 1) found.push({plot: plot, a: boxes[a][0], b: boxes[b][0], w: Math.round(w), h: Math.round(h)});
      }
    }
  });
  const pre = document.createElement("pre");
  pre.id = "label-overlaps";
  pre.textContent = JSON.stringify({measured: measured, overlaps: found});
  document.body.appendChild(pre);
})();
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is needed for the report tests: scripts/setup.sh installs Debian's chromium")


def label_overlaps(page: Path, work: Path) -> dict:
    """{measured, overlaps} of the SVG labels of `page` as headless Chromium lays them out (on a copy of
    the page with the measuring script added: the shipped page has no script)."""
    text = page.read_text(encoding="utf-8")
    copy = work / "measured.html"
    copy.write_text(text.replace("</body>", OVERLAP_SCRIPT + "</body>"), encoding="utf-8")
    dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile'}", "--window-size=1200,3000",
                          "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index('<pre id="label-overlaps">') + len('<pre id="label-overlaps">')
    raw = dom.stdout[start:dom.stdout.index("</pre>", start)]
    return json.loads(raw.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def test_counts_and_bytes_print_for_people():
    assert count_text(194_120) == "194,120"
    assert count_text(1.941e5) == "194,100"
    assert count_text(7) == "7" and count_text(2.5) == "2.5"
    assert bytes_text(56_123_456) == "56.1 MB"
    assert bytes_text(1_234_000_000) == "1.23 GB"
    assert bytes_text(812) == "812 B"
    assert bytes_text(45_200) == "45.2 KB"


def test_gold_parts_follow_shards_json(tmp_path):
    gold = tmp_path / "gold.jsonl"
    web = tmp_path / "web.jsonl"
    (tmp_path / "shards.json").write_text(json.dumps([
        {"input": str(gold), "source": "wiki", "kept": "kept/part-00000.parquet", "rejected": "rejected/part-00000.parquet"},
        {"input": str(web), "source": "web", "kept": "kept/part-00001.parquet", "rejected": "rejected/part-00001.parquet"}]))
    # the job's config may name the gold file by another path to the same file
    parts = gold_parts(tmp_path, {"en": [str(tmp_path / "sub" / ".." / "gold.jsonl")]})
    assert parts == {"kept/part-00000.parquet": "en", "rejected/part-00000.parquet": "en"}
    assert gold_parts(tmp_path, {}) == {}


def _page(svgs: list[str], path: Path) -> Path:
    path.write_text("<!DOCTYPE html><html><body>" + "".join(svgs) + "</body></html>", encoding="utf-8")
    return path


def test_overlap_check_finds_labels_that_run_together(tmp_path):
    """The default matplotlib ticks of the old funnel (raw counts, 7 ticks on a narrow axis) ran together
    ("100000125000150000..."); the check must see that, and see none once the axis is formatted."""
    from curation.report import _bars

    plt = _plt()
    values = [194_120, 150_331, 120_004, 64_512]
    labels = ["input", "lid", "gopher_quality", "minhash_dedup"]
    fig, ax = plt.subplots(figsize=(2.2, 1.6))
    ax.barh(range(4), values)
    ax.set_yticks(range(4), labels)
    ax.set_xticks([0, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000, 175_000])
    ax.set_xticklabels([str(v) for v in (0, 25_000, 50_000, 75_000, 100_000, 125_000, 150_000, 175_000)])
    crowded = _svg(fig)
    fig, ax = plt.subplots(figsize=(5.5, 1.6))
    _bars(ax, labels, values, "count", "#4c72b0", "documents left after each stage")
    formatted = _svg(fig)
    bad = label_overlaps(_page([crowded], tmp_path / "bad.html"), tmp_path)
    assert bad["overlaps"], bad
    good = label_overlaps(_page([formatted], tmp_path / "good.html"), tmp_path)
    assert good["measured"] >= 12 and good["overlaps"] == [], good
