"""A teacher's scores file: one row per scored (user, item), columns ``user,item,score``.

CSV (``.csv``), TSV (``.tsv``) or parquet (``.parquet``/``.pq``), chosen by extension; other columns are
ignored. IDs are read as the data reader reads them (:func:`rankdistill.data.io.normalise_ids`: text that is
all plain integers becomes integers, anything else stays text), so they match the data's vocabularies by raw
ID. The scores are checked where they become knowledge (:meth:`TeacherKnowledge.from_frame`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankdistill.data.io import normalise_ids
from rankdistill.errors import RankdistillError

COLUMNS = ("user", "item", "score")
READERS = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}  # extension -> CSV separator (None: parquet)


def read_scores(path: str | Path) -> pd.DataFrame:
    """The file at ``path`` -> DataFrame user, item (normalised IDs), score (as read), in file order."""
    path = Path(path)
    if path.suffix.lower() not in READERS:
        raise RankdistillError(f"teacher scores {path} must end in .csv, .tsv or .parquet "
                               f"(got {path.suffix or 'no extension'!r})")
    if not path.is_file():
        raise RankdistillError(f"teacher scores {path} does not exist (or is not a file)")
    sep = READERS[path.suffix.lower()]
    try:
        if sep is None:
            frame = pd.read_parquet(path, engine="fastparquet")
        else:
            frame = pd.read_csv(path, sep=sep, dtype={"user": str, "item": str}, keep_default_na=False,
                                na_values=[""], encoding="utf-8-sig")
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file, reported in one line
        raise RankdistillError(f"cannot read teacher scores {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise RankdistillError(f"teacher scores {path} lack the column(s) {', '.join(missing)}; they have "
                               f"{', '.join(frame.columns) or 'no columns'} (expected user, item, score)")
    if len(frame) == 0:
        raise RankdistillError(f"teacher scores {path} have no rows")
    source = f"teacher scores {path}"
    return pd.DataFrame({"user": normalise_ids(frame["user"], "user", source),
                         "item": normalise_ids(frame["item"], "item", source), "score": frame["score"]})
