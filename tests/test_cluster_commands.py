"""README's cluster commands, as written there: a head and a second node started with `ray start`,
`curation run --address` on them, and both nodes stopped. On one machine, so each node gets its own
temp folders (Ray's `--temp-dir`, and the system temporary folder where a worker spools its uploads)
and the commands an isolated home (its ~/.ray/auth_token). The pipeline, instead of the demo, is a
small one with minhash_dedup whose input and output are in a bucket of a real S3-compatible server
(moto's, started here): nodes that share no disk, every spill, shuffle and decision going through the
store. Only processes this test started are stopped (never `ray stop`)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, read_jsonl, write_jsonl
from curation import storage
from curation.config import pipeline_from_dict
from curation.executor import RunOptions, run_pipeline
from test_dedup import perturb
from test_storage import bucket, digest_local, digest_uri, keys_in, s3_server, upload_folder  # noqa: F401 (fixtures)

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


def readme_cluster_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running on a Ray cluster"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def stop_processes_under(folder: Path) -> None:
    """SIGKILL every process whose command line or open files name `folder` (what our nodes started)."""
    marker = str(folder)
    for _ in range(3):
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace")
                ours = marker in cmdline
                if not ours:
                    for fd in os.scandir(f"/proc/{entry.name}/fd"):
                        if marker in os.readlink(fd.path):
                            ours = True
                            break
            except OSError:
                continue
            if ours:
                found.append(int(entry.name))
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not found:
            return
        time.sleep(1)


@pytest.mark.slow
def test_readme_cluster_commands_as_written(bucket):
    import random
    import shutil
    import tempfile

    import ray

    # a short folder: Ray's socket paths under the temp folder must stay under 108 bytes
    tmp_path = Path(tempfile.mkdtemp(prefix="curation-rc-", dir="/tmp"))

    commands = readme_cluster_commands()
    assert [c.split()[0:2] for c in commands] == [["ray", "get-auth-token"], ["ray", "start"],
                                                  ["RAY_AUTH_MODE=token", "ray"], ["RAY_AUTH_MODE=token", "curation"]]
    home = tmp_path / "home"
    home.mkdir()
    inputs = tmp_path / "in"
    inputs.mkdir()
    docs = read_jsonl("en_gum_docs.jsonl.gz", 40)
    rng = random.Random(3)
    write_jsonl(inputs / "gum.jsonl", docs)
    write_jsonl(inputs / "near.jsonl", [{"id": f"near{i}", "text": perturb(d["text"], 0.01, rng)} for i, d in enumerate(docs[:10])])
    upload_folder(inputs, f"{bucket}/in")
    stages = [{"name": "length_filter", "min_chars": 30}, {"name": "minhash_dedup", "partitions": 2}]
    config = tmp_path / "pipeline.yaml"
    config.write_text(json.dumps({"input": {"path": [f"{bucket}/in/*.jsonl"]}, "output": {"path": f"{bucket}/out"},
                                  "executor": {"kind": "ray"}, "stages": stages}))
    port, head_ip = free_port(), ray.util.get_node_ip_address()
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    # what this machine needs beyond README's text: a free port, the node's IP, one CPU a node, and
    # temp folders per node (both nodes share one machine)
    extra = {"ray start --head": f" --num-cpus=1 --include-dashboard=false --temp-dir={tmp_path / 'head'}",
             "ray start --address": f" --num-cpus=1 --temp-dir={tmp_path / 'node'}"}
    spools = {"ray start --head": tmp_path / "head-tmp", "ray start --address": tmp_path / "node-tmp"}
    for folder in spools.values():
        folder.mkdir()
    try:
        for command in commands:
            command = command.replace("6379", str(port)).replace("HEAD_IP", head_ip)
            command = command.replace("manifests/demo.yaml", str(config))
            for prefix, flags in extra.items():
                if prefix in command:
                    command += flags
            if " curation run " in f" {command} ":
                command += " --no-progress"
            node_env = {**env, **{"TMPDIR": str(folder) for prefix, folder in spools.items() if prefix in command}}
            result = subprocess.run(command, shell=True, env=node_env, cwd=tmp_path, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            if "curation run" in command:
                assert "InvalidAuthToken" not in result.stderr
        stats = storage.read_json(f"{bucket}/out/stats.json")
        assert stats["input"]["docs"] == 50 and stats["executor"]["kind"] == "ray"
        assert stats["stages"][1]["dropped"].get("near_duplicate", 0) >= 8
        assert (home / ".ray" / "auth_token").exists()  # the token went to the isolated home, not the user's
        # The same pipeline on local disk, in this process: the same bytes.
        local = dict(json.loads(config.read_text()), input={"path": [str(inputs / "*.jsonl")]},
                     output={"path": str(tmp_path / "local")}, executor={"kind": "local"})
        assert run_pipeline(pipeline_from_dict(local), RunOptions(progress=False))["output"] == stats["output"]
        for part in ("kept", "rejected"):
            assert digest_uri(f"{bucket}/out/{part}") == digest_local(tmp_path / "local" / part)
        assert not [k for k in keys_in(f"{bucket}/out") if k.startswith("_work/") or ".tmp-" in k]
        # Each node's temporary folder: nothing left there (spool files are uploaded, then removed).
        assert [str(p) for folder in spools.values() for p in folder.rglob("*") if p.is_file()] == []
    finally:
        stop_processes_under(tmp_path)
        leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert not leftover, f"processes of the test cluster still running: {leftover}"
