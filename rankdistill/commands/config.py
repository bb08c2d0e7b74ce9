"""rankdistill config --show COMMAND [--config JOB.toml] [flags]: the resolved configuration of run, train or
distill as a job file (TOML), every option with its value; unset ones are commented out."""

from __future__ import annotations

import argparse

from rankdistill.commands.options import job_toml, resolve


def show(args: argparse.Namespace) -> int:
    from rankdistill.cli import build_parser

    job = build_parser().parse_args([args.show, *args.rest])
    print(job_toml(resolve(job, check_required=False)), end="")
    return 0
