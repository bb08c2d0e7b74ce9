"""The command-line options of every command, in one place, and the job file (``--config job.toml``).

``run``, ``train`` and ``distill`` take one :class:`Option` per field of the typed configs (ModelConfig,
TrainConfig, DistillConfig and RunConfig's own fields): its help text and default come from the dataclass
field (``rankdistill.config.knob``), so the command line and the Python defaults cannot drift apart. Each
option is also a key of the job file, a TOML file read with the standard library's ``tomllib``::

    seed = 0                  # RunConfig's fields and the command's own options at the top level
    [data]                    # the data options (--data is `path`) and the split
    [teacher] / [student]     # run: the two ModelConfigs; train and distill: [model], the model they write
    [train]                   # TrainConfig (its seed is the top-level seed)
    [distill]                 # DistillConfig, every loss hyperparameter included

A value comes from the flag when one is given, else from the job file, else from the default
(:func:`resolve`); a key the command does not take is refused, naming the valid ones. Relative paths in a
job file are relative to the file's folder. ``rankdistill config --show COMMAND`` prints the resolved job
as TOML (:func:`job_toml`), which ``--config`` reads back.

Also the helpers the commands share to turn options into values (threads, widths, cut-offs, metrics, the
split, the device).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from rankdistill.errors import RankdistillError

JOB_COMMANDS = ("run", "train", "distill")
KINDS = {"int": int, "float": float, "str": str, "bool": bool, "tuple[int, ...]": "ints",
         "tuple[str, ...]": "strs", "float | None": float, "str | None": str, "int | None": int,
         "str | tuple[float, float, float] | None": str, "str | float | None": str}


@dataclass(frozen=True)
class Option:
    """One option of a command: its flag, its job-file key and its default."""

    key: str  # job-file key: "name" at the top level or "section.name"; "" for a flag without a key
    dest: str  # attribute of the parsed arguments
    flag: str  # --name
    default: object
    help: str
    kind: type | str  # int, float, str, bool, "ints" (tuple of int), "strs" (tuple of str)
    choices: tuple | None = None
    group: str = "options"
    path: bool = False  # a path: relative in a job file means relative to the file's folder
    metavar: str | None = None


# -- the options of each command --------------------------------------------------------------------------------
def field_options(cls, section: str, defaults, *, prefix: str = "", group: str = "") -> list[Option]:
    """One Option per field of the dataclass ``cls`` (section ``section``; defaults: the instance ``defaults``'s
    values, or the fields' declared defaults when None); the flag is ``--{prefix}{flag or name}``. Fields
    without help metadata are not options."""
    from rankdistill.config import JOB_SEED

    out = []
    for f in fields(cls):
        meta = f.metadata
        if not f.init or "help" not in meta or meta.get("flag") == JOB_SEED:
            continue
        name = meta.get("flag") or f.name.replace("_", "-")
        key = f"{section}.{f.name}" if section else f.name
        default = f.default if defaults is None else getattr(defaults, f.name)
        out.append(Option(key, key, f"--{prefix}{name}", default, meta["help"], KINDS[f.type],
                          meta.get("choices"), group or section))
    return out


def _data_options() -> list[Option]:
    from rankdistill.data.io import FORMATS, Columns
    from rankdistill.data.load import DataSpec
    from rankdistill.pipeline import RunConfig

    c, d, g = Columns(), DataSpec(), "data"
    run_fields = {o.key: o for o in field_options(RunConfig, "", None)}
    opts = [
        Option("data.path", "data", "--data", d.path, "interactions: CSV/TSV/parquet file, MovieLens u.data/"
               "ratings.dat/ratings.csv, or a LightGCN folder (train.txt, test.txt); unset: run and train use the embedded "
               "synthetic data, distill the teacher's data, filters and split", str, group=g, path=True,
               metavar="PATH"),
        Option("data.format", "format", "--format", d.format, "force the reader (unset: detected from the path)", str,
               FORMATS, g),
        Option("data.user_col", "user_col", "--user-col", c.user, "column of the user IDs", str, group=g,
               metavar="NAME"),
        Option("data.item_col", "item_col", "--item-col", c.item, "column of the item IDs", str, group=g,
               metavar="NAME"),
        Option("data.timestamp_col", "timestamp_col", "--timestamp-col", c.timestamp,
               "optional unless renamed; '' ignores it", str, group=g, metavar="NAME"),
        Option("data.rating_col", "rating_col", "--rating-col", c.rating, "optional unless renamed; '' ignores it",
               str, group=g, metavar="NAME"),
        Option("data.min_rating", "min_rating", "--min-rating", d.min_rating,
               "only ratings >= this are positives (unset: every row)", float, group=g),
        Option("data.min_user_interactions", "min_user_interactions", "--min-user-interactions",
               d.min_user_interactions, "k-core: drop users with fewer interactions, iterated with "
               "min_item_interactions", int, group=g),
        Option("data.min_item_interactions", "min_item_interactions", "--min-item-interactions",
               d.min_item_interactions, "k-core: drop items with fewer interactions", int, group=g),
    ]
    for name, metavar in (("split", None), ("split_ratio", "TRAIN,VALID,TEST"), ("split_time", "CUT")):
        o = run_fields[name]
        opts.append(Option(f"data.{name}", name, o.flag, o.default, o.help, o.kind, o.choices, g, metavar=metavar))
    return opts


def _top_options(names: tuple[str, ...]) -> list[Option]:
    from rankdistill.pipeline import RunConfig

    declared = {o.key: o for o in field_options(RunConfig, "", None, group="job")}
    return [declared[n] for n in names]


def _command_options(command: str) -> list[Option]:
    threads = int(os.environ.get("RANKDISTILL_THREADS", "1"))
    out_help = {"run": "run directory (unset: runs/<timestamp>)",
                "train": "model directory to write (config, vocabularies, weights); required",
                "distill": "model directory to write for the student; required"}[command]
    opts = []
    if command == "distill":
        opts.append(Option("teacher", "teacher", "--teacher", None, "the teacher's model directory (or --teacher-scores)",
                           str, group="job", path=True, metavar="MODEL_DIR"))
        opts.append(Option("teacher_scores", "teacher_scores", "--teacher-scores", None, "any teacher's scores instead "
                           "of --teacher: CSV/TSV or parquet with columns user,item,score (raw IDs as the data spells "
                           "them, any number of items per user); needs --data; losses that need the teacher's "
                           "weights refuse", str, group="job", path=True, metavar="FILE"))
    opts.append(Option("out", "out", "--out", None, out_help, str, group="job", path=True,
                       metavar="DIR" if command == "run" else "MODEL_DIR"))
    if command == "distill":
        opts += [Option("knowledge", "knowledge", "--knowledge", None, "the teacher's top-K per user: reused when the "
                        "file exists, else computed from the teacher and written there", str, group="job", path=True,
                        metavar="FILE.parquet"),
                 Option("cached_only", "cached_only", "--cached-only", False, "distil from the knowledge file alone: "
                        "the teacher's weights take no part in training (losses that need them refuse)", bool,
                        group="job")]
    opts.append(Option("threads", "threads", "--threads", threads,
                       "CPU threads (on shared machines more threads spin and run slower; env RANKDISTILL_THREADS)",
                       int, group="job"))
    return opts


def job_options(command: str) -> list[Option]:
    """Every option of ``run``, ``train`` or ``distill``, in help order."""
    from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
    from rankdistill.pipeline import RunConfig

    if command not in JOB_COMMANDS:
        raise RankdistillError(f"a job file is for {', '.join(JOB_COMMANDS)}, not {command!r}")
    rc = RunConfig()
    top = ("seed", "device", "quiet", "ks") + (("sizes", "student_epochs", "workers") if command == "run" else ())
    opts = _command_options(command) + _top_options(top) + _data_options()
    if command == "run":
        opts.append(Option("", "score_both", "--score", None, "the teacher's and the students' score (a flag only: "
                           "--teacher-score and --student-score, or score in [teacher] and [student], set one)", str,
                           ("dot", "cosine"), "model (teacher and students)"))
        opts += field_options(ModelConfig, "teacher", rc.teacher, prefix="teacher-", group="teacher model")
        opts += field_options(ModelConfig, "student", rc.student, prefix="student-", group="student model")
    else:
        opts += field_options(ModelConfig, "model", rc.teacher if command == "train" else rc.student,
                              group="model (the student)" if command == "distill" else "model")
    opts += field_options(TrainConfig, "train", rc.train, group="training")
    if command != "train":
        opts += field_options(DistillConfig, "distill", rc.distill, group="distillation")
    return opts


# -- the parser ----------------------------------------------------------------------------------------------
def _show(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _ints(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in str(text).split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be comma-separated integers like 64,32, got {text!r}")
    return parse


def _strs(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in str(text).split(",") if x.strip())


def add_job_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add ``--config`` and every option of ``command`` to its parser. No option has an argparse default:
    what is absent after parsing was not given, and :func:`resolve` fills it from the job file or the default."""
    parser.add_argument("--config", metavar="JOB.toml", help="a job file with any option below (TOML; keys and "
                        f"sections: rankdistill config --show {command}); flags given as well win")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for o in job_options(command):
        g = groups.get(o.group) or groups.setdefault(o.group, parser.add_argument_group(o.group))
        where = f"; job file: {o.key}" if o.key else ""
        text = f"{o.help} (default: {_show(o.default)}{where})".replace("%", "%%")
        kw = dict(dest=o.dest, default=argparse.SUPPRESS, help=text)
        if o.kind is bool:
            g.add_argument(o.flag, action=argparse.BooleanOptionalAction, **kw)
        elif o.kind == "ints":
            g.add_argument(o.flag, type=_ints(o.flag), metavar=o.metavar or "N,N", **kw)
        elif o.kind == "strs":
            g.add_argument(o.flag, type=_strs, metavar=o.metavar or "A,B", **kw)
        else:
            metavar = o.metavar or (None if o.choices else {int: "N", float: "X"}.get(o.kind, "TEXT"))
            g.add_argument(o.flag, type=o.kind, choices=o.choices, metavar=metavar, **kw)


# -- the job file ------------------------------------------------------------------------------------------------
def read_job(path: str | Path, command: str) -> dict[str, object]:
    """The values of the job file ``path`` for ``command``: {key: value}, checked against the options' kinds
    and choices; an unknown key or section is refused, naming the valid ones."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise RankdistillError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RankdistillError(f"--config {path} is not valid TOML: {e}") from None
    options = {o.key: o for o in job_options(command) if o.key}
    sections = list(dict.fromkeys(k.split(".")[0] for k in options if "." in k))
    top = [k for k in options if "." not in k]
    listed = f"the sections {', '.join(f'[{s}]' for s in sections)} and the top-level keys {', '.join(top)}"
    values = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            if name not in sections:
                raise RankdistillError(f"{path}: unknown section [{name}]; {command} takes {listed}")
            for key, v in value.items():
                full = f"{name}.{key}"
                if full not in options:
                    valid = ", ".join(k.split(".", 1)[1] for k in options if k.startswith(f"{name}."))
                    raise RankdistillError(f"{path}: unknown key {key!r} in [{name}]; [{name}] takes {valid}")
                values[full] = _checked(options[full], v, path)
        elif name in options:
            values[name] = _checked(options[name], value, path)
        elif name in sections:
            raise RankdistillError(f"{path}: {name} must be a section [{name}] of keys, got {value!r}")
        else:
            raise RankdistillError(f"{path}: unknown key {name!r}; {command} takes {listed}")
    return values


def _checked(o: Option, value, path: Path):
    """A job-file value as the flag would give it, or RankdistillError naming the key and what it must be."""
    def bad(what: str):
        return RankdistillError(f"{path}: {o.key} must be {what}, got {value!r}")

    if o.kind == "ints":
        if isinstance(value, str):
            try:
                return _ints(o.key)(value)
            except argparse.ArgumentTypeError:
                raise bad("a list of integers such as [64, 32]") from None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers such as [64, 32]")
        return tuple(value)
    if o.kind == "strs":
        if isinstance(value, str):
            return _strs(value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad('a list of strings such as ["a", "b"]')
        return tuple(v.strip() for v in value)
    if o.kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if o.kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if o.kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad("a number")
        return float(value)
    if o.key.endswith("split_time") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise bad("a string")
    if o.choices and value not in o.choices:
        raise bad(f"one of {', '.join(o.choices)}")
    if o.path and value and not Path(value).is_absolute():
        return str(path.parent / value)
    return value


def resolve(args: argparse.Namespace, *, check_required: bool = True) -> argparse.Namespace:
    """Fill every option of ``args.command`` that no flag gave: from the job file (``args.config``), else the
    default. ``args.given`` becomes the set of keys the flags or the file set. An mlp or lightgcn model scores
    with dot unless a score is given (the default two_tower score may be cosine)."""
    command = args.command
    options = job_options(command)
    from_file = read_job(args.config, command) if getattr(args, "config", None) else {}
    flagged = {o.dest for o in options if hasattr(args, o.dest)}
    given = set()
    for o in options:
        if o.dest in flagged:
            given.add(o.key or o.dest)
        elif o.key in from_file:
            setattr(args, o.dest, from_file[o.key])
            given.add(o.key)
        else:
            setattr(args, o.dest, o.default)
    if command == "run" and args.score_both is not None:  # --score: both models, unless a flag names one
        for side in ("teacher", "student"):
            if f"{side}.score" not in flagged:
                setattr(args, f"{side}.score", args.score_both)
                given.add(f"{side}.score")
    for section in ("teacher", "student") if command == "run" else ("model",):  # mlp, lightgcn: dot unless given
        if getattr(args, f"{section}.kind") != "two_tower" and f"{section}.score" not in given:
            setattr(args, f"{section}.score", "dot")
    args.given = given
    required = {"train": ("out",), "distill": ("out",)}.get(command, ())
    for name in required if check_required else ():
        if getattr(args, name) is None:
            raise RankdistillError(f"{command} needs --{name} MODEL_DIR (or {name} = \"...\" in a --config job file)")
    if command == "distill" and check_required and (args.teacher is None) == (args.teacher_scores is None):
        raise RankdistillError("distill needs a teacher: --teacher MODEL_DIR or --teacher-scores FILE (one of the "
                               "two, as a flag or in a --config job file)")
    return args


def job_toml(args: argparse.Namespace) -> str:
    """The resolved job of ``args`` (see :func:`resolve`) as TOML that ``--config`` reads back; unset options
    are commented out, paths are absolute."""
    lines = [f"# rankdistill {args.command}: the resolved configuration (defaults < --config file < flags)"]
    section = ""
    for o in sorted((o for o in job_options(args.command) if o.key), key=lambda o: "." in o.key):
        head, _, name = o.key.rpartition(".")
        if head != section:
            lines += ["", f"[{head}]"]
            section = head
        value = getattr(args, o.dest)
        if value is None:
            lines.append(f"# {name} =   (unset)")
            continue
        if o.path and value:  # read back from anywhere, a path means the same file
            value = os.path.abspath(value)
        line = f"{name} = {toml_value(value)}"
        if o.key == "device":
            line += f"  # here: {_device_here(value)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def toml_value(value) -> str:
    """A TOML literal of a bool, int, float, string or tuple/list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _device_here(name: str) -> str:
    try:
        return str(command_device(name))
    except RankdistillError:
        return "no CUDA device"


# -- typed configs of the resolved options -----------------------------------------------------------------
def _section(cls, args, section: str) -> dict:
    from rankdistill.config import JOB_SEED

    return {f.name: getattr(args, f"{section}.{f.name}") for f in fields(cls)
            if f.init and "help" in f.metadata and f.metadata.get("flag") != JOB_SEED}


def model_config(args: argparse.Namespace, section: str = "model"):
    """The ModelConfig of the section ``model`` (train, distill), ``teacher`` or ``student`` (run). (An mlp or
    lightgcn model scores with dot unless a score was given: :func:`resolve` sees to it.)"""
    from rankdistill.config import ModelConfig

    return ModelConfig(**_section(ModelConfig, args, section))


def train_config(args: argparse.Namespace):
    """The TrainConfig of the [train] options, seeded by the job's seed."""
    from rankdistill.config import TrainConfig

    return TrainConfig(**_section(TrainConfig, args, "train"), seed=args.seed)


def distill_config(args: argparse.Namespace):
    from rankdistill.config import DistillConfig

    return DistillConfig(**_section(DistillConfig, args, "distill"))


def run_config(args: argparse.Namespace, **overrides):
    """The RunConfig of the resolved options of ``run`` (``overrides``: fields given by the command, such as
    the device under torchrun)."""
    from rankdistill.pipeline import RunConfig

    sizes = getattr(args, "sizes", ())  # run only
    if any(d < 1 for d in sizes):
        raise RankdistillError(f"--sizes must be positive, got {','.join(map(str, sizes))}")
    if not args.ks or any(k < 1 for k in args.ks):
        raise RankdistillError(f"--ks must be positive cut-offs such as 10,20, got {','.join(map(str, args.ks))}")
    values = dict(train=train_config(args), ks=args.ks, split=args.split, split_ratio=args.split_ratio,
                  split_time=args.split_time, seed=args.seed, device=args.device, quiet=args.quiet)
    if args.command == "run":
        values.update(teacher=model_config(args, "teacher"), student=model_config(args, "student"),
                      distill=distill_config(args), sizes=sizes, student_epochs=args.student_epochs,
                      workers=args.workers)
    elif args.command == "train":
        values.update(teacher=model_config(args))
    else:
        values.update(student=model_config(args), distill=distill_config(args))
    values.update(overrides)
    return RunConfig(**values)


# -- helpers the other commands share -----------------------------------------------------------------------
def configure_torch(threads: int) -> None:
    import torch

    if threads < 1:
        raise RankdistillError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def command_device(name: str):
    """The torch.device of ``--device`` (see rankdistill.device); under torchrun the process group's, which
    ``--device`` may only confirm (NCCL: this rank's GPU; gloo: the CPU)."""
    import torch

    from rankdistill.device import resolve_device
    from rankdistill.train import processes

    if processes.active():
        device = processes.process_device()
        wanted = str(name).strip().lower()
        if wanted != "auto" and torch.device(wanted).type != device.type:
            raise RankdistillError(f"--device {name}: under torchrun the device is the process group's, here "
                                   f"{device.type} (NCCL when CUDA is available, else gloo); leave --device auto")
        return device
    return resolve_device(name)


def parse_widths(text: str, option: str) -> tuple[int, ...]:
    try:
        return _ints(option)(text)
    except argparse.ArgumentTypeError as e:
        raise RankdistillError(str(e)) from None


def parse_ks(text: str) -> tuple[int, ...]:
    """"10,20" -> (10, 20); RankdistillError naming the bad part otherwise."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise RankdistillError(f"--k must be positive integers separated by commas, such as 10,20; got {text!r}")
    return tuple(dict.fromkeys(int(p) for p in parts))


def parse_metrics(text: str) -> tuple[str, ...]:
    from rankdistill.evaluation.metrics import METRICS

    names = tuple(dict.fromkeys(p.strip().lower() for p in str(text).split(",") if p.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise RankdistillError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                               f"choose from {', '.join(METRICS)}")
    return names


def split_from_args(data, args: argparse.Namespace):
    """The split named by --split/--split-ratio/--split-time (seeded by --seed)."""
    from rankdistill.data.split import make_split

    return make_split(data, getattr(args, "split", None), getattr(args, "seed", 0),
                      getattr(args, "split_ratio", None), getattr(args, "split_time", None))


def split_args_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) is not None for name in ("split", "split_ratio", "split_time"))
