"""Readers for interaction logs: CSV/TSV, parquet, MovieLens (u.data, ratings.dat, ratings.csv) and the
LightGCN/NGCF folder format. Every reader returns a DataFrame with columns user, item and, when the source
has them, timestamp (int64 seconds), rating (float64) and is_test (bool); every problem a user can fix raises
:class:`RankdistillError` naming the file, the bad value and what to do.

IDs: a column of integers, or of text that is all plain integers (``42``, not ``042`` or ``4.2``), becomes
int64; any other column becomes strings, so ``007`` and ``7`` stay two different users. Integers that do not
fit int64 (a uint64 column with values >= 2**63, or such text) stay exact as strings. The same rule reads
the user lists given to ``rankdistill recommend``, so a file's IDs always meet the vocabulary in one type.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rankdistill.errors import RankdistillError

FORMATS = ("csv", "tsv", "parquet", "movielens", "lightgcn")
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
_PLAIN_INT = re.compile(r"^-?(0|[1-9][0-9]{0,18})$")  # prints back the same; int64 range checked apart
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEPARATOR_NAMES = {",": "comma", "\t": "tab"}


def plain_integers(text: pd.Series) -> np.ndarray:
    """bool [N]: which strings of ``text`` are plain integers (no sign ``+``, leading zero, space or decimal
    point) within int64, so that they read as int64 and print back the same."""
    ok = np.array(text.str.fullmatch(_PLAIN_INT).to_numpy(bool, na_value=False))  # a writable copy
    long = ok & (text.str.len().to_numpy() >= 19)  # 19 digits, or a minus and 18+: may not fit int64
    if long.any():
        ok[long] = [INT64_MIN <= int(x) <= INT64_MAX for x in text[long]]
    return ok


def beyond_int64(values: pd.Series | pd.Index) -> bool:
    """Whether an integer column holds values int64 cannot (an unsigned column with values >= 2**63)."""
    return bool(pd.api.types.is_unsigned_integer_dtype(values) and len(values) and values.max() > INT64_MAX)


def check_fields_match_header(frame: pd.DataFrame, path: Path | str, sep: str = ",", what: str = "") -> None:
    """Raise when the data rows of a CSV/TSV have more fields than its header names. pandas then takes the
    first column(s) as the index and shifts every column (rows ending with a separator are the usual
    cause), so ``frame`` without a plain RangeIndex is that case. ``what`` prefixes the file ("QRELS file")."""
    if isinstance(frame.index, pd.RangeIndex):
        return
    names, fields = len(frame.columns), len(frame.columns) + frame.index.nlevels
    sep_name = SEPARATOR_NAMES.get(sep, repr(sep))
    raise RankdistillError(
        f"{what + ' ' if what else ''}{path}: its data rows have {fields} fields but the header names {names} "
        f"({', '.join(map(str, frame.columns))}); a {sep_name} at the end of each row? Remove it, or name every "
        "column in the header"
    )


@dataclass(frozen=True)
class Columns:
    """Names of the columns to read as user, item, timestamp and rating.

    user and item must exist. timestamp and rating are optional under their default names and required when
    named otherwise (``--timestamp-col ts`` on a file without ``ts`` is a mistake); an empty name ignores
    the column even when the file has it.
    """

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str = "rating"

    def required(self) -> list[str]:
        optional = [c for c, default in ((self.timestamp, "timestamp"), (self.rating, "rating")) if c != default and c]
        return [self.user, self.item, *optional]


def detect_format(path: Path) -> str:
    """The reader for ``path``: by folder contents, file name and extension."""
    if path.is_dir():
        if (path / "train.txt").exists():
            return "lightgcn"
        if any((path / n).exists() for n in MOVIELENS_FILES):
            return "movielens"
        raise RankdistillError(
            f"cannot tell the format of folder {path}: expected train.txt/test.txt (LightGCN) or "
            "u.data/ratings.dat/ratings.csv (MovieLens); pass a file or --format"
        )
    name = path.name.lower()
    if name in ("u.data", "ratings.dat") or (name == "ratings.csv" and _looks_like_movielens_csv(path)):
        return "movielens"
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".tsv", "tsv"), (".tsv.gz", "tsv"),
                        (".csv", "csv"), (".csv.gz", "csv"), (".txt", "tsv")):
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
    _check_not_empty(path)
    if fmt == "parquet":
        frame = _read_parquet(path)
    else:
        id_cols = (columns.user, columns.item)
        frame = _read_csv(path, sep="\t" if fmt == "tsv" else ",", id_cols=id_cols)
    return standardise(frame, columns, source=str(path))


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise RankdistillError(f"{path} is empty (0 bytes)")


def _read_csv(path: Path, sep: str, id_cols: tuple[str, ...]) -> pd.DataFrame:
    """IDs as text (see the module docstring); only empty cells count as missing, so an ID ``NA`` is an ID."""
    try:
        frame = pd.read_csv(path, sep=sep, dtype={c: str for c in id_cols}, keep_default_na=False, na_values=[""],
                            encoding="utf-8-sig")  # a byte-order mark would otherwise stick to the first name
    except pd.errors.EmptyDataError:
        raise RankdistillError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        kind = "TSV" if sep == "\t" else "CSV"
        raise RankdistillError(f"cannot parse {path} as {kind}: {str(e).strip()}") from None
    if len(frame.columns) == 1 and sep == "," and "\t" in str(frame.columns[0]):
        return _read_csv(path, "\t", id_cols)  # a tab-separated file named .csv
    check_fields_match_header(frame, path, sep)
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, engine="fastparquet")
    except Exception as e:  # fastparquet raises many types for damaged files
        raise RankdistillError(
            f"cannot read parquet file {path} (unreadable or truncated?): {type(e).__name__}: {e}; "
            "write it again or check the copy"
        ) from None


def standardise(frame: pd.DataFrame, columns: Columns = Columns(), source: str = "table") -> pd.DataFrame:
    """Rename and validate the columns of ``frame``; returns user, item, [timestamp], [rating] (and is_test
    when ``frame`` has it), in the row order of ``frame``, with a fresh 0..N-1 index."""
    missing = [c for c in columns.required() if c not in frame.columns]
    if missing:
        raise RankdistillError(
            f"{source} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{', '.join(map(repr, map(str, frame.columns))) or 'none'} "
            "(name them with --user-col/--item-col/--timestamp-col/--rating-col)"
        )
    if len(frame) == 0:
        raise RankdistillError(f"{source} has no rows")
    frame = frame.reset_index(drop=True)
    out = pd.DataFrame({"user": normalise_ids(frame[columns.user], "user", source),
                        "item": normalise_ids(frame[columns.item], "item", source)})
    if columns.timestamp and columns.timestamp in frame.columns:
        out["timestamp"] = parse_timestamps(frame[columns.timestamp], source)
    if columns.rating and columns.rating in frame.columns:
        out["rating"] = parse_ratings(frame[columns.rating], source)
    if "is_test" in frame.columns:
        out["is_test"] = frame["is_test"].to_numpy(bool)
    return out


def normalise_ids(col: pd.Series, what: str, source: str) -> pd.Series:
    """int64 when the column holds integers (or text that is all plain integers), else str; NaN or empty
    IDs are an error naming the first bad row."""
    as_text = col.astype(str) if not pd.api.types.is_numeric_dtype(col) else None
    bad = col.isna()
    if as_text is not None:
        bad = bad | (as_text.str.strip() == "")
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        raise RankdistillError(
            f"{source}: {int(bad.sum())} rows have an empty or missing {what} ID (first at data row {rows[0] + 1}); "
            "remove or fill them"
        )
    if pd.api.types.is_bool_dtype(col):
        return col.astype(str)
    if pd.api.types.is_integer_dtype(col):
        return col.astype(str).astype(object) if beyond_int64(col) else col.astype(np.int64)
    if pd.api.types.is_float_dtype(col):
        values = col.to_numpy(np.float64)
        if np.all(values % 1 == 0) and np.all(np.abs(values) < 2**53):
            return pd.Series(values.astype(np.int64), index=col.index)
        return col.astype(str)
    if plain_integers(as_text).all():
        return as_text.astype(np.int64)
    return as_text.astype(object)


def parse_timestamps(col: pd.Series, source: str) -> pd.Series:
    """int64 seconds since the epoch from numbers (taken as seconds as they are), datetimes or date strings
    (UTC unless they carry a zone)."""
    if col.isna().any():
        raise RankdistillError(
            f"{source}: {int(col.isna().sum())} rows have no timestamp (first at data row "
            f"{int(np.flatnonzero(col.isna().to_numpy())[0]) + 1}); fill them, or pass --timestamp-col '' to "
            "ignore timestamps and use --split ratio"
        )
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.to_datetime(col, utc=True)
    elif pd.api.types.is_bool_dtype(col):
        raise RankdistillError(f"{source}: the timestamp column holds true/false values, not times")
    elif pd.api.types.is_integer_dtype(col):
        return col.astype(np.int64)  # exact, even for micro- or nanosecond counts
    elif pd.api.types.is_numeric_dtype(col):
        values = col.to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            raise RankdistillError(
                f"{source}: {int(bad.sum())} timestamps are not finite numbers (first {values[first]:g} at data row "
                f"{first + 1}); write seconds since 1970 or dates, or remove those rows"
            )
        return pd.Series(values.astype(np.int64), index=col.index)
    else:
        text = col.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():  # numbers stored as text
            return parse_timestamps(numeric, source)
        if 2 * int(numeric.notna().sum()) > len(text):  # mostly numbers: the cells that are not are the bad ones
            _raise_unparsed(text, numeric.isna().to_numpy(), source)
        try:
            parsed = pd.to_datetime(text, utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        if parsed.isna().any():
            _raise_unparsed(text, parsed.isna().to_numpy(), source)
    return pd.Series(parsed.astype("datetime64[s, UTC]").astype(np.int64).to_numpy(), index=col.index)


def _raise_unparsed(text: pd.Series, bad: np.ndarray, source: str) -> None:
    """Count the timestamp cells ``bad`` [N] and point at the first one."""
    first = int(np.argmax(bad))
    raise RankdistillError(
        f"{source}: {int(bad.sum())} timestamps do not parse as numbers or dates (first {text.iloc[first]!r} "
        f"at data row {first + 1}); write seconds since 1970 or ISO dates like 2024-01-31T12:00:00"
    )


def parse_ratings(col: pd.Series, source: str) -> pd.Series:
    """float64 ratings; missing or non-numeric values are an error naming the first one."""
    numeric = pd.to_numeric(col, errors="coerce") if not pd.api.types.is_bool_dtype(col) else col.astype(float)
    missing = col.isna()
    if missing.any():
        raise RankdistillError(
            f"{source}: {int(missing.sum())} rows have no rating (first at data row "
            f"{int(np.flatnonzero(missing.to_numpy())[0]) + 1}); fill them, or pass --rating-col '' to ignore ratings"
        )
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(np.float64, na_value=np.nan))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise RankdistillError(
            f"{source}: {int(bad.sum())} ratings are not numbers (first {col.iloc[first]!r} at data row {first + 1}); "
            "fix them, or pass --rating-col '' to ignore ratings"
        )
    return numeric.astype(np.float64)


def read_movielens(path: Path) -> pd.DataFrame:
    """MovieLens 100K ``u.data`` (tab), 1M/10M ``ratings.dat`` (``::``) or 20M+ ``ratings.csv`` (header
    ``userId,movieId,rating,timestamp``). A folder is searched for those names in that order."""
    if path.is_dir():
        found = [path / n for n in MOVIELENS_FILES if (path / n).exists()]
        if not found:
            raise RankdistillError(f"{path} has none of {', '.join(MOVIELENS_FILES)} (MovieLens ratings)")
        path = found[0]
    _check_not_empty(path)
    names = ["user", "item", "rating", "timestamp"]
    try:
        if path.name.endswith(".csv"):
            frame = pd.read_csv(path).rename(columns={"userId": "user", "movieId": "item"})
        elif path.name.endswith(".dat"):
            # '::' read as ':' by the fast C parser: the fields are at 0, 2, 4, 6 and the empty ones between.
            frame = pd.read_csv(path, sep=":", header=None, usecols=[0, 2, 4, 6])
            if frame.shape[1] != 4:
                raise ValueError("expected user::item::rating::timestamp")
            frame.columns = names
        else:
            frame = pd.read_csv(path, sep="\t", names=names, header=None)
    except pd.errors.EmptyDataError:
        raise RankdistillError(f"{path} is empty") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise RankdistillError(
            f"cannot parse {path} as MovieLens ratings (user, item, rating, timestamp): {str(e).strip()}"
        ) from None
    check_fields_match_header(frame, path, "," if path.name.endswith(".csv") else "\t")
    return standardise(frame, Columns(), source=str(path))


def read_lightgcn(path: Path) -> pd.DataFrame:
    """A LightGCN/NGCF folder: ``train.txt`` and ``test.txt``, one line per user ``user item item ...``.

    The given test split is kept (column is_test); there are no timestamps. A line with a user and no items
    is a user without interactions in that file.
    """
    if not path.is_dir():
        raise RankdistillError(f"the LightGCN format is a folder with train.txt and test.txt; {path} is a file")
    parts = []
    for name, is_test in (("train.txt", False), ("test.txt", True)):
        file = path / name
        if not file.exists():
            raise RankdistillError(f"{path} has no {name} (the LightGCN format needs train.txt and test.txt)")
        users, items = _read_adjacency(file)
        if len(users) == 0:
            raise RankdistillError(f"{file} has no interactions (expected lines 'user item item ...')")
        parts.append(pd.DataFrame({"user": users, "item": items, "is_test": is_test}))
    return pd.concat(parts, ignore_index=True)


def _read_adjacency(file: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    with open(file, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) < 2:
                continue  # a user without items in this file (or a blank line)
            try:
                ids = np.array(fields, dtype=np.int64)
            except (ValueError, OverflowError):
                raise RankdistillError(
                    f"{file}:{lineno}: expected integers 'user item item ...', got {line.strip()[:60]!r}"
                ) from None
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    if not users:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def read_id_list(path: str | Path, column: str = "user") -> pd.Series:
    """IDs from a file, normalised like the data's (plain integers -> int64, else strings), in file order.

    ``.parquet``/``.csv``/``.tsv``: the column ``column``, or the only column there is; a CSV/TSV whose only
    header is itself a plain integer has no header. Any other name (``.txt``): one ID per line, no header.
    """
    path = Path(path)
    if not path.exists():
        raise RankdistillError(f"user list {path} does not exist")
    if path.is_dir():
        raise RankdistillError(f"user list {path} is a folder; pass a file")
    _check_not_empty(path)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame = _read_parquet(path)
    elif name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        sep = "\t" if ".tsv" in name else ","
        frame = _read_csv(path, sep, (column,))
        if column not in frame.columns and len(frame.columns) == 1 and _PLAIN_INT.match(str(frame.columns[0])):
            frame = pd.read_csv(path, sep=sep, header=None, names=[column], dtype=str, keep_default_na=False,
                                na_values=[""])
            check_fields_match_header(frame, path, sep, "user list")
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f]
        while lines and lines[-1] == "":
            lines.pop()
        frame = pd.DataFrame({column: pd.Series(lines, dtype=object).replace("", np.nan)})
    if column not in frame.columns:
        if len(frame.columns) != 1:
            raise RankdistillError(
                f"user list {path} has no column {column!r}; its columns are "
                f"{', '.join(map(repr, map(str, frame.columns)))} (name it with --user-col)"
            )
        frame = frame.rename(columns={frame.columns[0]: column})
    if len(frame) == 0:
        raise RankdistillError(f"user list {path} has no rows")
    return normalise_ids(frame[column].reset_index(drop=True), "user", f"user list {path}")


def write_table(frame: pd.DataFrame, out: Path) -> None:
    """parquet (.parquet/.pq) or CSV/TSV by extension, written to a temporary name and renamed."""
    from rankdistill.paths import writing

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    suffix = out.suffix.lower()
    with writing(out):  # a full disk: one error naming the file
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            if suffix in (".parquet", ".pq"):
                frame.to_parquet(tmp, engine="fastparquet", index=False)
            else:
                frame.to_csv(tmp, sep="\t" if suffix == ".tsv" else ",", index=False)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
