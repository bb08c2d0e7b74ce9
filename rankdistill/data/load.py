"""One entry point from a path (or nothing: the embedded synthetic default) to encoded Interactions."""

from __future__ import annotations

from pathlib import Path

from rankdistill.data.interactions import Interactions
from rankdistill.data.io import Columns, read_interactions
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic


def load_interactions(
    path: str | Path | None = None,
    format: str | None = None,
    columns: Columns = Columns(),
    synthetic: SyntheticConfig = SyntheticConfig(),
) -> Interactions:
    """Read ``path`` (CSV/TSV/parquet/MovieLens/LightGCN) or, when None, generate the synthetic default."""
    if path is None:
        return Interactions.from_frame(make_synthetic(synthetic), "synthetic")
    path = Path(path)
    frame = read_interactions(path, format, columns)
    name = path.name if path.is_dir() else path.stem if path.name not in ("u.data", "ratings.dat", "ratings.csv") else path.parent.name
    return Interactions.from_frame(frame, name)
