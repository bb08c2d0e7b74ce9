r"""Exact top-K of dot-product scores in one pass over cache-sized tiles, without a [users × items] buffer.

The whole-row path of :func:`rankdistill.evaluation.evaluator.rank_all` writes every score of a chunk of
users to a [C, I] buffer in main memory and reads it back for the block-maximum prefilter
(:func:`rankdistill.evaluation.topk.topk_blockmax`); on the CPU that round trip through memory costs about
as much as the matmul itself. Here the scores of C users are computed T items at a time into one small reused
item-major tile [T, C] (it stays in cache), the seen items are set to ``-inf`` in the tile, the tile is cut
into blocks of B consecutive items, and only the blocks that can still hold a top-K item are copied out:

- ``thr`` [C] is a lower bound of M_K, the K-th largest block maximum of the whole row: the K-th largest of
  the maxima of groups of blocks seen so far (``-inf`` until K groups). K groups hold K distinct blocks whose
  maxima are at least that large, so the bound holds whatever the grouping; single blocks in the first
  tiles, groups of ``GROUP`` blocks later (fewer values to take a top-K of, updated once K new groups came).
- A block is kept when its maximum is >= ``thr`` (updated with the block's own tile first), so every block
  whose maximum is >= M_K is kept, at least K per row.
- After the last tile, kept blocks whose maximum is below the final bound are dropped (they cannot reach
  M_K). The live blocks hold every item scoring at least M_K, hence every item scoring at least v_K, the
  K-th largest score, ties included, and at least K items; so the top K of their scores by (score
  descending, item index ascending) is the exact top K of the row.

Each score is one dot product of length D computed by the same BLAS; the whole-row matmul and the tiles give
the same floats, so the rankings are bit-identical (tests/test_streaming.py checks it on real-valued
scores, benchmarks/evaluation.py on the benchmark's job). Kept blocks cost memory in proportion to how often
a row's running K-th maximum is beaten, about K·(1 + ln(I / (K·B))) blocks per user for real-valued scores
(595 at I = 500,000, K = 100, B = 32: 4% of the scores; about 110 of them are live at the end). Scores with
many ties can keep far more: when the kept scores would pass ``max_kept`` the function gives up and returns
None, and the caller uses the whole-row path.
"""

from __future__ import annotations

import torch

from rankdistill.evaluation.topk import topk_ties_by_index

TILE_ITEMS = 4096  # items per tile: the T·C tile (8 MiB) stays in cache (measured on CPU: 1024 to 4096)
BLOCK = 32  # items per block: small blocks keep fewer scores per user, larger ones take fewer maxima
TILE_USERS = 512  # users per pass: the item matrix is read once per pass, the tile is C·T floats
GROUP = 8  # blocks per group in the running K-th maximum after the first tiles (see the module text)
EARLY = 4  # tiles at the start whose every block maximum updates the running K-th maximum


def tile_users(n_items: int, k: int, memory_budget: int) -> int:
    """Users per pass of :func:`stream_topk`: ``TILE_USERS``, fewer when the [T, C] tile would take more than
    a quarter of ``memory_budget`` bytes; 0 when rows are too short for the block prefilter to pay
    (fewer than 4·k blocks) or not even one user's tile fits."""
    if n_items // BLOCK < 4 * k:
        return 0
    return min(TILE_USERS, memory_budget // (4 * 4 * TILE_ITEMS))


def stream_topk(
    user_vectors: torch.Tensor,
    items: torch.Tensor,
    seen_rows: torch.Tensor,
    seen_cols: torch.Tensor,
    k: int,
    max_kept: int,
    tile: int | None = None,
    block: int | None = None,
    workspace: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Exact top-``k`` of ``user_vectors @ items.T`` with the seen items masked, tile by tile.

    user_vectors float [C, D]; items float [I, D] (row-contiguous); seen_rows, seen_cols int64 [m]: (row in
    0..C-1, item) of the items to mask; max_kept: most block scores (floats) to keep before giving up.
    ``tile`` is rounded down to a multiple of ``block``. -> (values [C, k'], items int64 [C, k']),
    k' = min(k, I), ordered by (score desc, item asc), as
    :func:`rankdistill.evaluation.topk.topk_ties_by_index` on the masked scores; or None when more than
    ``max_kept`` scores would be kept (many ties) or the row has fewer than k' blocks.
    """
    c, n = user_vectors.shape[0], items.shape[0]
    k = min(k, n)
    tile, block = tile or TILE_ITEMS, block or BLOCK
    tile = max(block, tile - tile % block)
    n_blocks = -(-n // block)
    if k == 0 or n_blocks < k:
        return None
    device, dtype = user_vectors.device, user_vectors.dtype
    ws = {} if workspace is None else workspace
    buf = ws.get("tile")
    if buf is None or buf.numel() < c * tile or buf.dtype != dtype:
        buf = ws["tile"] = torch.empty(c * tile, dtype=dtype, device=device)
    vectors_t = user_vectors.T.contiguous()  # [D, C]: the tile is item-major, [items, users]
    order = torch.argsort(seen_cols)
    seen_rows, seen_cols = seen_rows[order], seen_cols[order]
    starts = list(range(0, n, tile))
    bounds = torch.searchsorted(seen_cols, torch.tensor([*starts, n], device=device)).tolist()
    seen_flat = seen_cols * c + seen_rows  # position in an item-major tile starting at item 0
    minus_inf = float("-inf")
    thr = torch.full((c,), minus_inf, dtype=dtype, device=device)
    # Running K-th maximum: columns [0, K) hold the K largest group maxima so far, new ones are appended after.
    nb_tile = tile // block
    fold = torch.full((c, 2 * k + nb_tile), minus_inf, dtype=dtype, device=device)
    filled = 0  # group maxima in ``fold`` after the first K columns
    offsets = torch.arange(block, device=device) * c  # a block's scores are ``c`` apart in the tile
    kept_rows, kept_blocks, kept_max = [], [], []
    n_kept = 0
    for t, s in enumerate(starts):
        w = min(tile, n - s)
        wp = -(-w // block) * block  # the last tile is padded to whole blocks with -inf
        scores = buf[: wp * c].view(wp, c)
        if w == wp:
            torch.mm(items[s : s + w], vectors_t, out=scores)
        else:
            scores[:w] = items[s : s + w] @ vectors_t
            scores[w:] = minus_inf
        lo, hi = bounds[t], bounds[t + 1]
        if hi > lo:
            scores.view(-1).index_fill_(0, seen_flat[lo:hi] - s * c, minus_inf)
        nb = wp // block
        maxima = scores.view(nb, block, c).amax(1)  # [nb, C]
        # Fold this tile's maxima into the running K-th maximum first, so the tile is filtered by it too.
        # Past the first EARLY tiles, by maxima of groups of GROUP blocks (fewer values for the top-K; the
        # K-th largest group maximum is still a lower bound of M_K: K groups hold K distinct blocks whose
        # maxima are at least that large), and only once K new groups have come.
        group = 1 if t < EARLY else GROUP
        g = -(-nb // group)
        if g * group == nb:
            fold[:, k + filled : k + filled + g] = maxima.view(g, group, c).amax(1).T
        else:
            fold[:, k + filled : k + filled + g - 1] = maxima[: (g - 1) * group].view(g - 1, group, c).amax(1).T
            fold[:, k + filled + g - 1] = maxima[(g - 1) * group :].amax(0)
        filled += g
        if t < EARLY or filled >= k:
            top = fold[:, : k + filled].topk(k, dim=1, sorted=False).values
            fold[:, :k] = top
            fold[:, k:] = minus_inf
            filled = 0
            thr = top.amin(1)
        keep = (maxima >= thr).nonzero()  # [m, 2] (block, row), block-major
        n_kept += len(keep) * block
        if n_kept > max_kept:
            return None
        blk, row = keep[:, 0], keep[:, 1]
        kept_rows.append(row)
        kept_blocks.append(blk + s // block)
        kept_max.append(maxima.view(-1).index_select(0, blk * c + row))
        start = (blk * (block * c) + row)[:, None] + offsets  # [m, B] positions of the kept blocks' scores
        vals = ws.get("kept")
        if vals is None or vals.numel() < n_kept or vals.dtype != dtype:  # grow by half at least
            grown = torch.empty(max(n_kept, 3 * (0 if vals is None else vals.numel()) // 2, 1 << 20), dtype=dtype,
                                device=device)
            if vals is not None and n_kept > len(keep) * block:
                grown[: n_kept - len(keep) * block] = vals[: n_kept - len(keep) * block]
            vals = ws["kept"] = grown
        torch.index_select(scores.view(-1), 0, start.view(-1), out=vals[n_kept - len(keep) * block : n_kept])
    rows, blocks, kept = torch.cat(kept_rows), torch.cat(kept_blocks), torch.cat(kept_max)
    # Blocks kept while the bound was still low and below the final one cannot be among the K chosen (their
    # maximum is below M_K): leave them out before the sort (most of them, with real-valued scores).
    live = (kept >= thr.index_select(0, rows)).nonzero().squeeze(1)
    values = ws["kept"][:n_kept].view(-1, block)
    return _finish(rows[live], blocks[live], live, values, c, k, block)


def _finish(rows: torch.Tensor, blocks: torch.Tensor, where: torch.Tensor, values: torch.Tensor, c: int, k: int,
            block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over the live blocks: rows, blocks int64 [m] (each row's blocks in ascending order), where int64
    [m]: their rows in ``values`` [M, B] -> (values [C, k], items [C, k]).

    Each row's live blocks hold every item scoring at least M_K, so its top K lies among their scores (at
    least K of them: >= K live blocks per row). They are laid out in block order, -inf padding after them,
    and the plain top-K with the tie rule picks from them; padding comes after every real candidate, so it
    is never picked."""
    order = torch.argsort(rows, stable=True)  # by row, blocks ascending within a row
    sorted_rows = rows[order]
    counts = torch.bincount(sorted_rows, minlength=c)
    pos = torch.arange(len(rows), device=rows.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    width = int(counts.max())
    cand = torch.full((c, width, block), float("-inf"), dtype=values.dtype, device=values.device)
    cand[sorted_rows, pos] = values.index_select(0, where.index_select(0, order))
    first = torch.zeros((c, width), dtype=torch.int64, device=rows.device)
    first[sorted_rows, pos] = blocks.index_select(0, order) * block
    top_values, j = topk_ties_by_index(cand.view(c, width * block), k)
    return top_values, first.gather(1, j // block) + j % block
