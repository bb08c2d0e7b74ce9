"""Readers: every supported format on small files the tests write, IDs, timestamps, format detection."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rankdistill.data.io import Columns, detect_format, read_id_list, read_interactions
from rankdistill.data.vocab import IdVocab
from rankdistill.data.load import DataSpec, load_interactions
from rankdistill.errors import RankdistillError

ROWS = [("u1", "a", 10), ("u1", "b", 20), ("u2", "a", 15), ("u2", "c", 5)]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_with_default_columns(tmp_path):
    df = read_interactions(_write(tmp_path / "log.csv", "user,item,timestamp\nu1,a,10\nu2,b,20\n"))
    assert list(df.columns) == ["user", "item", "timestamp"]
    assert df["user"].tolist() == ["u1", "u2"] and df["timestamp"].tolist() == [10, 20]


def test_csv_with_column_names_set_by_options(tmp_path):
    path = _write(tmp_path / "log.csv", "uid,sku,ts,stars,extra\n7,x,100,4.5,q\n8,y,200,2,q\n")
    df = read_interactions(path, columns=Columns(user="uid", item="sku", timestamp="ts", rating="stars"))
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert df["user"].tolist() == [7, 8] and df["rating"].tolist() == [4.5, 2.0]


def test_tsv_and_tab_separated_file_named_csv(tmp_path):
    text = "user\titem\n1\t2\n3\t4\n"
    assert read_interactions(_write(tmp_path / "log.tsv", text))["item"].tolist() == [2, 4]
    assert read_interactions(_write(tmp_path / "log.csv", text))["item"].tolist() == [2, 4]


def test_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame(ROWS, columns=["user", "item", "timestamp"]).to_parquet(path, engine="fastparquet", index=False)
    df = read_interactions(path)
    assert df["user"].tolist() == ["u1", "u1", "u2", "u2"] and df["timestamp"].dtype == np.int64


def test_movielens_u_data(tmp_path):
    path = _write(tmp_path / "u.data", "7\t15\t4\t900000001\n9\t21\t2\t900000050\n")
    df = read_interactions(path)
    assert detect_format(path) == "movielens"
    assert df.to_dict("list") == {"user": [7, 9], "item": [15, 21], "timestamp": [900000001, 900000050],
                                  "rating": [4.0, 2.0]}


def test_movielens_ratings_dat_double_colon(tmp_path):
    path = _write(tmp_path / "ratings.dat", "3::40::5::960000000\n3::12::3::960000100\n")
    df = read_interactions(path)
    assert df["item"].tolist() == [40, 12] and df["rating"].tolist() == [5.0, 3.0]
    assert df["timestamp"].tolist() == [960000000, 960000100]


def test_movielens_ratings_csv(tmp_path):
    path = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n2,33,4.5,1100000000\n")
    assert detect_format(path) == "movielens"
    assert read_interactions(path).iloc[0].tolist() == [2, 33, 1100000000, 4.5]


def test_movielens_folder_is_detected(tmp_path):
    _write(tmp_path / "u.data", "1\t2\t3\t4\n")
    assert detect_format(tmp_path) == "movielens"
    assert load_interactions(tmp_path / "u.data").name == tmp_path.name


def _lightgcn(folder: Path, train: str, test: str) -> Path:
    folder.mkdir()
    _write(folder / "train.txt", train)
    _write(folder / "test.txt", test)
    return folder


def test_lightgcn_folder_keeps_given_test_split(tmp_path):
    # invented ids in the LightGCN layout (user, then its items), not rows of a real data set
    folder = _lightgcn(tmp_path / "checkins", "0 7 4 9\n1 9 5\n2\n", "0 5\n1 7 4\n")
    assert detect_format(folder) == "lightgcn"
    df = read_interactions(folder)
    assert df[~df.is_test][["user", "item"]].values.tolist() == [[0, 7], [0, 4], [0, 9], [1, 9], [1, 5]]
    assert df[df.is_test][["user", "item"]].values.tolist() == [[0, 5], [1, 7], [1, 4]]
    data = load_interactions(folder)
    assert data.name == "checkins" and data.timestamps is None and data.given_test.sum() == 3


def test_format_can_be_forced(tmp_path):
    path = _write(tmp_path / "interactions.log", "user,item\n1,2\n")
    with pytest.raises(RankdistillError, match="pass --format"):
        read_interactions(path)
    assert read_interactions(path, format="csv")["item"].tolist() == [2]


def test_integer_ids_stay_integers_and_zero_padded_ids_stay_strings(tmp_path):
    df = read_interactions(_write(tmp_path / "log.csv", "user,item\n007,1\n7,2\n"))
    assert df["user"].tolist() == ["007", "7"]  # two users, as the file spells them
    assert df["item"].tolist() == [1, 2] and df["item"].dtype == np.int64


BIG = np.array([2**63, 2**64 - 1, 5], dtype=np.uint64)  # the first two do not fit int64


def test_uint64_ids_beyond_int64_are_kept_exactly_as_text(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": BIG, "item": np.array([1, 2, 3], np.uint64)}).to_parquet(path, engine="fastparquet",
                                                                                 index=False)
    df = read_interactions(path)
    assert df["user"].tolist() == ["9223372036854775808", "18446744073709551615", "5"]  # not negative
    assert df["item"].tolist() == [1, 2, 3] and df["item"].dtype == np.int64  # small uint64 IDs stay integers


def test_vocab_of_uint64_ids_beyond_int64_keeps_them_exactly():
    vocab, codes = IdVocab.fit(pd.Series(BIG))
    assert list(vocab.ids) == ["9223372036854775808", "18446744073709551615", "5"] and codes.tolist() == [0, 1, 2]
    assert vocab.encode(["18446744073709551615", 5]).tolist() == [1, 2]
    assert IdVocab(np.array([7, 8], np.uint64)).integer_ids  # within int64: integers


def test_nineteen_digit_ids_meet_in_one_type(tmp_path):
    # int64's largest values have 19 digits: as text in a user list they are still integers and found
    big = 9_223_372_036_854_775_807
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user": np.array([big, 1], np.int64), "item": [1, 2]}).to_parquet(path, engine="fastparquet",
                                                                                  index=False)
    vocab, _ = IdVocab.fit(read_interactions(path)["user"])
    assert read_id_list(_write(tmp_path / "a.txt", f"{big}\n1\n")).tolist() == [big, 1]
    listed = read_id_list(_write(tmp_path / "b.txt", f"{big}\n1\n9223372036854775808\n"))
    assert listed.tolist() == [str(big), "1", "9223372036854775808"]  # the last does not fit int64: all text
    assert vocab.encode(listed.to_numpy()).tolist() == [0, 1, -1]


def test_user_list_rows_ending_with_a_comma_say_the_rows_have_more_fields(tmp_path):
    with pytest.raises(RankdistillError, match=r"its data rows have 2 fields but the header names 1 \(user\)"):
        read_id_list(_write(tmp_path / "u.csv", "user\nx,\ny,\n"))


def test_date_timestamps_parse_to_seconds(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,timestamp\n1,2,1970-01-02\n1,3,1970-01-01T00:01:00Z\n")
    assert read_interactions(path)["timestamp"].tolist() == [86400, 60]


def test_an_id_spelled_na_is_an_id(tmp_path):
    assert read_interactions(_write(tmp_path / "log.csv", "user,item\nNA,1\nnull,2\n"))["user"].tolist() == ["NA", "null"]


def test_timestamp_column_can_be_ignored(tmp_path):
    path = _write(tmp_path / "log.csv", "user,item,timestamp\n1,2,garbage\n")
    assert "timestamp" not in read_interactions(path, columns=Columns(timestamp=""))


def test_data_spec_round_trips_through_a_dict(tmp_path):
    spec = DataSpec(str(tmp_path / "x.csv"), "csv", Columns(user="u"), 4.0, 3, 2)
    assert DataSpec.from_dict(spec.to_dict()) == spec
    assert DataSpec.from_dict(DataSpec().to_dict()) == DataSpec()


def test_user_list_from_txt_csv_and_parquet(tmp_path):
    assert read_id_list(_write(tmp_path / "u.txt", "205\n31\n\n")).tolist() == [205, 31]
    assert read_id_list(_write(tmp_path / "u.csv", "user,other\nx,1\ny,2\n")).tolist() == ["x", "y"]
    assert read_id_list(_write(tmp_path / "h.csv", "196\n186\n")).tolist() == [196, 186]  # no header
    pq = tmp_path / "u.parquet"
    pd.DataFrame({"customer": [5, 6]}).to_parquet(pq, engine="fastparquet", index=False)
    assert read_id_list(pq).tolist() == [5, 6]  # the only column
