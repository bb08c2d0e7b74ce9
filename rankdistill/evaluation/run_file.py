"""Evaluate any recommender's output: a RUN file (user, item, score) against a QRELS file (user, item and an
optional relevance), the job trec_eval and ranx do, with this package's metrics and conventions.

- Files: CSV (``.csv``), TSV (``.tsv``) or parquet (``.parquet``/``.pq``), chosen by extension, with a
  header naming the columns ``user,item,score`` (RUN; other columns are ignored) and ``user,item`` plus
  optionally ``relevance`` (QRELS; without it every listed item has relevance 1).
- Ids may be numbers or strings; they compare as numbers when both files hold numbers, else as strings.
- Each user's run is ranked by score descending, then item id ascending — the package's tie rule. (trec_eval
  orders tied scores by document id descending, so on runs with ties the two can differ.) Only the first K
  = max(ks) items count.
- Relevance > 0 is relevant; gains are the relevance (graded NDCG); items with relevance <= 0 are judged
  non-relevant. IDCG uses all of the user's relevant items, cut at k.
- Means are over users with at least one relevant item in QRELS: such a user missing from the run scores 0
  on every metric; a user in the run but not in QRELS (or with no relevant item) is left out.

Mistakes in the files raise :class:`RankdistillError` with one line naming the file, the column and the
first offending row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rankdistill.data.csr import Csr
from rankdistill.data.io import check_fields_match_header
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import (PerUserMetrics, Ranking, check_names, hit_gains, ideal_gains,
                                              relevance_counts)
from rankdistill.evaluation.metrics import DEFAULT_METRICS, compute_metrics

RUN_COLUMNS = ("user", "item", "score")
QRELS_COLUMNS = ("user", "item")
READERS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: str | Path, what: str, required: tuple[str, ...], numeric: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV/TSV/parquet file and check it: the ``required`` columns exist, no empty values, the
    ``numeric`` columns hold finite numbers. ``what`` ("RUN", "QRELS") names the file in errors."""
    path = Path(path)
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        got = path.suffix or "no extension"
        raise RankdistillError(f"{what} file {path} must end in .csv, .tsv or .parquet (got {got!r})")
    if not path.is_file():
        raise RankdistillError(f"{what} file {path} does not exist")
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path, engine="fastparquet")
        else:
            frame = pd.read_csv(path, sep="," if kind == "csv" else "\t")
            check_fields_match_header(frame, path, "," if kind == "csv" else "\t", f"{what} file")
    except RankdistillError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file, reported in one line
        raise RankdistillError(f"could not read {what} file {path}: {type(e).__name__}: {e}".splitlines()[0]) from e
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RankdistillError(f"{what} file {path} lacks column(s) {', '.join(missing)}; it has: "
                               f"{', '.join(frame.columns) or 'no columns'} (expected {', '.join(required)})")
    frame = frame[[c for c in dict.fromkeys((*required, *numeric)) if c in frame.columns]].reset_index(drop=True)
    for col in frame.columns:
        empty = frame[col].isna().to_numpy()
        if empty.any():
            raise RankdistillError(f"{what} file {path} has {int(empty.sum())} empty value(s) in column {col!r} "
                                   f"(first at data row {int(np.argmax(empty)) + 1})")
    for col in numeric:
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise RankdistillError(f"{what} file {path}: column {col!r} must hold finite numbers; "
                                   f"data row {row + 1} has {frame[col].iloc[row]!r} ({int(bad.sum())} such row(s))")
        frame[col] = values
    return frame


def _check_unique(frame: pd.DataFrame, what: str, path: str) -> None:
    dup = frame.duplicated(["user", "item"], keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        u, i = frame["user"].iloc[rows[0]], frame["item"].iloc[rows[0]]
        raise RankdistillError(f"{what} file {path} lists user {u!r}, item {i!r} more than once (data rows "
                               f"{', '.join(str(r + 1) for r in rows[:2])}): each (user, item) must appear once")


def _harmonise(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ids compare as numbers when both columns are numeric, else as strings."""
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        return a, b
    return a.astype(str), b.astype(str)


def _encode(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of a and b in one vocabulary sorted by id (so code order = id order), and the ids."""
    a, b = _harmonise(a, b)
    codes, uniques = pd.factorize(pd.concat([a, b], ignore_index=True), sort=True)
    return codes[: len(a)].astype(np.int64), codes[len(a) :].astype(np.int64), np.asarray(uniques)


def run_ranking(users: np.ndarray, items: np.ndarray, scores: np.ndarray, n_users: int, k: int) -> Ranking:
    """Top-k of each user from (user, item, score) rows: score descending, then item code ascending.
    users, items int64 [N] codes, scores float [N] -> Ranking [n_users, k] (-inf where a user has fewer)."""
    order = np.lexsort((items, -scores, users))
    users, items, scores = users[order], items[order], scores[order]
    counts = np.bincount(users, minlength=n_users)
    rank = np.arange(len(users)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < k
    top_items = np.zeros((n_users, k), np.int64)
    top_scores = np.full((n_users, k), -np.inf)
    top_items[users[keep], rank[keep]] = items[keep]
    top_scores[users[keep], rank[keep]] = scores[keep]
    return Ranking(torch.from_numpy(top_items), torch.from_numpy(top_scores), torch.arange(n_users))


def qrels_csr(users: np.ndarray, items: np.ndarray, relevance: np.ndarray, n_users: int,
              n_items: int) -> tuple[Csr, torch.Tensor]:
    """Csr of judged items (sorted by user, then item) and their relevance float32 [nnz] in the same order."""
    order = np.lexsort((items, users))
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    csr = Csr(torch.from_numpy(indptr), torch.from_numpy(np.ascontiguousarray(items[order])), n_items)
    return csr, torch.from_numpy(relevance[order].astype(np.float32))


def evaluate_run_per_user(run: pd.DataFrame, qrels: pd.DataFrame, ks: tuple[int, ...] = (10, 20),
                          metrics: tuple[str, ...] = DEFAULT_METRICS) -> tuple[PerUserMetrics, np.ndarray]:
    """Per-user metrics of a run (columns user, item, score) against qrels (user, item[, relevance]).
    -> (PerUserMetrics over every user of either frame, user ids [U] of its rows)."""
    check_names(ks, metrics)
    ru, qu, user_ids = _encode(run["user"], qrels["user"])
    ri, qi, _ = _encode(run["item"], qrels["item"])
    n_users, n_items = len(user_ids), int(max(ri.max(initial=-1), qi.max(initial=-1))) + 1
    graded = "relevance" in qrels.columns
    rel = qrels["relevance"].to_numpy(np.float64) if graded else np.ones(len(qrels))
    k = max(ks)
    ranking = run_ranking(ru, ri, run["score"].to_numpy(np.float64), n_users, k)
    csr, relevance = qrels_csr(qu, qi, rel, n_users, n_items)
    users = torch.arange(n_users)
    gains = hit_gains(ranking, csr, users, relevance)
    n_relevant = relevance_counts(csr, users, relevance)
    ideal = ideal_gains(csr, users, k, relevance) if graded else None
    return PerUserMetrics(users, n_relevant, compute_metrics(gains, n_relevant, ks, metrics, ideal)), user_ids


def evaluate_run(run: pd.DataFrame, qrels: pd.DataFrame, ks: tuple[int, ...] = (10, 20),
                 metrics: tuple[str, ...] = DEFAULT_METRICS) -> dict[str, float]:
    """Means over users with at least one relevant item: {"ndcg@10": ..., "recall@10": ..., ...}."""
    return evaluate_run_per_user(run, qrels, ks, metrics)[0].means()


def read_run(path: str | Path) -> pd.DataFrame:
    frame = read_table(path, "RUN", RUN_COLUMNS, ("score",))
    _check_unique(frame, "RUN", str(path))
    return frame


def read_qrels(path: str | Path) -> pd.DataFrame:
    frame = read_table(path, "QRELS", QRELS_COLUMNS, ("relevance",))
    _check_unique(frame, "QRELS", str(path))
    if len(frame) == 0 or ("relevance" in frame.columns and not (frame["relevance"] > 0).any()):
        raise RankdistillError(f"QRELS file {path} has no relevant item (relevance > 0): nothing to evaluate")
    return frame


def evaluate_run_files(run_path: str | Path, qrels_path: str | Path, ks: tuple[int, ...] = (10, 20),
                       metrics: tuple[str, ...] = DEFAULT_METRICS,
                       per_user_path: str | Path | None = None) -> dict[str, float]:
    """Read, check and evaluate RUN against QRELS; optionally write the per-user table to parquet."""
    per_user, user_ids = evaluate_run_per_user(read_run(run_path), read_qrels(qrels_path), ks, metrics)
    if per_user_path is not None:
        per_user.write_parquet(per_user_path, user_ids)
    return per_user.means()
