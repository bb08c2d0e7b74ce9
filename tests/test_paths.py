"""Bad paths, full disks and concurrent commands: one error line and status 2, checked before any work,
nothing half-written left behind (issue 13, items 11, 12 and 16)."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rankdistill.cli import main
from rankdistill.errors import RankdistillError
from rankdistill.outlock import lock_output, lock_path
from rankdistill.paths import atomic_write_text, input_path, output_dir

FAST = ["--dim", "8", "--epochs", "1", "--batch-size", "512", "--negatives", "16", "--quiet"]


@pytest.fixture()
def log_csv(tmp_path, tiny_frame):
    path = tmp_path / "log.csv"
    tiny_frame.to_csv(path, index=False)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _temporaries(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name
                  or ".rankdistill-probe-" in p.name)


class _NoLoad:
    """Replaces DataSpec.load: a command that reads the data before checking --out fails the test."""

    def __init__(self, monkeypatch):
        monkeypatch.setattr("rankdistill.data.load.DataSpec.load", self)

    def __call__(self, *args, **kwargs):
        raise AssertionError("the data was loaded before --out was checked")


# -- item 11: bad input paths -----------------------------------------------------------------------------

def test_data_path_that_is_a_symlink_loop(tmp_path, capsys):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    assert main(["train", "--data", str(loop), "--out", str(tmp_path / "m"), *FAST]) == 2
    assert _one_error_line(capsys) == (f"error: data path {loop} is a symbolic link loop (it points back to "
                                       "itself); point it at a real file or folder")
    assert not (tmp_path / "m").exists()


def test_model_directory_that_is_a_symlink_loop(tmp_path):
    from rankdistill.modeldir import load

    link = tmp_path / "model"
    link.symlink_to(link)
    with pytest.raises(RankdistillError, match="model directory .* is a symbolic link loop"):
        load(link)


def test_unreadable_data_file(tmp_path, log_csv, capsys, monkeypatch):
    """As a non-root user sees a file of mode 000 (root reads every file, so os.access stands in)."""
    log_csv.chmod(0)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(log_csv) else real_access(p, mode, **kw))
    assert main(["train", "--data", str(log_csv), "--out", str(tmp_path / "m"), *FAST]) == 2
    assert f"data path {log_csv} cannot be read (permission denied)" in _one_error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_permission_error_the_checks_missed_is_one_line(tmp_path, log_csv, capsys, monkeypatch):
    """A PermissionError from deep inside (here the CSV reader) still gives one line and status 2."""
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(log_csv))

    monkeypatch.setattr("pandas.read_csv", denied)
    assert main(["train", "--data", str(log_csv), "--out", str(tmp_path / "m"), *FAST]) == 2
    assert _one_error_line(capsys) == (f"error: cannot use {log_csv}: permission denied; "
                                       "check the path and its permissions")


# -- item 11: bad --out, found before any work ---------------------------------------------------------------

def test_out_that_is_an_existing_file_is_refused_before_the_data_is_read(tmp_path, log_csv, capsys, monkeypatch):
    _NoLoad(monkeypatch)
    (tmp_path / "f").write_text("mine")
    assert main(["train", "--data", str(log_csv), "--out", str(tmp_path / "f"), *FAST]) == 2
    assert _one_error_line(capsys) == f"error: --out {tmp_path / 'f'} is a file; name a directory"
    assert (tmp_path / "f").read_text() == "mine"


def test_out_below_an_existing_file(tmp_path, log_csv, capsys, monkeypatch):
    _NoLoad(monkeypatch)
    (tmp_path / "f").write_text("mine")
    assert main(["train", "--data", str(log_csv), "--out", str(tmp_path / "f" / "m"), *FAST]) == 2
    assert f"{tmp_path / 'f'} is a file, not a folder" in _one_error_line(capsys)


def test_out_under_a_read_only_directory(tmp_path, log_csv, capsys, monkeypatch):
    """Mode 555 stops every user but root; os.mkdir raising EACCES there stands in for the kernel."""
    _NoLoad(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == str(ro):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    assert main(["train", "--data", str(log_csv), "--out", str(ro / "m"), *FAST]) == 2
    assert _one_error_line(capsys) == (f"error: --out {ro / 'm'}: cannot create files in {ro} (permission denied); "
                                       "choose a directory you can write to")
    ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_out_under_proc(tmp_path, log_csv, capsys, monkeypatch):
    _NoLoad(monkeypatch)
    assert main(["train", "--data", str(log_csv), "--out", "/proc/rankdistill-test/m", *FAST]) == 2
    assert "--out /proc/rankdistill-test/m: cannot create files in /proc" in _one_error_line(capsys)


def test_distill_checks_out_before_loading_the_teacher(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["distill", "--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "f"), *FAST]) == 2
    assert "--out" in _one_error_line(capsys)


def test_run_out_that_is_a_file(tmp_path, log_csv, capsys, monkeypatch):
    _NoLoad(monkeypatch)
    (tmp_path / "f").write_text("")
    assert main(["run", "--data", str(log_csv), "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert _one_error_line(capsys) == f"error: --out {tmp_path / 'f'} is a file; name a directory"


@pytest.mark.parametrize("out", [".", "..", "./"])
def test_working_directory_is_never_a_model_directory_to_replace(tmp_path, log_csv, capsys, monkeypatch, out):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _NoLoad(monkeypatch)
    assert main(["train", "--data", str(log_csv), "--out", out, *FAST]) == 2
    assert "is the working directory" in _one_error_line(capsys)
    assert list(work.iterdir()) == []


def test_save_model_refuses_the_working_directory(tmp_path, monkeypatch, tiny_frame, tiny_split):
    from rankdistill.config import ModelConfig
    from rankdistill.data.interactions import Interactions
    from rankdistill.modeldir import save_model
    from helpers import tiny_student

    monkeypatch.chdir(tmp_path)
    data = Interactions.from_frame(tiny_frame, "tiny")
    with pytest.raises(RankdistillError, match="is the working directory"):
        save_model(".", tiny_student(tiny_split), ModelConfig(embedding_dim=4), data, tiny_split)
    assert list(tmp_path.iterdir()) == []


def test_foreign_directory_gets_no_checkpoint_or_log(tmp_path, log_csv, capsys):
    """Refused before training: no checkpoints/ or train_log.jsonl written into a directory then refused."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["train", "--data", str(log_csv), "--out", str(mine), *FAST]) == 2
    assert "exists and is not a rankdistill model directory" in _one_error_line(capsys)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_input_path_resolves_a_good_path(tmp_path, log_csv):
    (tmp_path / "link.csv").symlink_to(log_csv)
    assert input_path(tmp_path / "link.csv") == log_csv.resolve()


def test_output_dir_leaves_no_probe_behind(tmp_path):
    assert output_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    assert list(tmp_path.iterdir()) == []


# -- item 12: a full disk ------------------------------------------------------------------------------------

class _FullDiskFile:
    """A file opened for writing on a disk with ``room`` bytes left: the write that would pass it raises
    OSError(ENOSPC), as the kernel does (torch.save then raises RuntimeError 'unexpected pos' over it)."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False


def _full_disk(monkeypatch, module, room=1000):
    """Files ``module`` opens for writing get ``room`` bytes before the disk is full."""
    import builtins

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FullDiskFile(f, room) if "w" in mode or "a" in mode else f

    monkeypatch.setattr(module, "open", fake_open, raising=False)


def test_torch_save_on_a_full_disk_raises_runtime_error_over_the_os_error(tmp_path):
    """Why the checks look behind RuntimeError: what torch.save raises when a write fails."""
    with open(tmp_path / "x.pt", "wb") as f, pytest.raises(RuntimeError, match="unexpected pos") as info:
        torch.save({"w": torch.zeros(1000)}, _FullDiskFile(f, 1000))
    assert isinstance(info.value.__context__, OSError) and info.value.__context__.errno == errno.ENOSPC


def test_full_disk_while_checkpointing_is_one_error_line(tmp_path, log_csv, capsys, monkeypatch):
    import rankdistill.train.checkpoint

    _full_disk(monkeypatch, rankdistill.train.checkpoint)
    out = tmp_path / "m"
    assert main(["train", "--data", str(log_csv), "--out", str(out), *FAST]) == 2
    line = _one_error_line(capsys)
    assert line == (f"error: cannot write {out / 'checkpoints' / 'teacher' / 'last.pt'}: no space left on device; "
                    "free some space or write elsewhere")
    assert _temporaries(tmp_path) == []


def test_full_disk_while_writing_the_model_keeps_the_old_one(tmp_path, log_csv, capsys, monkeypatch):
    out = tmp_path / "m"
    assert main(["train", "--data", str(log_csv), "--out", str(out), *FAST]) == 0
    weights = (out / "weights.pt").read_bytes()
    import rankdistill.modeldir

    _full_disk(monkeypatch, rankdistill.modeldir)
    capsys.readouterr()
    assert main(["train", "--data", str(log_csv), "--out", str(out), *FAST]) == 2  # resumes, then saves
    assert "no space left on device" in _one_error_line(capsys)
    assert (out / "weights.pt").read_bytes() == weights  # the previous model is intact
    assert (out / "checkpoints").is_dir()  # and the run's files went back into it
    assert _temporaries(tmp_path) == []


def test_full_disk_when_the_model_is_renamed_into_place_restores_the_old_one(tmp_path, tiny_frame, tiny_split,
                                                                             monkeypatch):
    from rankdistill.config import ModelConfig
    from rankdistill.data.interactions import Interactions
    from rankdistill.modeldir import load, save_model
    from helpers import tiny_student

    data = Interactions.from_frame(tiny_frame, "tiny")
    out = save_model(tmp_path / "m", tiny_student(tiny_split, seed=1), ModelConfig(embedding_dim=4), data, tiny_split)
    before = load(out).model.state_dict()
    real_rename = os.rename

    def rename(src, dst):  # the model directory's final rename fails (ENOSPC stands for any failure)
        if ".tmp-" in os.fspath(src) and os.fspath(dst) == str(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(RankdistillError, match="no space left on device"):
        save_model(out, tiny_student(tiny_split, seed=2), ModelConfig(embedding_dim=4), data, tiny_split)
    monkeypatch.undo()
    after = load(out).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert _temporaries(tmp_path) == []


def test_atomic_write_text_removes_its_temporary_on_a_full_disk(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(RankdistillError, match=f"cannot write {tmp_path / 'r.json'}: no space left on device"):
        atomic_write_text(tmp_path / "r.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_logging_an_epoch(tmp_path, monkeypatch):
    import rankdistill.train.callbacks
    from rankdistill.train.callbacks import JsonlLog

    log = JsonlLog(tmp_path / "train_log.jsonl")
    _full_disk(monkeypatch, rankdistill.train.callbacks, room=0)
    with pytest.raises(RankdistillError, match=r"train_log.jsonl: no space left on device"):
        log.on_epoch_end({"epoch": 1})


# -- item 16: one command per output directory ---------------------------------------------------------------

def _hold_lock(out):
    """A second process that takes the lock of ``out`` and waits; -> the process (lock held once it printed)."""
    code = textwrap.dedent(f"""
        import sys, time
        from rankdistill.outlock import lock_output
        with lock_output({str(out)!r}):
            print("held", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_command_on_the_same_out_is_refused(tmp_path, log_csv, capsys, monkeypatch):
    out = tmp_path / "m"
    proc = _hold_lock(out)
    try:
        _NoLoad(monkeypatch)
        assert main(["train", "--data", str(log_csv), "--out", str(out), *FAST]) == 2
        assert _one_error_line(capsys) == (f"error: --out {out} is in use by another rankdistill command (lock "
                                           f"{lock_path(out)} is held); wait for it to finish, or choose another --out")
        assert not out.exists()
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_run_does_not_block_the_next(tmp_path, log_csv):
    out = tmp_path / "m"
    proc = _hold_lock(out)
    proc.kill()  # SIGKILL: no clean-up ran, the lock file stays
    proc.wait()
    assert lock_path(out).exists()
    assert main(["train", "--data", str(log_csv), "--out", str(out), *FAST]) == 0


def test_lock_is_released_after_the_command(tmp_path):
    with lock_output(tmp_path / "m"):
        with pytest.raises(RankdistillError, match="is in use by another rankdistill command"):
            with lock_output(tmp_path / "m"):
                pass
    with lock_output(tmp_path / "m"):  # released: taken again at once
        pass


def test_other_ranks_of_one_torchrun_command_do_not_take_the_lock(tmp_path, monkeypatch):
    with lock_output(tmp_path / "m"):
        monkeypatch.setenv("RANK", "1")
        with lock_output(tmp_path / "m"):
            pass


# -- item 11: the output files of the other commands ---------------------------------------------------------

@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_frame):
    d = tmp_path_factory.mktemp("teacher")
    tiny_frame.to_csv(d / "log.csv", index=False)
    assert main(["train", "--data", str(d / "log.csv"), "--out", str(d / "t"), *FAST]) == 0
    return d / "t"


def test_recommend_out_that_is_a_folder(teacher, tmp_path, capsys):
    (tmp_path / "r.csv").mkdir()
    assert main(["recommend", "--model", str(teacher), "--out", str(tmp_path / "r.csv")]) == 2
    assert _one_error_line(capsys) == f"error: --out {tmp_path / 'r.csv'} is a folder; name a file"


def test_recommend_out_under_proc_is_refused_before_ranking(teacher, capsys, monkeypatch):
    monkeypatch.setattr("rankdistill.commands.recommend.top_k", _NoLoad(monkeypatch))
    assert main(["recommend", "--model", str(teacher), "--out", "/proc/rankdistill-test.csv"]) == 2
    assert "cannot create files in /proc" in _one_error_line(capsys)


def test_data_synth_out_under_proc(capsys, monkeypatch):
    monkeypatch.setattr("rankdistill.commands.data.make_synthetic", _NoLoad(monkeypatch))
    assert main(["data", "synth", "--out", "/proc/rankdistill-test.csv"]) == 2
    assert "cannot create files in /proc" in _one_error_line(capsys)


def test_evaluate_per_user_under_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    for name in ("run.csv", "qrels.csv"):
        (tmp_path / name).write_text("user,item,score\n1,2,0.5\n")
    assert main(["evaluate", "--run", str(tmp_path / "run.csv"), "--qrels", str(tmp_path / "qrels.csv"),
                 "--per-user", str(tmp_path / "f" / "u.parquet")]) == 2
    assert f"{tmp_path / 'f'} is a file, not a folder" in _one_error_line(capsys)


def test_evaluate_model_out_that_is_a_folder(teacher, tmp_path, capsys):
    assert main(["evaluate", "--model", str(teacher), "--out", str(tmp_path)]) == 2
    assert _one_error_line(capsys) == f"error: --out {tmp_path} is a folder; name a file"


def test_distill_into_the_teachers_own_directory_is_refused(teacher, capsys):
    config = (teacher / "config.json").read_text()
    assert main(["distill", "--teacher", str(teacher), "--out", str(teacher), *FAST]) == 2
    assert "is the teacher's directory: the student would replace the teacher" in _one_error_line(capsys)
    assert (teacher / "config.json").read_text() == config


def test_distill_knowledge_file_under_proc(teacher, tmp_path, capsys):
    assert main(["distill", "--teacher", str(teacher), "--out", str(tmp_path / "s"), "--knowledge",
                 "/proc/rankdistill-test.parquet", *FAST]) == 2
    assert "--knowledge /proc/rankdistill-test.parquet: cannot create files in /proc" in _one_error_line(capsys)
    assert not (tmp_path / "s").exists()


def test_full_disk_while_writing_recommendations(teacher, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pandas.DataFrame.to_csv", full)
    assert main(["recommend", "--model", str(teacher), "--out", str(tmp_path / "r.csv")]) == 2
    assert _one_error_line(capsys) == (f"error: cannot write {tmp_path / 'r.csv'}: no space left on device; "
                                       "free some space or write elsewhere")
    assert _temporaries(tmp_path) == []


def test_evaluate_model_in_a_read_only_directory_says_so_before_evaluating(teacher, capsys, monkeypatch):
    monkeypatch.setattr("rankdistill.commands.evaluate_model.evaluate", _NoLoad(monkeypatch))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkdtemp", read_only)
    assert main(["evaluate", "--model", str(teacher)]) == 2
    assert _one_error_line(capsys) == (f"error: metrics file (choose another with --out) {teacher / 'metrics.json'}: "
                                       f"cannot create files in {teacher} (read-only file system); "
                                       "choose a directory you can write to")


def test_writing_leaves_other_errors_alone(tmp_path):
    """Only errors of the environment become one line; a bug keeps its type and traceback."""
    from rankdistill.paths import writing

    with pytest.raises(RuntimeError, match="a bug"):
        with writing(tmp_path / "x"):
            raise RuntimeError("a bug")
    with pytest.raises(ValueError, match="a bug too"):
        with writing(tmp_path / "x"):
            raise ValueError("a bug too") from OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="Bad file descriptor"):
        with writing(tmp_path / "x"):
            raise OSError(errno.EBADF, "Bad file descriptor")


@pytest.mark.parametrize("command", ["run", "distill"])
def test_run_and_distill_also_refuse_an_out_in_use(teacher, tmp_path, capsys, monkeypatch, command):
    out = tmp_path / "o"
    _NoLoad(monkeypatch)
    extra = ["--teacher", str(teacher)] if command == "distill" else []
    with lock_output(out):
        assert main([command, *extra, "--out", str(out), "--quiet"]) == 2
    assert "is in use by another rankdistill command" in _one_error_line(capsys)


def test_knowledge_or_teacher_scores_inside_the_students_out_are_refused(tmp_path, capsys):
    """The student's model directory replaces --out as a whole: a knowledge or scores file inside it would be
    lost (or, for a new --out, make the directory one that is then refused)."""
    from rankdistill.cli import main

    teacher = tmp_path / "t"
    teacher.mkdir()
    out = tmp_path / "s"
    assert main(["distill", "--teacher", str(teacher), "--out", str(out), "--knowledge", str(out / "k.parquet")]) == 2
    assert "--knowledge" in capsys.readouterr().err
    assert main(["distill", "--teacher-scores", str(out / "scores.csv"), "--data", str(teacher), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert "--teacher-scores" in err and "inside --out" in err and not out.exists()
