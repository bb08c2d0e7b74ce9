"""rankdistill recommend: the top-K items per user of a saved model, with raw IDs, to parquet or CSV.

Each user's training and validation items are excluded (the same candidates as the evaluation protocol),
and so are items without any training interaction (their embeddings were never trained). Users the model
does not know, users listed twice and users without training interactions are counted in the summary
printed on stdout (one JSON object), and named on stderr; they get no rows.

Output columns: user, item (raw IDs as in the data), score (float32, the model's), rank (1 = best).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rankdistill.data.io import read_id_list, write_table
from rankdistill.data.split import Split
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import rank_all
from rankdistill.models.base import Ranker
from rankdistill.paths import output_file

OUTPUT_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")
EXAMPLES = 5


def top_k(model: Ranker, split: Split, users: np.ndarray, k: int, chunk: int = 4096) -> pd.DataFrame:
    """Rows (user, item, score, rank) of row indices: up to ``k`` items per user of ``users`` [U] (in that
    order), best first; training and validation items and untrained items excluded."""
    exclude = split.seen_before_test
    untrained = np.bincount(split.train.indices.numpy(), minlength=split.n_items) == 0
    k_fetch = min(k + int(untrained.sum()), split.n_items)  # enough to drop the untrained ones afterwards
    order = np.argsort(users, kind="stable")  # rank_all wants ascending users
    parts = []
    for a in range(0, len(order), chunk):
        rows = order[a : a + chunk]
        ranking = rank_all(model, exclude, k_fetch, torch.from_numpy(users[rows]))
        items, scores = ranking.items.cpu().numpy(), ranking.scores.cpu().numpy()
        keep = np.isfinite(scores) & ~untrained[items]
        rank = np.cumsum(keep, axis=1)
        keep &= rank <= k
        r, c = np.nonzero(keep)
        parts.append(pd.DataFrame({"order": rows[r], "user": users[rows][r], "item": items[r, c],
                                   "score": scores[r, c].astype(np.float32), "rank": rank[r, c].astype(np.int32)}))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"order": [], "user": [], "item": [], "score": [], "rank": []})
    return out.sort_values(["order", "rank"], kind="stable").drop(columns="order").reset_index(drop=True)


def requested_users(vocab: IdVocab, path: str | None, column: str = "user") -> tuple[np.ndarray, dict]:
    """Row indices [U] of the users listed in ``path`` (every user when None), first occurrence order, and the
    counts of what was left out (unknown and repeated users). No known user at all is an error."""
    if not path:
        return np.arange(len(vocab)), {"users_requested": len(vocab), "unknown_users": 0, "unknown_examples": [],
                                       "duplicate_users": 0}
    raw = read_id_list(path, column)
    codes = vocab.encode(raw.to_numpy())
    unknown = codes < 0
    examples = [str(x) for x in pd.unique(raw[unknown].to_numpy())[:EXAMPLES]]
    if unknown.all():
        raise RankdistillError(
            f"none of the {len(raw):,} users in {path} is known to the model (for example {examples[0]!r}); "
            f"its users look like {', '.join(map(str, vocab.ids[:EXAMPLES]))}"
        )
    users = pd.unique(codes[~unknown])
    return users, {"users_requested": len(raw), "unknown_users": int(unknown.sum()), "unknown_examples": examples,
                   "duplicate_users": int((~unknown).sum() - len(users))}


def main(args: argparse.Namespace) -> int:
    from rankdistill.commands.options import command_device, configure_torch
    from rankdistill.modeldir import load

    configure_torch(args.threads)
    device = command_device(getattr(args, "device", "auto"))
    if args.k < 1:
        raise RankdistillError(f"--k must be >= 1, got {args.k}")
    out = Path(args.out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise RankdistillError(f"--out must end in {', '.join(OUTPUT_SUFFIXES)}, got {out}")
    output_file(out)  # before any work
    saved = load(args.model, device)
    _, split = saved.load_split()
    users, summary = requested_users(saved.user_vocab, args.users, args.user_col)
    summary = {"model": str(saved.path), "out": str(out), "k": args.k, **summary}
    has_train = (split.train.lengths().numpy() > 0)[users]
    summary["users_without_training"] = int((~has_train).sum())
    users = users[has_train]
    summary["items_excluded_untrained"] = int((np.bincount(split.train.indices.numpy(), minlength=split.n_items)
                                               == 0).sum())
    rows = top_k(saved.model, split, users.astype(np.int64), args.k)
    table = pd.DataFrame({"user": saved.user_vocab.decode(rows["user"].to_numpy()),
                          "item": saved.item_vocab.decode(rows["item"].to_numpy()),
                          "score": rows["score"].to_numpy(np.float32), "rank": rows["rank"].to_numpy(np.int32)})
    write_table(table, out)
    summary["users_written"] = int(table["user"].nunique())
    summary["rows"] = len(table)
    if summary["unknown_users"]:
        print(f"warning: {summary['unknown_users']:,} of {summary['users_requested']:,} listed users are not known "
              f"to the model and get no rows (for example {', '.join(summary['unknown_examples'])})", file=sys.stderr)
    if summary["users_without_training"]:
        print(f"warning: {summary['users_without_training']:,} users have no training interactions in the model's "
              "split and get no rows", file=sys.stderr)
    print(json.dumps(summary))
    return 0
