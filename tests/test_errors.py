"""Bad input: one named test per kind, each on a file the test writes. The library raises RankdistillError
naming the bad value and the fix; the command line prints one ``error:`` line and exits with status 2."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rankdistill.cli import main
from rankdistill.data.interactions import Interactions
from rankdistill.data.io import Columns, read_interactions
from rankdistill.data.load import load_interactions
from rankdistill.data.split import make_split
from rankdistill.errors import RankdistillError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _parquet(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_parquet(path, engine="fastparquet", index=False)
    return path


def _frame(rows, columns=("user", "item", "timestamp")):
    return pd.DataFrame(rows, columns=list(columns))


# -- reading --------------------------------------------------------------------------------------------

def test_missing_data_path(tmp_path):
    with pytest.raises(RankdistillError, match=r"data path .*nope.csv does not exist"):
        read_interactions(tmp_path / "nope.csv")


def test_missing_columns_lists_the_existing_ones(tmp_path):
    path = _write(tmp_path / "log.csv", "uid,item,when\n1,2,3\n")
    with pytest.raises(RankdistillError, match=r"no column 'user'; its columns are 'uid', 'item', 'when'.*--user-col"):
        read_interactions(path)


def test_renamed_timestamp_column_that_does_not_exist(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,when\n1,2,3\n")
    with pytest.raises(RankdistillError, match=r"no column 'ts'; its columns are 'user', 'item', 'when'"):
        read_interactions(path, columns=Columns(timestamp="ts"))


def test_empty_file(tmp_path):
    with pytest.raises(RankdistillError, match=r"log.csv is empty"):
        read_interactions(_write(tmp_path / "log.csv", ""))


def test_header_only_csv_is_an_empty_table(tmp_path):
    with pytest.raises(RankdistillError, match=r"log.csv has no rows"):
        read_interactions(_write(tmp_path / "log.csv", "user,item,timestamp\n"))


def test_empty_parquet_table(tmp_path):
    path = _parquet(tmp_path / "log.parquet", pd.DataFrame({"user": np.array([], np.int64),
                                                             "item": np.array([], np.int64)}))
    with pytest.raises(RankdistillError, match=r"log.parquet has no rows"):
        read_interactions(path)


def test_nan_user_id(tmp_path):
    path = _parquet(tmp_path / "log.parquet", pd.DataFrame({"user": [1.0, np.nan, 3.0], "item": [1, 2, 3]}))
    with pytest.raises(RankdistillError, match=r"1 rows have an empty or missing user ID \(first at data row 2\)"):
        read_interactions(path)


def test_empty_item_id(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item\na,x\nb,\nc,  \n")
    with pytest.raises(RankdistillError, match=r"2 rows have an empty or missing item ID \(first at data row 2\)"):
        read_interactions(path)


def test_non_numeric_rating(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,rating\na,x,4\nb,y,five\n")
    with pytest.raises(RankdistillError, match=r"1 ratings are not numbers \(first 'five' at data row 2\)"):
        read_interactions(path)


def test_missing_rating(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,rating\na,x,4\nb,y,\n")
    with pytest.raises(RankdistillError, match=r"1 rows have no rating.*--rating-col ''"):
        read_interactions(path)


def test_timestamp_that_does_not_parse(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,timestamp\na,x,2020-01-01\nb,y,yesterday\n")
    with pytest.raises(RankdistillError, match=r"1 timestamps do not parse .*first 'yesterday' at data row 2"):
        read_interactions(path)


def test_missing_timestamp(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,timestamp\na,x,5\nb,y,\n")
    with pytest.raises(RankdistillError, match=r"1 rows have no timestamp \(first at data row 2\)"):
        read_interactions(path)


def test_nan_text_in_two_timestamp_cells_is_counted_and_pointed_at(tmp_path):
    rows = "".join(f"u{i % 7},i{i},{1_600_000_000 + i}\n" for i in range(40))
    lines = ("user,item,timestamp\n" + rows).splitlines()
    lines[13] = "u5,i13,NaN"  # data row 13
    lines[30] = "u2,i30,NaN"
    path = _write(tmp_path / "log.csv", "\n".join(lines) + "\n")
    with pytest.raises(RankdistillError, match=r"2 timestamps do not parse .*first 'NaN' at data row 13\)"):
        read_interactions(path)


def test_nan_text_among_date_timestamps_is_counted_and_pointed_at(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,timestamp\na,x,2020-01-01\nb,y,NaN\nc,z,2020-01-03\nd,w,nan\n")
    with pytest.raises(RankdistillError, match=r"2 timestamps do not parse .*first 'NaN' at data row 2\)"):
        read_interactions(path)


def test_infinite_timestamps_are_counted_and_pointed_at(tmp_path):
    frame = pd.DataFrame({"user": [1, 2, 3, 4], "item": [1, 2, 3, 4], "timestamp": [1.0, np.inf, 3.0, -np.inf]})
    with pytest.raises(RankdistillError, match=r"2 timestamps are not finite numbers \(first inf at data row 2\)"):
        read_interactions(_parquet(tmp_path / "log.parquet", frame))


def test_csv_rows_ending_with_a_comma_say_the_rows_have_more_fields(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,timestamp\n1,2,100,\n1,3,200,\n2,3,300,\n")
    with pytest.raises(RankdistillError, match=r"log.csv: its data rows have 4 fields but the header names 3 "
                                               r"\(user, item, timestamp\).*a comma at the end of each row"):
        read_interactions(path)


def test_tsv_rows_ending_with_a_tab_say_the_rows_have_more_fields(tmp_path):
    path = _write(tmp_path / "log.tsv", "user\titem\n1\t2\t\n1\t3\t\n")
    with pytest.raises(RankdistillError, match=r"its data rows have 3 fields but the header names 2 \(user, item\)"):
        read_interactions(path)


def test_movielens_ratings_csv_rows_ending_with_a_comma(tmp_path):
    (tmp_path / "ml").mkdir()
    path = _write(tmp_path / "ml" / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4.0,100,\n")
    with pytest.raises(RankdistillError, match=r"^\S*ratings.csv: its data rows have 5 fields but the header names 4"):
        read_interactions(path)


def test_unreadable_parquet_file(tmp_path):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(RankdistillError, match=r"cannot read parquet file .*log.parquet \(unreadable or truncated\?\)"):
        read_interactions(path)


def test_truncated_parquet_file(tmp_path):
    good = _parquet(tmp_path / "good.parquet", _frame([(u, u + 1, u) for u in range(200)]))
    data = good.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(RankdistillError, match=r"cannot read parquet file .*cut.parquet \(unreadable or truncated\?\)"):
        read_interactions(cut)


def test_malformed_csv_row(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item\na,x\nb,y,z,w\n")
    with pytest.raises(RankdistillError, match=r"cannot parse .*log.csv as CSV"):
        read_interactions(path)


def test_lightgcn_line_that_is_not_integers(tmp_path):
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "train.txt", "0 1 2\n1 x 3\n")
    _write(tmp_path / "d" / "test.txt", "0 3\n")
    with pytest.raises(RankdistillError, match=r"train.txt:2: expected integers 'user item item \.\.\.', got '1 x 3'"):
        read_interactions(tmp_path / "d")


def test_lightgcn_folder_without_test_txt(tmp_path):
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "train.txt", "0 1 2\n")
    with pytest.raises(RankdistillError, match=r"has no test.txt"):
        read_interactions(tmp_path / "d", format="lightgcn")


def test_folder_of_unknown_format(tmp_path):
    with pytest.raises(RankdistillError, match=r"cannot tell the format of folder"):
        read_interactions(tmp_path)


# -- turning ratings into positives and filtering ---------------------------------------------------------

def test_min_rating_without_rating_column(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item\na,x\n")
    with pytest.raises(RankdistillError, match=r"--min-rating 4 needs ratings .*no rating column.*--rating-col"):
        load_interactions(path, min_rating=4)


def test_min_rating_that_drops_every_row(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,rating\na,x,1\nb,y,3\n")
    with pytest.raises(RankdistillError, match=r"--min-rating 6 drops every row .*from 1 to 3"):
        load_interactions(path, min_rating=6)


def test_k_core_that_drops_every_row(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item\na,x\nb,y\n")
    with pytest.raises(RankdistillError, match=r"no interactions .* left after --min-user-interactions 2"):
        load_interactions(path, min_user_interactions=2)


def test_negative_k_core_threshold(tmp_path):
    with pytest.raises(RankdistillError, match=r"--min-item-interactions must be >= 0, got -1"):
        load_interactions(None, min_item_interactions=-1)


# -- splits ----------------------------------------------------------------------------------------------

def test_user_with_too_few_interactions_for_temporal_leave_one_out():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("v", "a", 1), ("v", "b", 2),
                                           ("v", "c", 3), ("w", "a", 1)]), "t")
    with pytest.raises(RankdistillError, match=r"2 of 3 users have too few interactions for temporal leave-one-out "
                                               r"\(the fewest is 1.*--min-user-interactions 3"):
        make_split(data, "temporal-leave-one-out")


def test_user_with_too_few_interactions_for_ratio_split():
    data = Interactions.from_frame(_frame([("u", "a"), ("u", "b"), ("v", "a"), ("v", "b"), ("v", "c")],
                                          ("user", "item")), "t")
    with pytest.raises(RankdistillError, match=r"1 of 2 users have too few interactions for a 0.8/0.1/0.1 ratio split.*"
                                               r"--min-user-interactions 3"):
        make_split(data, "ratio")


def test_temporal_split_without_timestamps_names_the_alternatives():
    data = Interactions.from_frame(_frame([("u", "a"), ("u", "b"), ("u", "c")], ("user", "item")), "t")
    with pytest.raises(RankdistillError, match=r"temporal leave-one-out needs timestamps .*--split ratio.*--timestamp-col"):
        make_split(data, "temporal-leave-one-out")


def test_time_cut_without_timestamps():
    data = Interactions.from_frame(_frame([("u", "a"), ("u", "b"), ("u", "c")], ("user", "item")), "t")
    with pytest.raises(RankdistillError, match=r"a time cut needs timestamps .*--split ratio"):
        make_split(data, "time-cut")


def test_given_split_for_data_that_ships_none():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"ships no split .*temporal-leave-one-out, time-cut or ratio"):
        make_split(data, "given")


def test_bad_split_ratio():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"--split-ratio must be three positive numbers .*got '0.8,0.2'"):
        make_split(data, "ratio", ratio="0.8,0.2")


def test_bad_split_time():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"--split-time must be a date .*got 'someday'"):
        make_split(data, cut="someday")


def test_split_time_after_the_last_interaction():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"leaves no interaction at or after the cut \(the data runs from "
                                               r"1970-01-01 to 1970-01-01\); choose an earlier cut"):
        make_split(data, "time-cut", cut="2030-01-01")


def test_split_option_for_another_split():
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"--split-ratio applies to --split ratio only, and the split is time-cut"):
        make_split(data, "time-cut", ratio="0.8,0.1,0.1")


def test_split_that_leaves_no_test_interaction():
    # every user's last item is one nobody trains on
    data = Interactions.from_frame(_frame([("u", "a", 1), ("u", "b", 2), ("u", "x", 3),
                                           ("v", "b", 1), ("v", "a", 2), ("v", "y", 3)]), "t")
    with pytest.raises(RankdistillError, match=r"leaves no test interaction whose user and item also occur in "
                                               r"training \(2 before dropping\)"):
        make_split(data)


# -- the command line: status 2 and one error line ------------------------------------------------------

BAD_FILES = {
    "missing_column.csv": "uid,item\n1,2\n",
    "empty.csv": "",
    "header_only.csv": "user,item\n",
    "nan_id.csv": "user,item\n1,\n",
    "bad_rating.csv": "user,item,rating\n1,2,good\n",
    "bad_time.csv": "user,item,timestamp\n1,2,noon\n",
    "few.csv": "user,item,timestamp\n1,2,1\n1,3,2\n",
    "broken.parquet": "PAR1 and then nothing useful",
    "trailing_comma.csv": "user,item,timestamp\n1,2,100,\n1,3,200,\n1,4,300,\n",
    "nan_time.csv": "user,item,timestamp\n1,2,100\n1,3,NaN\n1,4,300\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_command_line_prints_one_error_line_and_exits_2(tmp_path, capsys, name):
    path = _write(tmp_path / name, BAD_FILES[name])
    assert main(["run", "--data", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_command_line_exit_status_in_a_real_process(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,rating\n1,2,good\n")
    proc = subprocess.run([sys.executable, "-m", "rankdistill", "train", "--data", str(path), "--out",
                           str(tmp_path / "m")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {path}: 1 ratings are not numbers (first 'good' at data row 1); "
                                                "fix them, or pass --rating-col '' to ignore ratings"]
