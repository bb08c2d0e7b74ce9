"""The whole job: the default ``rankdistill run`` timed end to end, with its phase table and peak memory.

    python benchmarks/run_time.py --data ../shared/data/gowalla --out runs/gowalla-time
    python benchmarks/run_time.py --out runs/embedded-time            # the embedded default data
    python benchmarks/run_time.py --data DATA --out DIR -- --kd listkl   # anything after -- goes to `run`

Runs ``python -m rankdistill run`` under ``/usr/bin/time -v`` (one thread, as the command's default), then
prints where the time went (the report's ``timings``: loading, split, each model's training with its
validation share and test evaluation, the auto pilots, knowledge, fidelity, serving cost), the wall time and
the peak resident memory: the kernel's for the largest process (GNU time) and, sampled each second, the sum
over the job's processes (its workers run side by side). The last line of output is one JSON object. Absolute times
depend on the machine and on what else runs on it: the device is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from rankdistill.report import timings_table

TIME = "/usr/bin/time"


def peak_rss_mb(time_log: str) -> float | None:
    """Peak resident memory in MB from GNU time's verbose output."""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_log)
    return round(int(m.group(1)) / 1024, 1) if m else None


def tree_rss_mb(root: int) -> float:
    """Summed resident memory (MB) of ``root`` and its descendants now, from /proc (Linux)."""
    children, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields["PPid"]), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total / 1024


def sample_peak(proc: subprocess.Popen, peak: list[float], every: float = 1.0) -> None:
    """Keeps ``peak[0]`` the largest summed RSS of ``proc``'s process tree seen until it ends."""
    while proc.poll() is None:
        peak[0] = max(peak[0], tree_rss_mb(proc.pid))
        time.sleep(every)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="data path (default: the embedded synthetic data)")
    p.add_argument("--out", required=True, help="the run directory (a finished run there is resumed, not re-run: "
                   "use a fresh one to time the job)")
    p.add_argument("run_args", nargs="*", help="further `rankdistill run` options, after --")
    args = p.parse_args()
    if not Path(TIME).exists():
        sys.exit(f"error: {TIME} (GNU time) is missing; install the Debian package 'time'")
    cmd = [sys.executable, "-m", "rankdistill", "run", "--out", args.out]
    if args.data:
        cmd += ["--data", args.data]
    cmd += args.run_args
    log = Path(args.out + ".time.log")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    peak_all = [0.0]  # GNU time gives the largest single process; with workers the job is several at once
    with open(log, "w") as err:
        proc = subprocess.Popen([TIME, "-v", *cmd], stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        sampler = threading.Thread(target=sample_peak, args=(proc, peak_all), daemon=True)
        sampler.start()
        proc.wait()
        sampler.join()
    wall = time.perf_counter() - t0
    time_log = log.read_text()
    if proc.returncode != 0:
        print(time_log[-3000:], file=sys.stderr)
        return proc.returncode
    report = json.loads((Path(args.out) / "report.json").read_text())
    rss = peak_rss_mb(time_log)
    device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), " \
             f"{report['environment']['threads']} thread(s)"
    all_mb = round(peak_all[0], 1)
    print(f"# rankdistill run on {report['dataset']['name']}: {wall:.0f} s wall, peak RSS {rss} MB (largest process), "
          f"{all_mb} MB (all its processes, sampled each second), {device}")
    print(" ".join(cmd))
    print()
    print(timings_table(report))
    m = report["models"]
    print()
    for name in ("teacher", "student", "distilled"):
        if name in m:
            print(f"{name:10s} {m[name].get('method', ''):16s} ndcg@20 {m[name]['metrics']['ndcg@20']:.4f}")
    print(f"gap recovered: {report['gap_recovered']}")
    print(json.dumps({"data": report["dataset"]["name"], "wall_seconds": round(wall, 1), "peak_rss_mb": rss,
                      "peak_rss_mb_all_processes": all_mb, "timings": report["timings"], "device": device,
                      "ndcg@20": {k: v["metrics"]["ndcg@20"] for k, v in m.items()},
                      "gap_recovered": report["gap_recovered"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
