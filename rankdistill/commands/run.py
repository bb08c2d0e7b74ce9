"""rankdistill run: teacher, student alone and distilled student on one split, with a report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rankdistill.commands.options import (  # noqa: F401 (model_config, ...: their old home, re-exported)
    command_device, configure_torch, distill_config, model_config, parse_widths, run_config, train_config)
from rankdistill.data.load import DataSpec
from rankdistill.data.split import describe_dropped
from rankdistill.outlock import lock_output
from rankdistill.paths import output_dir
from rankdistill.pipeline import RunConfig, run
from rankdistill.report import build_report, table, write_report


def main(args: argparse.Namespace) -> int:
    configure_torch(args.threads)
    config = run_config(args, device=str(command_device(args.device)))
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    with lock_output(output_dir(out, replaces=False)):  # before any work; one command at a time per --out
        return _run(args, config, out)


def _run(args: argparse.Namespace, config: RunConfig, out: Path) -> int:
    t0 = time.perf_counter()
    data = DataSpec.from_args(args).load()
    loaded = round(time.perf_counter() - t0, 2)
    if not config.quiet:
        print(f"[load] {loaded:.1f} s", flush=True)
    result = run(data, config, out)
    result.timings = {"load": loaded, **result.timings}
    report = build_report(result, config)
    json_path, md_path = write_report(report, out)
    print(table(report))
    print(describe_dropped(result.split.dropped))
    gap = ", ".join(f"{k} {'n/a' if v is None else f'{100 * v:.0f}%'}" for k, v in report["gap_recovered"].items())
    print(f"\ngap recovered: {gap}   ({report['seconds']:.1f} s)\nwrote {json_path} and {md_path}")
    return 0
