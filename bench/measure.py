"""Running a benchmark command and sampling the memory of everything it starts (its session: Ray's
raylet-started workers are outside the command's process tree but in its session)."""

from __future__ import annotations

import os
import subprocess
import threading
import time


def _kind(cmdline: str) -> str:
    """A short name for a process: `ray::StageWorker`, `gcs_server`, `python dashboard.py`, ..."""
    if cmdline.startswith("ray::"):
        return cmdline.split()[0].split(".")[0]
    parts = cmdline.split()
    if not parts:
        return "?"
    program = os.path.basename(parts[0])
    if not program.startswith("python"):
        return program
    script = next((os.path.basename(p) for p in parts[1:] if p.endswith(".py") or "/bin/" in p), "")
    return f"python {script}".strip()


def session_processes(sid: int) -> list[tuple[str, int, int]]:
    """(kind, RSS, PSS) of every process of the session."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            rss = pss = 0
            with open(f"/proc/{entry}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Rss:"):
                        rss = int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss = int(line.split()[1]) * 1024
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((_kind(cmdline), rss, pss))
    return found


def measure(cmd: list[str], env: dict | None = None) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    peak = [0, 0]
    at_peak: list[tuple[str, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            processes = session_processes(proc.pid)
            rss, pss = sum(p[1] for p in processes), sum(p[2] for p in processes)
            peak[0] = max(peak[0], rss)
            if pss > peak[1]:
                peak[1] = pss
                at_peak[:] = processes
            time.sleep(0.2)

    thread = threading.Thread(target=sample)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd[:2]} failed: {err[-3000:]}")
    by_kind: dict[str, int] = {}
    for kind, _, pss in at_peak:
        by_kind[kind] = by_kind.get(kind, 0) + pss
    return {"seconds": time.perf_counter() - start, "peak_rss": peak[0], "peak_pss": peak[1], "stdout": out,
            "pss_at_peak_mb": {k: round(v / 1e6) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}}
