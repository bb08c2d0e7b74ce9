"""Readers for interaction logs: CSV/TSV, parquet, MovieLens (u.data, ratings.dat, ratings.csv) and the
LightGCN/NGCF folder format. Every reader returns a DataFrame with columns user, item and, when the source
has them, timestamp (int64 seconds), rating (float) and is_test (bool); every problem a user can fix raises
:class:`RankdistillError` naming the file and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rankdistill.errors import RankdistillError

FORMATS = ("csv", "tsv", "parquet", "movielens", "lightgcn")


@dataclass(frozen=True)
class Columns:
    """Names of the columns to read as user, item, timestamp and rating (timestamp and rating optional)."""

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str = "rating"


def detect_format(path: Path) -> str:
    """The reader for ``path``: by folder contents, file name and extension."""
    if path.is_dir():
        if (path / "train.txt").exists():
            return "lightgcn"
        if any((path / n).exists() for n in ("u.data", "ratings.dat", "ratings.csv")):
            return "movielens"
        raise RankdistillError(
            f"cannot tell the format of folder {path}: expected train.txt/test.txt (LightGCN) or "
            "u.data/ratings.dat/ratings.csv (MovieLens); pass a file or --format"
        )
    name = path.name.lower()
    if name in ("u.data", "ratings.dat") or (name == "ratings.csv" and _looks_like_movielens_csv(path)):
        return "movielens"
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".tsv", "tsv"), (".csv", "csv"),
                        (".csv.gz", "csv"), (".txt", "tsv")):
        if name.endswith(suffix):
            return fmt
    raise RankdistillError(f"cannot tell the format of {path} from its name; pass --format, one of {', '.join(FORMATS)}")


def _looks_like_movielens_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().strip().lower().startswith("userid,movieid")


def read_interactions(path: str | Path, format: str | None = None, columns: Columns = Columns()) -> pd.DataFrame:
    """Read ``path`` into a DataFrame with columns user, item, [timestamp], [rating], [is_test]."""
    path = Path(path)
    if not path.exists():
        raise RankdistillError(f"data path {path} does not exist")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise RankdistillError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "lightgcn":
        return read_lightgcn(path)
    if fmt == "movielens":
        return read_movielens(path)
    if path.is_dir():
        raise RankdistillError(f"{path} is a folder; format {fmt} needs a file")
    if fmt == "parquet":
        frame = _read_parquet(path)
    else:
        frame = _read_csv(path, sep="\t" if fmt == "tsv" else ",")
    return standardise(frame, columns, source=str(path))


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep=sep, dtype_backend="numpy_nullable")
    except pd.errors.EmptyDataError:
        raise RankdistillError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise RankdistillError(f"cannot parse {path} as {'TSV' if sep == chr(9) else 'CSV'}: {e}") from None
    if len(frame.columns) == 1 and sep == "," and "\t" in str(frame.columns[0]):
        return _read_csv(path, sep="\t")  # a tab-separated file named .csv
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, engine="fastparquet")
    except Exception as e:  # fastparquet raises many types for damaged files
        raise RankdistillError(f"cannot read parquet file {path} (unreadable or truncated?): {type(e).__name__}: {e}") from None


def standardise(frame: pd.DataFrame, columns: Columns = Columns(), source: str = "table") -> pd.DataFrame:
    """Rename and validate the columns of ``frame``; returns user, item, [timestamp], [rating]."""
    if len(frame) == 0:
        raise RankdistillError(f"{source} has no rows")
    missing = [c for c in (columns.user, columns.item) if c not in frame.columns]
    if missing:
        raise RankdistillError(
            f"{source} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{', '.join(map(repr, map(str, frame.columns)))} (choose them with --user-col/--item-col)"
        )
    out = pd.DataFrame({"user": _ids(frame[columns.user], "user", source), "item": _ids(frame[columns.item], "item", source)})
    if columns.timestamp in frame.columns:
        out["timestamp"] = parse_timestamps(frame[columns.timestamp], source)
    if columns.rating in frame.columns:
        out["rating"] = _ratings(frame[columns.rating], source)
    return out


def _ids(col: pd.Series, what: str, source: str) -> pd.Series:
    bad = col.isna() | (col.astype(str).str.strip() == "")
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise RankdistillError(
            f"{source}: {int(bad.sum())} rows have an empty or missing {what} ID (first at data row {rows[0] + 1}); "
            "remove or fill them"
        )
    if pd.api.types.is_float_dtype(col) and (col % 1 == 0).all():
        return col.astype(np.int64)
    if pd.api.types.is_integer_dtype(col):
        return col.astype(np.int64)
    return col.astype(str)


def parse_timestamps(col: pd.Series, source: str) -> pd.Series:
    """int64 seconds since the epoch from numbers (taken as seconds) or date strings."""
    if col.isna().any():
        raise RankdistillError(f"{source}: {int(col.isna().sum())} rows have no timestamp; fill them or drop the column")
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(np.int64)
    try:
        parsed = pd.to_datetime(col.astype(str), utc=True, format="mixed")
    except (ValueError, TypeError) as e:
        raise RankdistillError(f"{source}: timestamps do not parse as numbers or dates ({e})") from None
    return pd.Series(parsed.astype("datetime64[s, UTC]").astype(np.int64), index=col.index)


def _ratings(col: pd.Series, source: str) -> pd.Series:
    numeric = pd.to_numeric(col, errors="coerce")
    bad = numeric.isna() & col.notna()
    if bad.any():
        example = col[bad].iloc[0]
        raise RankdistillError(f"{source}: {int(bad.sum())} ratings are not numbers (for example {example!r})")
    return numeric.astype(float)


def read_movielens(path: Path) -> pd.DataFrame:
    """MovieLens 100K ``u.data`` (tab), 1M/10M ``ratings.dat`` (``::``) or 20M+ ``ratings.csv``."""
    if path.is_dir():
        path = next(path / n for n in ("u.data", "ratings.dat", "ratings.csv") if (path / n).exists())
    names = ["user", "item", "rating", "timestamp"]
    try:
        if path.name.endswith(".csv"):
            frame = pd.read_csv(path).rename(columns={"userId": "user", "movieId": "item"})
        elif path.name.endswith(".dat"):
            frame = pd.read_csv(path, sep="::", engine="python", names=names, header=None)
        else:
            frame = pd.read_csv(path, sep="\t", names=names, header=None)
    except pd.errors.EmptyDataError:
        raise RankdistillError(f"{path} is empty") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise RankdistillError(f"cannot parse {path} as MovieLens ratings: {e}") from None
    return standardise(frame, Columns(), source=str(path))


def read_lightgcn(path: Path) -> pd.DataFrame:
    """A LightGCN/NGCF folder: ``train.txt`` and ``test.txt``, one line per user ``user item item ...``.

    The given test split is kept (column is_test); there are no timestamps.
    """
    if not path.is_dir():
        raise RankdistillError(f"the LightGCN format is a folder with train.txt and test.txt; {path} is a file")
    parts = []
    for name, is_test in (("train.txt", False), ("test.txt", True)):
        file = path / name
        if not file.exists():
            raise RankdistillError(f"{path} has no {name} (the LightGCN format needs train.txt and test.txt)")
        users, items = _read_adjacency(file)
        parts.append(pd.DataFrame({"user": users, "item": items, "is_test": is_test}))
    frame = pd.concat(parts, ignore_index=True)
    if not (~frame["is_test"]).any():
        raise RankdistillError(f"{path}/train.txt has no interactions")
    return frame


def _read_adjacency(file: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    with open(file) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) < 2:
                continue  # a user without items in this split
            try:
                ids = np.array(fields, dtype=np.int64)
            except ValueError:
                raise RankdistillError(f"{file}:{lineno}: expected integers 'user item item ...'") from None
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users), np.concatenate(items)
