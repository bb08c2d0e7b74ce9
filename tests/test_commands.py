"""The offline-job commands end to end on tiny files the tests write: train -> evaluate -> distill ->
recommend, data synth, and the dropped counts in report.json."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from rankdistill.cli import main
from rankdistill.commands import evaluate_model
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from helpers import QUICK_TRAIN as FAST, string_id_csv

KD = ["--kd-topk", "20", "--kd-samples", "4"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_frame):
    """A CSV with string IDs and a teacher trained on it (shared by the tests of this module)."""
    d = tmp_path_factory.mktemp("commands")
    string_id_csv(tiny_frame, d / "log.csv")
    assert main(["train", "--data", str(d / "log.csv"), "--out", str(d / "teacher"), "--dim", "16", *FAST]) == 0
    return d


def _evaluate(model, out=None):
    return evaluate_model.main(argparse.Namespace(model=str(model), out=out))


def test_train_writes_a_model_directory(workdir):
    config = json.loads((workdir / "teacher" / "config.json").read_text())
    assert config["name"] == "teacher" and config["model"]["embedding_dim"] == 16
    assert config["split"] == {"kind": "temporal-leave-one-out"} and config["train"]["epochs"] == 2
    assert set(config["metrics"]["metrics"]) == {"ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20", "mrr@20"}


def test_evaluate_model_reproduces_the_training_metrics(workdir, capsys, tmp_path):
    trained = json.loads((workdir / "teacher" / "metrics.json").read_text())["metrics"]
    assert _evaluate(workdir / "teacher", str(tmp_path / "m.json")) == 0
    printed = json.loads(capsys.readouterr().out)  # one JSON object
    assert printed["metrics"] == trained and printed["users"] == 300 and printed["on"] == "test"
    assert json.loads((tmp_path / "m.json").read_text()) == printed


def test_evaluate_command_line_with_other_cutoffs(workdir, capsys, tmp_path):
    trained = json.loads((workdir / "teacher" / "metrics.json").read_text())["metrics"]
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(workdir / "teacher"), "--k", "10,50", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["k"] == [10, 50] and printed["metrics"]["ndcg@10"] == trained["ndcg@10"]
    assert "precision@50" in printed["metrics"] and json.loads(out.read_text()) == printed


def test_evaluate_into_a_model_directory_in_use_is_refused(workdir, capsys):
    """evaluate --model writes MODEL_DIR/metrics.json: not while another command holds that directory's lock
    (a train/distill --out that will rename a new model into place)."""
    from rankdistill.outlock import lock_output

    before = (workdir / "teacher" / "metrics.json").read_text()
    with lock_output(workdir / "teacher"):
        assert main(["evaluate", "--model", str(workdir / "teacher")]) == 2
    assert "is in use by another rankdistill command" in capsys.readouterr().err
    assert (workdir / "teacher" / "metrics.json").read_text() == before


def test_evaluate_on_data_with_other_vocabularies_is_refused(workdir, tmp_path, capsys):
    other = tmp_path / "other.csv"
    pd.read_csv(workdir / "log.csv").iloc[:-600].to_csv(other, index=False)
    assert main(["evaluate", "--model", str(workdir / "teacher"), "--data", str(other)]) == 2
    assert "has 300 users and 150 items but the data" in capsys.readouterr().err


def test_evaluate_and_export_read_other_data_as_the_model_recorded(tmp_path, tiny_frame, capsys):
    """--data of evaluate --model and export replaces the path only: the columns, the rating threshold and the
    k-core filter the model was trained with still apply (read with the defaults, this file has no 'user'
    column)."""
    rng = np.random.default_rng(0)
    frame = tiny_frame.rename(columns={"user": "uid", "item": "iid"}).assign(stars=rng.integers(1, 6, len(tiny_frame)))
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "copy.csv", index=False)
    model = tmp_path / "m"
    assert main(["train", "--data", str(tmp_path / "a.csv"), "--user-col", "uid", "--item-col", "iid",
                 "--rating-col", "stars", "--min-rating", "3", "--min-user-interactions", "3", "--out", str(model),
                 "--dim", "8", *FAST]) == 0
    assert main(["evaluate", "--model", str(model), "--out", str(tmp_path / "own.json")]) == 0
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "copy.csv"),
                 "--out", str(tmp_path / "copy.json")]) == 0
    own, other = (json.loads((tmp_path / f).read_text()) for f in ("own.json", "copy.json"))
    assert other["metrics"] == own["metrics"] and other["users"] == own["users"]
    assert other["data"] == str((tmp_path / "copy.csv"))
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "e"), "--quantize", "int8",
                 "--data", str(tmp_path / "copy.csv")]) == 0
    capsys.readouterr()


def test_distill_from_a_teacher_directory(workdir):
    out = workdir / "student"
    assert main(["distill", "--teacher", str(workdir / "teacher"), "--out", str(out), "--dim", "4", *KD, *FAST]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "distilled" and config["model"]["embedding_dim"] == 4
    assert config["teacher"]["path"] == str((workdir / "teacher").resolve()) and config["distill"]["kd"] == "auto"
    auto = config["auto"]  # the default --kd auto: pilots, the student alone as a pilot too, the choice
    assert set(auto["pilots"]) == set(config["distill"]["auto_menu"]) and "student_alone" in auto
    assert auto["chosen"] == "none" or auto["pilots"][auto["chosen"]] > auto["student_alone"]
    assert config["split"] == {"kind": "temporal-leave-one-out"} and config["data"]["path"].endswith("log.csv")


def test_distill_refuses_a_teacher_of_other_data_that_trained_on_held_out_rows(workdir, tmp_path, capsys):
    """The log cut inside user 273's rows: that user's last two rows left are in the teacher's training set."""
    other = tmp_path / "other.csv"
    pd.read_csv(workdir / "log.csv").iloc[:-600].to_csv(other, index=False)
    args = ["distill", "--teacher", str(workdir / "teacher"), "--out", str(tmp_path / "s"), "--data", str(other)]
    assert main([*args, *KD, *FAST]) == 2
    err = capsys.readouterr().err
    assert "trained on 2 of the student's 548 validation and test interactions" in err
    assert "the teacher has seen the student's test interactions" in err
    assert not (tmp_path / "s").exists()


def test_distill_refuses_another_split(workdir, tmp_path, capsys):
    args = ["distill", "--teacher", str(workdir / "teacher"), "--out", str(tmp_path / "s"), "--split", "ratio"]
    assert main([*args, *KD, *FAST]) == 2
    assert "the teacher has seen the student's test interactions" in capsys.readouterr().err


def test_recommend_writes_raw_ids_and_excludes_the_history(workdir, tmp_path, capsys):
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", str(workdir / "teacher"), "--k", "7", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    recs = pd.read_parquet(out, engine="fastparquet")
    assert list(recs.columns) == ["user", "item", "score", "rank"]
    assert summary["users_written"] == 300 and summary["rows"] == len(recs) == 300 * 7
    assert recs["user"].str.startswith("u").all() and recs["item"].str.startswith("i").all()
    assert recs.groupby("user")["rank"].apply(list).map(lambda r: r == list(range(1, 8))).all()
    assert (recs.groupby("user")["score"].diff().dropna() <= 0).all()
    # no training or validation item comes back: only the test item (the last in time) may
    log = pd.read_csv(workdir / "log.csv").sort_values(["user", "timestamp"], kind="stable")
    history = log.groupby("user").head(-1)
    seen = recs.merge(history, on=["user", "item"])
    assert len(seen) == 0


def test_recommend_counts_unknown_and_repeated_users(workdir, tmp_path, capsys):
    users = tmp_path / "users.txt"
    users.write_text("u3\nnobody\nu5\nu3\nghost\n")
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--model", str(workdir / "teacher"), "--users", str(users), "--k", "3",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["users_requested"] == 5 and summary["unknown_users"] == 2 and summary["duplicate_users"] == 1
    assert summary["unknown_examples"] == ["nobody", "ghost"] and summary["users_written"] == 2
    assert "2 of 5 listed users are not known to the model" in captured.err
    recs = pd.read_csv(out)
    assert recs["user"].tolist() == ["u3"] * 3 + ["u5"] * 3  # in the order of the list


def test_recommend_keeps_uint64_ids_beyond_int64_exactly(tmp_path, tiny_frame, capsys):
    users = tiny_frame.user.to_numpy().astype(np.uint64) + np.uint64(2**63)  # >= 2**63: negative as int64
    path = tmp_path / "log.parquet"
    tiny_frame.assign(user=users).to_parquet(path, engine="fastparquet", index=False)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "m"), "--dim", "4", *FAST]) == 0
    listed = tmp_path / "users.txt"
    listed.write_text(f"{2**63 + 7}\n{2**63 + 3}\n")
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--model", str(tmp_path / "m"), "--users", str(listed), "--k", "2",
                 "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["unknown_users"] == 0
    recs = pd.read_csv(out, dtype={"user": str})
    assert recs["user"].tolist() == [str(2**63 + 7)] * 2 + [str(2**63 + 3)] * 2


def test_recommend_with_no_known_user_is_an_error(workdir, tmp_path, capsys):
    users = tmp_path / "users.csv"
    users.write_text("user\n1\n2\n")
    assert main(["recommend", "--model", str(workdir / "teacher"), "--users", str(users), "--out",
                 str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 users" in err and "its users look like u" in err


def test_recommend_refuses_an_unknown_output_type(workdir, tmp_path, capsys):
    assert main(["recommend", "--model", str(workdir / "teacher"), "--out", str(tmp_path / "r.xlsx")]) == 2
    assert "--out must end in .parquet" in capsys.readouterr().err


def test_data_synth_writes_parquet_and_csv(tmp_path, capsys):
    args = ["--users", "50", "--items", "40", "--interactions", "600", "--seed", "2"]
    assert main(["data", "synth", *args, "--out", str(tmp_path / "s.parquet")]) == 0
    assert main(["data", "synth", *args, "--out", str(tmp_path / "s.csv")]) == 0
    expected = make_synthetic(SyntheticConfig(users=50, items=40, interactions=600, seed=2))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet", engine="fastparquet"), expected)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), expected)
    assert "wrote 600 interactions (50 users, 40 items)" in capsys.readouterr().out


def test_data_synth_refuses_a_bad_extension(tmp_path, capsys):
    assert main(["data", "synth", "--users", "50", "--items", "40", "--interactions", "600",
                 "--out", str(tmp_path / "s.json")]) == 2
    assert "--out must end in .parquet or .csv" in capsys.readouterr().err


def test_data_synth_refuses_impossible_sizes(tmp_path, capsys):
    assert main(["data", "synth", "--users", "50", "--items", "40", "--interactions", "10",
                 "--out", str(tmp_path / "s.parquet")]) == 2
    assert "synthetic interactions (10) must be at least" in capsys.readouterr().err


def test_run_reports_every_dropped_interaction(tmp_path, tiny_frame):
    rng = np.random.default_rng(0)
    frame = tiny_frame.assign(rating=rng.integers(1, 6, len(tiny_frame)))
    extra = pd.DataFrame({"user": [0, 9999], "item": [frame.item[frame.user == 0].iloc[0], 1],
                          "timestamp": [2_000_000_000, 1], "rating": [5, 5]})  # a duplicate, a lone user
    path = tmp_path / "rated.csv"
    pd.concat([frame, extra], ignore_index=True).to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["run", "--data", str(path), "--out", str(out), "--min-rating", "2", "--min-user-interactions", "3",
                 "--teacher-dim", "8", "--student-dim", "4", *KD, *FAST]) == 0
    d = json.loads((out / "report.json").read_text())["dataset"]
    below = int((frame.rating < 2).sum())
    assert d["dropped"]["below_min_rating"] == below and d["dropped"]["duplicates"] == 1
    assert d["dropped"]["users_removed_by_k_core"] >= 1  # 9999 and users left with < 3 positives
    accounted = sum(v for k, v in d["dropped"].items() if k in ("below_min_rating", "duplicates",
                                                               "interactions_removed_by_k_core"))
    assert d["interactions"] + accounted == len(frame) + 2
    assert d["source"]["min_rating"] == 2 and d["split_options"] == {"kind": "temporal-leave-one-out"}


def test_lightgcn_folder_trains_on_its_given_split(tmp_path):
    folder = tmp_path / "lg"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train, test = [], []
    for u in range(60):
        items = rng.choice(40, size=8, replace=False)
        train.append(" ".join(map(str, [u, *items[:6]])))
        test.append(" ".join(map(str, [u, *items[6:]])))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    out = tmp_path / "m"
    assert main(["train", "--data", str(folder), "--format", "lightgcn", "--out", str(out), "--dim", "8", *FAST]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["split"] == {"kind": "given", "seed": 0} and config["data"]["format"] == "lightgcn"


def _lightgcn_folder_with_unseen_test_items(folder):
    """60 users with 6 training and 2 test items among items 0..39; users 0..4 also have test item 99, which
    no training line holds: 5 test interactions any split must drop."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    train, test = [], []
    for u in range(60):
        items = rng.choice(40, size=8, replace=False)
        train.append(" ".join(map(str, [u, *items[:6]])))
        test.append(" ".join(map(str, [u, *items[6:], *([99] if u < 5 else [])])))
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    return folder


def test_train_records_and_prints_what_the_split_dropped(tmp_path, capsys):
    folder = _lightgcn_folder_with_unseen_test_items(tmp_path / "lg")
    out = tmp_path / "m"
    assert main(["train", "--data", str(folder), "--out", str(out), "--dim", "8", *FAST]) == 0
    assert "dropped: test_items_unseen_in_train 5" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dropped"] == {"test_items_unseen_in_train": 5}  # was {}
    assert json.loads((out / "metrics.json").read_text())["dropped"] == {"test_items_unseen_in_train": 5}
    assert main(["evaluate", "--model", str(out), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"] == {"test_items_unseen_in_train": 5}
    assert main(["distill", "--teacher", str(out), "--out", str(tmp_path / "s"), "--dim", "4", *KD, *FAST]) == 0
    assert "dropped: test_items_unseen_in_train 5" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "config.json").read_text())["data"]["dropped"] == {
        "test_items_unseen_in_train": 5}


def test_commands_print_that_they_dropped_nothing(tmp_path, tiny_frame, capsys):
    path = tmp_path / "log.csv"
    tiny_frame.to_csv(path, index=False)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "m"), "--dim", "4", *FAST]) == 0
    assert "dropped: nothing" in capsys.readouterr().out.splitlines()


def test_run_prints_what_it_dropped(tmp_path, capsys):
    folder = _lightgcn_folder_with_unseen_test_items(tmp_path / "lg")
    assert main(["run", "--data", str(folder), "--out", str(tmp_path / "run"), "--teacher-dim", "8",
                 "--student-dim", "4", *KD, *FAST]) == 0
    assert "dropped: test_items_unseen_in_train 5" in capsys.readouterr().out


def test_distill_from_cached_knowledge_alone_equals_the_online_run(tmp_path, tiny_frame):
    # rrd reads only the teacher's ranks, which the knowledge holds: the teacher's weights add nothing, so the
    # student distilled from the file alone is the online one, weight for weight and metric for metric
    import torch

    from rankdistill.cli import main

    data = tmp_path / "log.csv"
    tiny_frame.to_csv(data, index=False)
    quick = ["--epochs", "2", "--batch-size", "512", "--negatives", "32", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t"), "--dim", "16", *quick]) == 0
    know = tmp_path / "knowledge.parquet"
    args = ["distill", "--teacher", str(tmp_path / "t"), "--dim", "4", "--kd", "rrd", "--kd-topk", "20",
            "--kd-samples", "4", "--knowledge", str(know), *quick]
    assert main([*args, "--out", str(tmp_path / "s1")]) == 0  # computes the knowledge once and writes it
    written = know.stat().st_mtime_ns
    assert main([*args, "--out", str(tmp_path / "s2"), "--cached-only"]) == 0  # from the file alone
    assert know.stat().st_mtime_ns == written  # read, not computed again
    online, cached = (json.loads((tmp_path / s / "metrics.json").read_text())["metrics"] for s in ("s1", "s2"))
    assert cached == online
    w1, w2 = (torch.load(tmp_path / s / "weights.pt") for s in ("s1", "s2"))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


def test_cached_only_needs_a_knowledge_file(tmp_path, tiny_frame, capsys):
    from rankdistill.cli import main

    data = tmp_path / "log.csv"
    tiny_frame.to_csv(data, index=False)
    quick = ["--epochs", "1", "--batch-size", "512", "--negatives", "32", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t"), "--dim", "8", *quick]) == 0
    assert main(["distill", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "s"), "--dim", "4",
                 "--cached-only", *quick]) == 2
    assert "--cached-only distils from a knowledge file" in capsys.readouterr().err


def test_mlp_teacher_distilled_into_two_tower_student_from_the_command_line(tmp_path, tiny_frame):
    import json

    import rankdistill
    from rankdistill.cli import main

    data = tmp_path / "log.csv"
    tiny_frame.to_csv(data, index=False)
    quick = ["--epochs", "2", "--batch-size", "512", "--negatives", "32", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t"), "--dim", "16", "--model", "mlp",
                 "--mlp-layers", "16,8", *quick]) == 0
    assert main(["distill", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "s"), "--dim", "4",
                 "--kd-topk", "20", "--kd-samples", "4", *quick]) == 0
    assert json.loads((tmp_path / "t" / "config.json").read_text())["model"]["kind"] == "mlp"
    student = rankdistill.load(tmp_path / "s")
    assert student.model_config.kind == "two_tower"  # servable by nearest-neighbour search


def test_bad_layer_widths_is_status_2(tmp_path, capsys):
    from rankdistill.cli import main

    assert main(["train", "--out", str(tmp_path / "t"), "--model", "mlp", "--mlp-layers", "16,x"]) == 2
    assert "--mlp-layers must be comma-separated integers" in capsys.readouterr().err


def test_run_reports_where_the_time_went_and_draws_the_curves(tmp_path, tiny_frame, capsys):
    """report.json's timings hold every phase (a model: training, its validation share, its test evaluation),
    the phases add up to no more than the total, the progress output names each phase, and curves.png
    holds one line per trained model from its per-epoch validation figures."""
    path = tmp_path / "d.csv"
    tiny_frame.to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["run", "--data", str(path), "--out", str(out), "--teacher-dim", "8", "--student-dim", "4",
                 *KD, *[a for a in FAST if a != "--quiet"]]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    t = report["timings"]
    assert list(t) == ["load", "split", "popularity", "teacher", "student", "knowledge", "distilled", "fidelity",
                       "serving cost", "total"]
    for name in ("teacher", "student", "distilled"):
        assert 0 <= t[name]["valid"] <= t[name]["train"] <= t[name]["total"] and t[name]["test"] >= 0
        assert f"[{name}] " in printed
    phases = sum(v["total"] if isinstance(v, dict) else v for k, v in t.items() if k != "total")
    assert phases <= t["total"] + 0.05
    for name in ("teacher", "student", "distilled"):
        epochs = report["models"][name]["best_epoch"]
        points = report["curves"][name]
        assert len(points) >= epochs and all(b[0] > a[0] for a, b in zip(points, points[1:]))
    assert (out / "curves.png").stat().st_size > 0 and "## Where the time went" in (out / "report.md").read_text()


def test_run_with_other_cutoffs_and_sizes_reports_what_it_computed(tmp_path, tiny_frame):
    """--ks 5,10 computes no @20: the gap keeps the standard metrics the run has (ndcg@10), the sizes table and
    its figure use NDCG at the largest cut-off."""
    path = tmp_path / "d.csv"
    tiny_frame.to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["run", "--data", str(path), "--out", str(out), "--teacher-dim", "8", "--student-dim", "4",
                 "--ks", "5,10", "--sizes", "4,8", "--kd", "listkl", *KD, *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["gap_recovered"]) == {"ndcg@10"}
    assert "| student dim | params | alone ndcg@10 |" in (out / "report.md").read_text()
    assert (out / "sizes.png").stat().st_size > 0
