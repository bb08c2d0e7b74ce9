r"""Exact top-K over score matrices with one documented tie rule: **score descending, then item index
ascending**. Every ranking this package produces (models, run files, teacher knowledge, fidelity) uses it,
so results do not depend on the order in which ``torch.topk`` happens to return equal scores.

- :func:`topk_ties_by_index` — top-K of a dense score matrix. ``torch.topk`` is asked for K + 1 values:
  equal scores straddle the K-th place exactly when the (K+1)-th value equals the K-th, so the check is
  free; only such rows (rare with real-valued scores) are repaired by a pass over their full rows.
- :func:`topk_blockmax` — the same result for wide matrices (large catalogues), faster: the row is cut into
  contiguous blocks of B items, the K blocks with the largest maxima are chosen (same tie rule on blocks),
  and the exact top-K is taken over those K·B candidates only (themselves prefiltered again with smaller
  blocks: 500 then 50 items by default).
- :func:`merge_topk` — folds the top-K of one more block of columns into a running top-K (catalogues or
  models too large to score every item at once).

Why the block prefilter is exact. Let v_K be the K-th largest score of a row and M_K the K-th largest block
maximum. The K chosen blocks have K distinct maxima >= M_K, so v_K >= M_K, and every block whose maximum
exceeds M_K is chosen. If v_K > M_K, every top-K item lies in such a block. If v_K = M_K, the top K are the
A items scoring above v_K (all in chosen blocks) plus the K - A lowest-index items tied at v_K. At most A
blocks have a maximum above v_K, so at least K - A of the chosen blocks are tied at M_K; blocks tie-break
by lowest index, so each tied item left out lies in a block after all of them, each of which holds a tied
item of lower index. Hence the chosen blocks contain the exact top K under the tie rule.

Scores must not be NaN (``torch.topk`` orders NaN above every number). Masked (excluded) items carry
``-inf``; a row with fewer than K finite scores gets ``-inf`` entries at its tail, which callers treat as
"no candidate" (see :class:`rankdistill.evaluation.evaluator.Ranking`).
"""

from __future__ import annotations

import torch

DEFAULT_BLOCKS = (500, 50)  # block sizes of the prefilter levels for wide rows (measured on CPU: 500 to 1000
# items per level-1 block are equally fast; a second level of 50 shortens the final top-K from 50,000 to 5,000)


def topk_ties_by_index(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` of each row, ordered by (score desc, column index asc).

    scores [C, I] float -> (values [C, k'], indices int64 [C, k']) with k' = min(k, I).
    One host synchronisation per call (whether any row needs the tie repair).
    """
    n = scores.shape[1]
    k = min(k, n)
    if k == 0:
        return scores.new_empty(scores.shape[0], 0), torch.empty(scores.shape[0], 0, dtype=torch.int64,
                                                                  device=scores.device)
    if k < n:
        values, indices = scores.topk(k + 1, dim=1)
        straddle = values[:, k] == values[:, k - 1]  # equal scores on both sides of the K-th place
        values, indices = values[:, :k].contiguous(), indices[:, :k].contiguous()
        if bool(straddle.any()):
            rows = straddle.nonzero().squeeze(1)
            values[rows], indices[rows] = _lowest_index_ties(scores, rows, values[rows, -1:], k)
    else:
        values, indices = scores.topk(k, dim=1)  # every column; only the order below matters
    return _order(values, indices)


def _lowest_index_ties(scores: torch.Tensor, rows: torch.Tensor, kth: torch.Tensor, k: int,
                       max_cells: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``rows`` [R] of ``scores`` whose K-th value ``kth`` [R, 1] is tied beyond the K-th place: every
    item above ``kth`` plus the lowest-index items equal to it, K per row, in index order. Works on groups
    of rows of at most ``max_cells`` scores, so memory stays bounded whatever the number of rows."""
    n = scores.shape[1]
    group = max(1, max_cells // max(1, n))
    out_v, out_i = [], []
    for a in range(0, len(rows), group):
        s, t = scores[rows[a : a + group]], kth[a : a + group]
        above = s > t
        tied = s == t
        need = k - above.sum(1, keepdim=True, dtype=torch.int32)
        chosen = above | (tied & (tied.cumsum(1, dtype=torch.int32) <= need))
        idx = chosen.nonzero()[:, 1].view(len(s), k)  # ascending index within each row
        out_v.append(s.gather(1, idx))
        out_i.append(idx)
    return torch.cat(out_v), torch.cat(out_i)


def _order(values: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row's K entries by (value desc, index asc): index sort, then a stable value sort."""
    indices, perm = indices.sort(dim=1)
    values = values.gather(1, perm)
    values, perm = values.sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, perm)


def prefilter_blocks(n: int, k: int) -> tuple[int, ...]:
    """Block sizes for a row of n scores and top-k: level 1 keeps at least 4·k blocks of at most 500 items,
    level 2 cuts the k·B1 survivors into blocks 10 times smaller; () when rows are too short to gain."""
    b1 = min(DEFAULT_BLOCKS[0], n // max(1, 4 * k))
    if b1 < 16:
        return ()
    b2 = b1 // 10
    return (b1, b2) if b2 >= 4 else (b1,)


def topk_blockmax(scores: torch.Tensor, k: int, blocks: tuple[int, ...] | None = None,
                  workspace: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result as :func:`topk_ties_by_index` (exact, same tie rule), through block-maximum prefilters.

    scores [C, I] float -> (values [C, k'], indices int64 [C, k']), k' = min(k, I). ``blocks``: the block
    sizes of successive levels (None: :func:`prefilter_blocks`, 500 then 50 for wide rows). Level 1 keeps
    the K blocks of ``blocks[0]`` items with the largest maxima; level 2 cuts those K·blocks[0] candidates
    (in item order) into blocks of ``blocks[1]`` and keeps K of them, and so on; a level is skipped when the
    row has fewer than 4·K of its blocks. ``workspace``: a dict the caller keeps between calls, so candidate
    buffers are reused instead of reallocated (on the CPU the page faults of a fresh buffer cost more than
    the copy).
    """
    k = min(k, scores.shape[1])
    if blocks is None:
        blocks = prefilter_blocks(scores.shape[1], k)
    levels = []  # (chosen block ids [C, k], block size) of each level applied
    for level, block in enumerate(blocks):
        if k == 0 or scores.shape[1] // block < 4 * k:
            continue
        scores, chosen = _prefilter(scores, k, block, workspace, level)
        levels.append((chosen, block))
    values, j = topk_ties_by_index(scores, k)
    for chosen, block in reversed(levels):  # candidate column -> column of the level above
        j = chosen.gather(1, j // block) * block + j % block
    return values, j


def _prefilter(scores: torch.Tensor, k: int, block: int, workspace: dict | None,
               level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One level: scores [C, I] -> (candidates [C, k·block] in column order, chosen block ids [C, k] asc)."""
    c, n = scores.shape
    n_full = n // block  # whole blocks; a shorter tail block follows when block does not divide n
    tail = n - n_full * block
    main = scores[:, : n_full * block].unflatten(1, (n_full, block))  # view [C, nb, B]
    maxima = main.amax(-1)  # [C, nb]
    if tail:
        maxima = torch.cat([maxima, scores[:, n_full * block :].amax(1, keepdim=True)], 1)
    _, chosen = topk_ties_by_index(maxima, k)  # [C, k] block ids, ties by lowest block index
    chosen = chosen.sort(1).values  # ascending, so candidate columns stay in item-index order
    cand = _buffer(workspace, ("cand", level), (c * k, block), scores)
    if scores.is_contiguous() and not tail:
        flat = (torch.arange(c, device=scores.device)[:, None] * n_full + chosen).view(-1)
        torch.index_select(scores.view(c * n_full, block), 0, flat, out=cand)
    else:
        rows = torch.arange(c, device=scores.device)[:, None]
        cand.copy_(main[rows, chosen.clamp_max(n_full - 1)].view(c * k, block))
    cand = cand.view(c, k, block)
    if tail:  # the tail block can only be the last chosen one; pad it with -inf (never selected, see below)
        padded = torch.full((c, block), float("-inf"), dtype=scores.dtype, device=scores.device)
        padded[:, :tail] = scores[:, n_full * block :]
        cand[:, -1] = torch.where(chosen[:, -1:] == n_full, padded, cand[:, -1])
    # Padding sits after every real candidate and at least K real candidates exist, so the index rule never
    # selects it.
    return cand.view(c, k * block), chosen


def _buffer(workspace: dict | None, key: tuple, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    if workspace is None:
        return like.new_empty(shape)
    buf = workspace.get(key)
    if buf is None or buf.numel() < _numel(shape) or buf.dtype != like.dtype or buf.device != like.device:
        buf = workspace[key] = like.new_empty(_numel(shape))
    return buf[: _numel(shape)].view(shape)


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def merge_topk(values: torch.Tensor, items: torch.Tensor, block_scores: torch.Tensor, start: int,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of a running top-K and one more block of consecutive items, same tie rule.

    values [C, K0], items int64 [C, K0] (all < ``start``): the running top-K; block_scores [C, L]: scores of
    items ``start .. start+L-1``. -> (values [C, k'], items [C, k']). The running entries are put in index
    order first, so column order equals item order and :func:`topk_ties_by_index` applies unchanged.
    """
    items, perm = items.sort(1)
    values = values.gather(1, perm)
    c, length = block_scores.shape
    block_items = torch.arange(start, start + length, device=items.device).expand(c, -1)
    v, j = topk_ties_by_index(torch.cat([values, block_scores], 1), k)
    return v, torch.cat([items, block_items], 1).gather(1, j)
