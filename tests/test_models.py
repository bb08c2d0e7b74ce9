"""Rankers: torchrec lookups, the fused update, and fast scoring paths against slow references."""

import pytest
import torch

from rankdistill.config import ModelConfig
from rankdistill.models.embedding import EmbeddingTable
from rankdistill.models.factory import build_model
from rankdistill.models.mlp import MLPRanker
from rankdistill.models.two_tower import TwoTower


def test_lookup_returns_table_rows_in_any_shape():
    t = EmbeddingTable("item", 20, 4)
    ids = torch.tensor([[3, 1], [3, 19]])
    assert torch.equal(t(ids), t.weight[ids])


def test_fused_update_touches_only_looked_up_rows():
    t = EmbeddingTable("item", 10, 4, optimizer="sgd", lr=0.5)
    before = t.weight.clone()
    t(torch.tensor([2, 5])).sum().backward()
    changed = (t.weight != before).any(1)
    assert changed.tolist() == [i in (2, 5) for i in range(10)]
    # SGD on sum(): every coordinate of the looked-up rows moves by -lr * 1
    assert torch.allclose(t.weight[2], before[2] - 0.5)


def test_same_seed_same_initial_weights():
    a = build_model(ModelConfig(embedding_dim=8), 30, 20, seed=4)
    b = build_model(ModelConfig(embedding_dim=8), 30, 20, seed=4)
    assert torch.equal(a.item_table.weight, b.item_table.weight)


def test_two_tower_shared_candidates_equal_per_row_scores():
    m = TwoTower(30, 20, 8, tower_layers=(6,))
    users, own, shared = torch.tensor([1, 2, 3]), torch.tensor([[4], [5], [6]]), torch.tensor([7, 8])
    fwd = m(users, own, shared)
    ref = m.score(users, torch.cat([own, shared.expand(3, -1)], 1))
    assert torch.allclose(fwd.scores, ref, atol=1e-6)
    assert fwd.shared_emb.shape == (2, 8)


def test_two_tower_score_all_equals_pairwise_scores():
    m = TwoTower(30, 20, 8)
    users = torch.tensor([0, 7, 29])
    ref = m.score(users, torch.arange(20).expand(3, -1))
    assert torch.allclose(m.score_all(users), ref, atol=1e-5)


def test_mlp_score_all_in_blocks_equals_pairwise_scores():
    m = MLPRanker(30, 20, 8, mlp_layers=(16, 8), block_elements=3 * 16 * 7)  # blocks of 7 items
    users = torch.tensor([0, 7, 29])
    ref = m.score(users, torch.arange(20).expand(3, -1))
    assert torch.allclose(m.score_all(users), ref, atol=1e-5)


def test_mlp_first_layer_split_equals_concatenation():
    m = MLPRanker(5, 6, 4, mlp_layers=(8,))
    u, i = m.user_table(torch.tensor([1])), m.item_table(torch.tensor([[2]]))
    ref = m.rest(m.first(torch.cat([u[:, None, :], i], -1))).squeeze(-1)
    assert torch.allclose(m.score(torch.tensor([1]), torch.tensor([[2]])), ref, atol=1e-6)


def test_parameter_counts():
    assert build_model(ModelConfig(embedding_dim=8), 30, 20).num_parameters() == 50 * 8
    mlp = build_model(ModelConfig(kind="mlp", embedding_dim=4, mlp_layers=(8,)), 30, 20)
    assert mlp.num_parameters() == 50 * 4 + (8 * 8 + 8) + (8 + 1)


def test_many_ids_are_looked_up_once_each_with_the_same_update():
    """Above DEDUP_MIN ids the table looks up each distinct id once: same rows out, same fused update."""
    from rankdistill.models import embedding

    ids = torch.randint(50, (embedding.DEDUP_MIN + 1,), generator=torch.Generator().manual_seed(0))
    tables = [EmbeddingTable("t", 50, 8, lr=0.1) for _ in range(2)]
    with torch.no_grad():
        tables[1].weight.copy_(tables[0].weight)
    for t in tables:
        t.sparse_update = False  # fbgemm's kernel path, where the deduplication is a choice
    grad = torch.randn(len(ids), 8, generator=torch.Generator().manual_seed(1))
    out_dedup = tables[0](ids)
    old, embedding.DEDUP_MIN = embedding.DEDUP_MIN, 10**9  # the plain path for the reference
    try:
        out_plain = tables[1](ids)
    finally:
        embedding.DEDUP_MIN = old
    torch.testing.assert_close(out_dedup, out_plain)
    (out_dedup * grad).sum().backward()
    (out_plain * grad).sum().backward()
    torch.testing.assert_close(tables[0].weight, tables[1].weight)


def test_cpu_rowwise_adagrad_update_equals_fbgemm_kernel():
    """The CPU table's own row-wise Adagrad (on by default) against fbgemm's fused backward: 20 steps with
    repeated ids, short and long lookups (both distinct-id methods), a learning-rate change half-way; the rows
    out, the weights and the accumulators agree to float rounding."""
    from rankdistill.models import embedding

    g = torch.Generator().manual_seed(0)
    ours, kernel = EmbeddingTable("t", 50, 8, lr=0.1), EmbeddingTable("t", 50, 8, lr=0.1)
    assert ours.sparse_update and not EmbeddingTable("t", 5, 4, optimizer="sgd").sparse_update
    assert not EmbeddingTable("t", 5, 4, fused=False, device="meta").sparse_update  # DMP's blueprint
    kernel.sparse_update = False
    with torch.no_grad():
        kernel.weight.copy_(ours.weight)
    for step in range(20):
        if step == 10:
            ours.set_lr(0.03), kernel.set_lr(0.03)
        ids = torch.randint(50, (3, 2 + 10 * (step % 2)), generator=g)  # 6 ids: sorted; 36: marked in a mask
        grad = torch.randn(*ids.shape, 8, generator=g)
        a, b = ours(ids), kernel(ids)
        torch.testing.assert_close(a, b)
        (a * grad).sum().backward()
        (b * grad).sum().backward()
    assert not torch.equal(ours.weight, ours.weight.new_zeros(50, 8))
    torch.testing.assert_close(ours.weight, kernel.weight, rtol=0, atol=1e-6)
    state = [t.optimizer.state_dict()["state"]["t.weight"]["t.weight.momentum_1"] for t in (ours, kernel)]
    assert state[0].max() > 1
    torch.testing.assert_close(state[0], state[1], rtol=1e-6, atol=0)
    assert embedding.EPS == kernel.ebc._emb_modules[0]._emb_module.optimizer_args.eps


def test_rowwise_adagrad_by_hand():
    """w = (1, 2), g = (0.3, 0.4), s = 0.5: s' = 0.5 + (0.09 + 0.16) / 2 = 0.625, w' = w - 0.1 g / √0.625;
    the row not named is left alone."""
    from rankdistill.models.embedding import rowwise_adagrad_

    w, s = torch.tensor([[1.0, 2.0], [5.0, 5.0]]), torch.tensor([0.5, 7.0])
    rowwise_adagrad_(w, s, torch.tensor([0]), torch.tensor([[0.3, 0.4]]), lr=0.1, eps=0.0)
    torch.testing.assert_close(s, torch.tensor([0.625, 7.0]))
    step = 0.1 / 0.625 ** 0.5
    torch.testing.assert_close(w, torch.tensor([[1 - 0.3 * step, 2 - 0.4 * step], [5.0, 5.0]]))


@pytest.mark.parametrize("n_ids", [3, 400])
def test_distinct_ids_equal_torch_unique(n_ids):
    from rankdistill.models.embedding import distinct_ids

    ids = torch.randint(100, (n_ids,), generator=torch.Generator().manual_seed(n_ids))
    for got, want in zip(distinct_ids(ids, 100), torch.unique(ids, return_inverse=True)):
        assert torch.equal(got, want)


def test_distinct_ids_by_scratch_buffer():
    """The scratch method (no sort): each distinct id once, in order of first occurrence, whatever the buffer
    held before; the same ids as torch.unique and distinct[inverse] == ids."""
    from rankdistill.models.embedding import distinct_ids

    ids = torch.tensor([7, 3, 7, 9, 3, 3, 0])
    distinct, inverse = distinct_ids(ids, 1000, torch.full((1000,), -5, dtype=torch.int64))
    assert distinct.tolist() == [7, 3, 9, 0] and inverse.tolist() == [0, 1, 0, 2, 1, 1, 3]
    ids = torch.randint(100_000, (3000,), generator=torch.Generator().manual_seed(0))
    ids[1000:1500] = ids[:500]  # repeats
    scratch = torch.randint(-9, 9, (100_000,), generator=torch.Generator().manual_seed(1))
    distinct, inverse = distinct_ids(ids, 100_000, scratch)
    assert torch.equal(distinct[inverse], ids)
    assert torch.equal(distinct.sort().values, torch.unique(ids))
    first = [i for i, x in enumerate(ids.tolist()) if x not in set(ids[:i].tolist())]
    assert torch.equal(distinct, ids[first])  # first-occurrence order: the scratch method ran


def test_table_takes_the_scratch_method_for_long_lookups_of_large_tables():
    """A long lookup of a large CPU table goes through the scratch buffer (allocated once, then reused); its rows
    and its update equal the sorting method's."""
    from rankdistill.models import embedding

    g = torch.Generator().manual_seed(0)
    tables = [EmbeddingTable("t", 100_000, 4, lr=0.1) for _ in range(2)]
    with torch.no_grad():
        tables[1].weight.copy_(tables[0].weight)
    tables[1]._scratch_for = lambda flat: None  # the reference: torch.unique
    for step in range(2):  # other ids at the second step: the buffer's old content must not matter
        ids = torch.randint(9_000, (embedding.SCRATCH_MIN + 5,), generator=g) * 10
        grad = torch.randn(len(ids), 4, generator=g)
        outs = [t(ids) for t in tables]
        torch.testing.assert_close(outs[0], outs[1])
        for out in outs:
            (out * grad).sum().backward()
        if step == 0:
            scratch = tables[0]._scratch
    assert scratch is not None and tables[0]._scratch is scratch and tables[1]._scratch is None
    torch.testing.assert_close(tables[0].weight, tables[1].weight, rtol=0, atol=0)
    big, ids = EmbeddingTable("u", 100_000, 4), torch.randint(100_000, (embedding.DEDUP_MIN + 1,), generator=g)
    with torch.no_grad():  # scoring without gradients keeps the pure methods (safe from several threads) ...
        big(ids)
    assert big._scratch is None
    big(ids).sum().backward()  # ... training takes the buffer
    assert big._scratch is not None


@pytest.mark.parametrize("config", [ModelConfig(embedding_dim=8), ModelConfig(embedding_dim=8, score="cosine", temperature=0.2),
                                    ModelConfig(kind="mlp", embedding_dim=8, mlp_layers=(6,))])
def test_extra_candidates_of_the_first_rows_equal_their_own_scores(config):
    """``extra`` [R, E] is scored against the first R users only, in the same lookup, and leaves the other
    outputs as they were; 40 extra columns take the long-list (bmm) path."""
    m = build_model(config, 30, 50, seed=1)
    users, own, shared = torch.tensor([1, 2, 3, 4]), torch.tensor([[4], [5], [6], [7]]), torch.tensor([7, 8])
    extra = torch.randint(50, (2, 40), generator=torch.Generator().manual_seed(0))
    fwd, plain = m(users, own, shared, extra=extra), m(users, own, shared)
    assert torch.allclose(fwd.extra_scores, m.score(users[:2], extra), atol=1e-5)
    assert torch.allclose(fwd.scores, plain.scores) and plain.extra_scores is None
