"""One entry point from a path (or nothing: the embedded synthetic default) to encoded Interactions.

:class:`DataSpec` is everything needed to read the same data again (path, format, column names, filters,
synthetic settings); every model directory stores it, so ``rankdistill evaluate --model`` re-reads and
re-splits the data the model was trained on.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from rankdistill.data.filters import to_implicit
from rankdistill.data.interactions import Interactions
from rankdistill.data.io import FORMATS, MOVIELENS_FILES, Columns, read_interactions
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.errors import RankdistillError
from rankdistill.paths import input_path


@dataclass(frozen=True)
class DataSpec:
    """What to read and how to turn it into implicit feedback. ``path=None``: the embedded synthetic data."""

    path: str | None = None
    format: str | None = None  # None: detected from the path
    columns: Columns = Columns()
    min_rating: float | None = None  # rating >= min_rating is a positive; None: every row is
    min_user_interactions: int = 0  # k-core thresholds (0: no filtering)
    min_item_interactions: int = 0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise RankdistillError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        for name in ("min_user_interactions", "min_item_interactions"):
            if getattr(self, name) < 0:
                raise RankdistillError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DataSpec":
        """From the data options of the command line (the [data] options of commands/options.py); missing options take defaults."""
        get = lambda name, default: default if getattr(args, name, None) is None else getattr(args, name)  # noqa: E731
        d = Columns()
        columns = Columns(get("user_col", d.user), get("item_col", d.item), get("timestamp_col", d.timestamp),
                          get("rating_col", d.rating))
        path = getattr(args, "data", None)
        return cls(str(input_path(path, "data path")) if path else None, getattr(args, "format", None), columns,
                   getattr(args, "min_rating", None), get("min_user_interactions", 0), get("min_item_interactions", 0))

    def at(self, path: str, format: str | None = None) -> "DataSpec":
        """The same reading of another file: its columns, rating threshold and k-core filters, with ``path``
        (and ``format`` when given; else a format this spec forced, else detection from the path). What
        ``--data`` of ``evaluate --model`` and ``export`` means: the model's data read again from elsewhere."""
        if not str(path).strip():
            raise RankdistillError("--data needs a path (leave it out to use the model's recorded data)")
        return replace(self, path=str(input_path(path, "data path")), format=format or self.format,
                       synthetic=SyntheticConfig())

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.path is not None:
            d.pop("synthetic")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["columns"] = Columns(**d.get("columns", {}))
        d["synthetic"] = SyntheticConfig(**d["synthetic"]) if d.get("synthetic") else SyntheticConfig()
        return cls(**d)

    def describe(self) -> str:
        return "the embedded synthetic data" if self.path is None else self.path

    def load(self) -> Interactions:
        return load_interactions(self.path, self.format, self.columns, self.synthetic, min_rating=self.min_rating,
                                 min_user_interactions=self.min_user_interactions,
                                 min_item_interactions=self.min_item_interactions)


def data_name(path: Path) -> str:
    """``ml-100k`` for ``ml-100k/u.data``, ``gowalla`` for a folder, ``log`` for ``log.csv``."""
    if path.is_dir():
        return path.name
    if path.name in MOVIELENS_FILES:
        return path.parent.name or path.stem
    return Path(path.stem).stem if path.suffix == ".gz" else path.stem


def load_interactions(
    path: str | Path | None = None,
    format: str | None = None,
    columns: Columns = Columns(),
    synthetic: SyntheticConfig = SyntheticConfig(),
    *,
    min_rating: float | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Read ``path`` (CSV/TSV/parquet/MovieLens/LightGCN) or, when None, generate the synthetic default; then
    keep ratings >= ``min_rating``, collapse duplicates and apply k-core filtering. What is dropped is counted
    per reason in ``Interactions.dropped`` (see :mod:`rankdistill.data.filters`)."""
    spec = DataSpec(None if path is None else str(path), format, columns, min_rating, min_user_interactions,
                    min_item_interactions, synthetic)
    if path is None:
        frame, name = make_synthetic(synthetic), "synthetic"
    else:
        path = Path(path)
        frame, name = read_interactions(path, format, columns), data_name(path)
    source = spec.describe()
    frame, dropped = to_implicit(frame, min_rating, min_user_interactions, min_item_interactions, source)
    return Interactions.from_frame(frame, name, dropped, spec.to_dict())
