from pathlib import Path

import pytest

from curation.config import load_pipeline, pipeline_from_dict, with_overrides

BASE = {"input": {"path": "x/*.jsonl"}, "output": {"path": "out"}, "stages": [{"name": "noop"}]}


def test_example_job_loads():
    from curation.job import is_job, load_job

    path = Path(__file__).parents[1] / "manifests" / "demo.yaml"
    assert is_job(path)
    job = load_job(path)
    config = job.pipeline
    assert set(config.input.sources) == {"web", "wiki", "prose", "news", "reviews", "code", "multilingual"}
    assert len(config.input.path) == 9  # every file of ../shared/data, through its source
    assert config.executor.kind == "ray"
    assert [s["name"] for s in config.stages][0] == "lid"
    assert config.input.empty_text == "drop"
    sections = job.sections
    assert sections.quality_models and sections.tokenizer and sections.pack and sections.phases and sections.report
    with pytest.raises(ValueError, match="unknown top-level key"):
        load_pipeline(path)  # a job is not a plain pipeline: `curation run` tells them apart


def test_demo_phases_section_is_written_as_given():
    """OUT/phases.yaml holds the typed `phases` section: the demo's, byte for byte as the section reads."""
    import yaml

    from curation.job import load_job

    path = Path(__file__).parents[1] / "manifests" / "demo.yaml"
    raw = yaml.safe_load(path.read_text())["phases"]
    written = yaml.safe_dump({"root": "packed", **load_job(path).sections.phases.to_yaml_dict()}, sort_keys=False)
    assert written == yaml.safe_dump({"root": "packed", **raw}, sort_keys=False)


def test_defaults_and_overrides():
    config = pipeline_from_dict(BASE)
    assert config.input.text_column == "text" and config.input.id_column == "id"
    assert config.executor.kind == "ray"
    config = with_overrides(config, address="auto")
    assert config.executor.address == "auto" and config.executor.kind == "ray"
    assert with_overrides(config, executor="local").executor.kind == "local"


@pytest.mark.parametrize("raw, message", [
    ({**BASE, "inptu": {}}, "unknown top-level key"),
    ({**BASE, "input": {"path": "x", "colour": 1}}, "unknown key(s) in 'input': colour"),
    ({**BASE, "executor": {"kind": "slurm"}}, "executor.kind must be one of"),
    ({**BASE, "input": {"path": "x", "empty_text": "ignore"}}, "input.empty_text"),
    ({"output": {"path": "o"}}, "input.path (or input.sources) is required"),
    ({"input": {"path": "x"}}, "output.path is required"),
])
def test_bad_configs_say_what_is_wrong(raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline_from_dict(raw)


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("input: !!python/object/apply:os.system ['echo pwned']\noutput: {path: o}\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_pipeline(evil)
