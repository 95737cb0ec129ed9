"""`curation run --overwrite` removes only what a curation run wrote; an output folder that is, holds
or lies inside an input, or holds files curation did not write, is refused with a clear message and
nothing is deleted. Run through the CLI on real text, as a user would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from conftest import read_jsonl, write_jsonl
from curation.cli import main
from curation.output_folder import foreign_files


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def pipeline_yaml(tmp_path: Path, inputs: str, out: str, min_chars: int = 30) -> Path:
    path = tmp_path / f"pipeline-{min_chars}.yaml"
    path.write_text(yaml.safe_dump({
        "input": {"path": [inputs]},
        "output": {"path": out},
        "executor": {"kind": "local"},
        "stages": [{"name": "length_filter", "min_chars": min_chars}],
    }))
    return path


def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "gum.jsonl", read_jsonl("en_gum_docs.jsonl.gz", 20))
    write_jsonl(folder / "web.jsonl", [r for r in read_jsonl("web_commoncrawl_samples.jsonl.gz", 30) if r["text"]])
    return folder


def test_overwrite_refuses_a_folder_with_foreign_files_and_deletes_nothing(tmp_path, capsys):
    inputs = corpus(tmp_path)
    precious = tmp_path / "some_dir"
    (precious / "notes").mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    (precious / "notes" / "todo.txt").write_text("do not delete")
    before = snapshot(precious)
    config = pipeline_yaml(tmp_path, str(inputs / "*.jsonl"), str(precious))
    assert main(["run", str(config), "--overwrite", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "curation did not write" in err and "thesis.tex" in err and "Traceback" not in err
    assert snapshot(precious) == before
    # without --overwrite a first run is refused there too: nothing of curation's is mixed into it
    assert main(["run", str(config), "--no-progress"]) == 1
    assert snapshot(precious) == before


def test_output_equal_to_or_containing_the_input_is_refused(tmp_path, capsys):
    inputs = corpus(tmp_path)
    before = snapshot(inputs)
    # inputs given as a glob, and as a folder (whose data files are the input: an output inside it
    # would be read as input by the next run)
    for pattern, out in ((inputs / "*.jsonl", inputs), (inputs / "*.jsonl", tmp_path), (inputs, inputs),
                         (inputs, inputs / "out")):
        config = pipeline_yaml(tmp_path, str(pattern), str(out))
        assert main(["run", str(config), "--overwrite", "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert "input" in err and "Choose an output folder outside the inputs" in err, err
        assert snapshot(inputs) == before


def test_overwrite_removes_only_its_own_run_and_refuses_when_a_foreign_file_was_added(tmp_path, capsys):
    inputs = corpus(tmp_path)
    out = tmp_path / "out"
    first = pipeline_yaml(tmp_path, str(inputs / "*.jsonl"), str(out), min_chars=30)
    assert main(["run", str(first), "--no-progress"]) == 0
    assert foreign_files(out) == []
    second = pipeline_yaml(tmp_path, str(inputs / "*.jsonl"), str(out), min_chars=500)
    assert main(["run", str(second), "--no-progress"]) == 1  # another pipeline's outputs are there
    assert "different pipeline" in capsys.readouterr().err
    # a file of the user's inside the run folder: --overwrite refuses and removes nothing
    (out / "kept" / "my_analysis.csv").write_text("a,b\n")
    before = snapshot(out)
    assert main(["run", str(second), "--overwrite", "--no-progress"]) == 1
    assert "my_analysis.csv" in capsys.readouterr().err
    assert snapshot(out) == before
    (out / "kept" / "my_analysis.csv").unlink()
    assert main(["run", str(second), "--overwrite", "--no-progress"]) == 0
    capsys.readouterr()
    import pyarrow.parquet as pq

    texts = pq.read_table(out / "kept").column("text").to_pylist()
    assert texts and min(len(t) for t in texts) >= 500  # the second pipeline's outputs, not the first's
    assert sorted(p.name for p in (out / "kept").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]


def test_a_failed_first_run_does_not_block_the_corrected_config(tmp_path, capsys):
    inputs = corpus(tmp_path)
    out = tmp_path / "out"
    broken = tmp_path / "broken.yaml"
    # a config error no load-time check can see: the text column names a column the data lacks
    broken.write_text(yaml.safe_dump({"input": {"path": [str(inputs / "*.jsonl")], "text_column": "body"},
                                      "output": {"path": str(out)}, "executor": {"kind": "local"},
                                      "stages": [{"name": "length_filter", "min_chars": 30}]}))
    assert main(["run", str(broken), "--no-progress"]) == 1
    assert "no text column 'body'" in capsys.readouterr().err
    fixed = pipeline_yaml(tmp_path, str(inputs / "*.jsonl"), str(out))
    assert main(["run", str(fixed), "--no-progress"]) == 0  # nothing was finished: it simply starts
    # once shards were finished, another config is refused with exactly what --overwrite would remove
    other = pipeline_yaml(tmp_path, str(inputs / "*.jsonl"), str(out), min_chars=500)
    assert main(["run", str(other), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "finished step(s) of the earlier run; --overwrite would remove its" in err and "MB" in err, err
