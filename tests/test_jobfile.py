"""One job file for every knob: --config job.toml for run, train and distill, flags over the file, the
defaults of the command line equal to the typed configs', unknown keys refused, and config --show."""

import json
import os
import tomllib
from dataclasses import fields

import pytest

from rankdistill.cli import main, parse_args
from rankdistill.commands.options import (distill_config, job_options, job_toml, model_config, run_config,
                                          toml_value, train_config)
from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.pipeline import RunConfig


def _job(tmp_path, text: str, name: str = "job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _keys(command: str) -> set[str]:
    return {o.key for o in job_options(command) if o.key}


# -- every field, one default --------------------------------------------------------------------------------
@pytest.mark.parametrize("command, sections", [
    ("run", {"teacher": ModelConfig, "student": ModelConfig, "train": TrainConfig, "distill": DistillConfig}),
    ("train", {"model": ModelConfig, "train": TrainConfig}),
    ("distill", {"model": ModelConfig, "train": TrainConfig, "distill": DistillConfig}),
])
def test_every_field_of_the_typed_configs_is_a_job_key(command, sections):
    expected = {f"{s}.{f.name}" for s, cls in sections.items() for f in fields(cls)
                if f.init and not (cls is TrainConfig and f.name == "seed")}  # the job's seed sets train.seed
    expected |= {"seed", "device", "quiet", "ks", "data.split", "data.split_ratio", "data.split_time"}
    assert expected <= _keys(command)


def test_command_line_defaults_are_the_python_defaults():
    assert run_config(parse_args(["run"])) == RunConfig()
    train = run_config(parse_args(["train", "--out", "m"]))
    assert (train.teacher, train.train) == (RunConfig().teacher, TrainConfig())
    assert train.train.l2 == TrainConfig().l2 == 0.0  # once 0.01 on the command line and 0.0 in Python
    distill = run_config(parse_args(["distill", "--teacher", "t", "--out", "s"]))
    assert (distill.student, distill.train, distill.distill) == (RunConfig().student, TrainConfig(), DistillConfig())


def test_student_epochs_from_the_flag_or_the_job_file(tmp_path):
    """--student-epochs (job key student_epochs) reaches the RunConfig; unset it is twice --epochs."""
    assert run_config(parse_args(["run", "--student-epochs", "3"])).alone().train.epochs == 3
    assert run_config(parse_args(["run", "--config", _job(tmp_path, "student_epochs = 7\n")])).student_epochs == 7
    assert run_config(parse_args(["run", "--epochs", "6"])).alone().train.epochs == 12


def test_help_shows_the_dataclass_help_and_default(capsys):
    with pytest.raises(SystemExit):
        parse_args(["distill", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    help_text = " ".join(DistillConfig.__dataclass_fields__["kd_rows"].metadata["help"].split())
    assert f"--kd-rows N {help_text} (default: 64; job file: distill.kd_rows)" in out


# -- the file and the flags ---------------------------------------------------------------------------------
def test_job_file_sets_loss_hyperparameters_that_have_no_flag_of_old(tmp_path):
    job = _job(tmp_path, '[distill]\nkd = "rd+dcd"\nrd_k = 5\nrd_mu = 0.3\ndcd_samples = 4\nde_experts = 3\n'
                         'kd_rows = 8\nauto_menu = ["rrd", "listkl"]\n')
    d = distill_config(parse_args(["distill", "--teacher", "t", "--out", "s", "--config", job]))
    assert (d.kd, d.rd_k, d.rd_mu, d.dcd_samples, d.de_experts, d.kd_rows) == ("rd+dcd", 5, 0.3, 4, 3, 8)
    assert d.auto_menu == ("rrd", "listkl")


def test_flags_override_the_file(tmp_path):
    job = _job(tmp_path, "seed = 4\n[train]\nepochs = 7\nbf16 = false\nl2 = 0.5\n[model]\nembedding_dim = 32\n")
    args = parse_args(["train", "--out", "m", "--config", job, "--epochs", "3", "--bf16", "--dim", "8"])
    t = train_config(args)
    assert (t.epochs, t.bf16, t.l2, t.seed) == (3, True, 0.5, 4)  # flags win, the file fills the rest
    assert model_config(args).embedding_dim == 8


def test_run_sections_teacher_and_student(tmp_path):
    job = _job(tmp_path, '[teacher]\nembedding_dim = 32\nscore = "dot"\n[student]\nembedding_dim = 8\nlr = 0.3\n')
    config = run_config(parse_args(["run", "--config", job, "--student-dim", "12"]))
    assert (config.teacher.embedding_dim, config.teacher.score) == (32, "dot")
    assert (config.student.embedding_dim, config.student.lr) == (12, 0.3)


def test_run_score_flag_sets_both_models_unless_one_is_named():
    config = run_config(parse_args(["run", "--score", "dot", "--student-score", "cosine"]))
    assert (config.teacher.score, config.student.score) == ("dot", "cosine")


def test_mlp_scores_with_dot_unless_a_score_is_given(tmp_path):
    assert model_config(parse_args(["train", "--out", "m", "--model", "mlp"])).score == "dot"
    job = _job(tmp_path, '[model]\nkind = "mlp"\nscore = "cosine"\n')
    with pytest.raises(ValueError, match="score='cosine' needs a two_tower model"):
        model_config(parse_args(["train", "--out", "m", "--config", job]))


def test_relative_paths_in_a_job_file_are_relative_to_its_folder(tmp_path):
    (tmp_path / "jobs").mkdir()
    job = _job(tmp_path, 'teacher = "models/t"\nout = "/abs/s"\n[data]\npath = "log.csv"\n', "jobs/job.toml")
    args = parse_args(["distill", "--config", job])
    assert (args.teacher, args.out, args.data) == (str(tmp_path / "jobs/models/t"), "/abs/s",
                                                   str(tmp_path / "jobs/log.csv"))


def test_train_needs_out_from_a_flag_or_the_file(tmp_path, capsys):
    assert main(["train", "--quiet"]) == 2
    assert "train needs --out MODEL_DIR (or out = " in capsys.readouterr().err
    assert parse_args(["train", "--config", _job(tmp_path, 'out = "m"\n')]).out == str(tmp_path / "m")


# -- refusals: exit 2, one line naming the key and the valid ones ------------------------------------------------
@pytest.fixture(autouse=True)
def _in_a_temporary_directory(tmp_path, monkeypatch):
    """The relative --out of these commands (and the lock file beside it) land in tmp_path, not the repository."""
    monkeypatch.chdir(tmp_path)


def _refused(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_unknown_key_is_refused_naming_it_and_the_valid_ones(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, "[train]\nepoch = 3\n")])
    assert "unknown key 'epoch' in [train]" in err and "epochs, batch_size, negatives" in err


def test_unknown_top_level_key_is_refused(tmp_path, capsys):
    err = _refused(capsys, ["run", "--config", _job(tmp_path, "sed = 1\n")])
    assert "unknown key 'sed'" in err and "seed" in err and "[distill]" in err


def test_unknown_section_is_refused(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, "[distill]\nrd_k = 3\n")])
    assert "unknown section [distill]" in err and "[model], [train]" in err


def test_a_section_given_as_a_value_is_refused(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, "train = 3\n")])
    assert "train must be a section [train]" in err


def test_wrong_type_is_refused_naming_the_key(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, '[train]\nepochs = "3"\n')])
    assert "train.epochs must be an integer, got '3'" in err


def test_value_outside_the_choices_is_refused(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, '[train]\nloss = "hinge"\n')])
    assert "train.loss must be one of softmax, bsl, bpr, bce" in err


def test_invalid_toml_is_refused(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, "[train\nepochs = 3\n")])
    assert "is not valid TOML" in err


def test_missing_job_file_is_refused(tmp_path, capsys):
    assert "no such file" in _refused(capsys, ["run", "--config", str(tmp_path / "nope.toml")])


def test_bad_value_in_the_file_is_the_config_error(tmp_path, capsys):
    err = _refused(capsys, ["train", "--out", "m", "--config", _job(tmp_path, "[model]\nembedding_dim = 6\n")])
    assert "embedding_dim must be a multiple of 4" in err


# -- config --show ------------------------------------------------------------------------------------------------
def test_show_prints_defaults_then_file_then_flags(tmp_path, capsys):
    job = _job(tmp_path, "[distill]\nrd_k = 5\nde_experts = 3\n")
    assert main(["config", "--show", "distill", "--config", job, "--rd-k", "7"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert (shown["distill"]["rd_k"], shown["distill"]["de_experts"], shown["distill"]["kd_rows"]) == (7, 3, 64)
    assert "teacher" not in shown and "out" not in shown  # unset: commented out


@pytest.mark.parametrize("command, flags", [
    ("run", ["--epochs", "3", "--student-epochs", "5", "--teacher-dim", "32", "--score", "dot", "--sizes", "4,8",
             "--split", "ratio", "--split-ratio", "0.7,0.1,0.2", "--kd", "rd", "--rd-k", "5", "--no-in-batch-negatives"]),
    ("train", ["--out", "m", "--model", "lightgcn", "--layers", "2", "--clip-grad-norm", "1.5", "--min-rating", "4"]),
    ("distill", ["--teacher", "t", "--out", "s", "--tower-layers", "8,4", "--auto-menu", "rrd,listkl", "--cached-only",
                 "--knowledge", "k.parquet", "--split-time", "0.9", "--ks", "5,50"]),
])
def test_show_reads_back_as_the_same_config(tmp_path, command, flags):
    direct = parse_args([command, *flags])
    job = _job(tmp_path, job_toml(direct))
    again = parse_args([command, "--config", job])
    assert run_config(again) == run_config(direct)
    for name in ("cached_only", "threads", "quiet"):
        assert getattr(again, name, None) == getattr(direct, name, None)
    for name in ("out", "teacher", "knowledge"):  # shown absolute: the same files from wherever the job is read
        if getattr(direct, name, None) is not None:
            assert getattr(again, name) == os.path.abspath(getattr(direct, name))


def test_toml_literals_read_back():
    values = {"s": 'a "quoted" \\ path\n', "f": 1e-05, "i": -3, "b": False, "l": ("x", "y"), "inf": float("inf")}
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in values.items())
    back = tomllib.loads(text)
    assert back == {**values, "l": ["x", "y"]}


def test_train_from_a_job_file_end_to_end(tmp_path, tiny_frame):
    tiny_frame.to_csv(tmp_path / "log.csv", index=False)
    job = _job(tmp_path, 'out = "teacher"\nquiet = true\n[data]\npath = "log.csv"\n[model]\nembedding_dim = 8\n'
                         '[train]\nepochs = 1\nnegatives = 32\ndense_lr = 0.002\nselect_metric = "recall@10"\n')
    assert main(["train", "--config", job]) == 0
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert config["model"]["embedding_dim"] == 8
    assert (config["train"]["epochs"], config["train"]["dense_lr"], config["train"]["select_metric"]) == \
        (1, 0.002, "recall@10")


def test_the_readme_job_file_is_a_valid_distill_job(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = run_config(parse_args(["distill", "--config", _job(tmp_path, example)]))
    assert (config.distill.kd, config.distill.rd_k, config.student.embedding_dim) == ("rd+dcd:0.5", 5, 16)
