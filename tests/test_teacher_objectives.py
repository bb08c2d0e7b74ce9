"""The strong-teacher recipe: cosine scores with a temperature, the Bilateral Softmax Loss, in-batch negatives
with the logQ correction. Values computed by hand or by a slow reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from rankdistill.config import ModelConfig, TrainConfig
from rankdistill.errors import RankdistillError
from rankdistill.losses.supervised import bilateral_softmax, sampled_softmax
from rankdistill.models.factory import build_model
from rankdistill.train.objectives import SupervisedObjective, supervised_options


def test_cosine_scores_are_cosine_over_temperature():
    m = build_model(ModelConfig(embedding_dim=8, score="cosine", temperature=0.2), 5, 7, seed=0)
    users, items = torch.tensor([0, 3]), torch.tensor([[1, 2, 6], [0, 4, 5]])
    u, i = m.user_table(users), m.item_table(items)
    expected = F.cosine_similarity(u[:, None, :], i, dim=-1) / 0.2
    torch.testing.assert_close(m.score(users, items), expected)
    torch.testing.assert_close(m.score_all(users).gather(1, items), expected)  # the served inner product agrees
    assert m.score_all(users).abs().max() <= 1 / 0.2 + 1e-5


def test_cosine_config_is_validated():
    with pytest.raises(RankdistillError, match="score must be"):
        ModelConfig(score="euclid")
    with pytest.raises(RankdistillError, match="two_tower"):
        ModelConfig(kind="mlp", score="cosine")
    with pytest.raises(RankdistillError, match="temperature must be > 0"):
        ModelConfig(score="cosine", temperature=0.0)


def test_bsl_one_row_by_hand():
    s = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # -s_pos + tau2 * log(mean(exp(negatives)))
    expected = -2.0 + 1.5 * math.log((math.e ** 1 + 1 + math.e ** -1) / 3)
    assert float(bilateral_softmax(s, tau2=1.5)) == pytest.approx(expected, rel=1e-6)


def test_bsl_with_tau2_one_is_softmax_without_the_positive_in_the_denominator():
    s = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    sl_without_pos = (torch.logsumexp(s[:, 1:], 1) - s[:, 0]).mean() - math.log(8)
    torch.testing.assert_close(bilateral_softmax(s, 1.0), sl_without_pos)
    assert float(bilateral_softmax(s, 1.0)) != pytest.approx(float(sampled_softmax(s)))


def test_bsl_pools_the_positives_of_the_same_user():
    s = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    users = torch.tensor([7, 7, 8])
    pooled = math.log((math.e + math.e ** 3) / 2)  # rows 0 and 1 share user 7
    expected = (-pooled - pooled - 2.0) / 3  # the negative side is log mean exp(0) = 0
    assert float(bilateral_softmax(s, 1.0, users)) == pytest.approx(expected, rel=1e-6)


def _reference_in_batch(fwd_u, fwd_pos, fwd_negs, pos, negs, log_p):
    """Row by row: [positive, uniform negatives, other positives], each score minus log(S/N + B p_j)."""
    b, s, n = len(pos), len(negs), len(log_p)
    rows = []
    for r in range(b):
        cand = [int(pos[r])] + [int(j) for j in negs] + [int(j) for j in pos]
        vecs = torch.cat([fwd_pos[r : r + 1], fwd_negs, fwd_pos])
        scores = vecs @ fwd_u[r]
        for c in range(1, len(cand)):
            if cand[c] == int(pos[r]):
                scores[c] = -1e30
        q = torch.tensor([math.log(s / n + b * math.exp(float(log_p[j]))) for j in cand])
        rows.append(torch.logsumexp(scores - q, 0) - (scores[0] - q[0]))
    return torch.stack(rows).mean()


def test_in_batch_negatives_with_log_q_match_a_row_by_row_reference(tiny_split):
    train = TrainConfig(in_batch_negatives=True)
    opts = supervised_options(train, tiny_split)
    objective = SupervisedObjective("softmax", 0.0, **opts)
    model = build_model(ModelConfig(embedding_dim=8, score="cosine", temperature=0.5), tiny_split.n_users,
                        tiny_split.n_items, seed=0)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(tiny_split.train.nnz, (6,), generator=g)
    users, pos = tiny_split.train.rows()[idx], tiny_split.train.indices[idx].clone()
    pos[1] = pos[0]  # a repeated positive is masked in both rows
    negs = torch.cat([torch.randint(tiny_split.n_items, (5,), generator=g), pos[2:3]])  # an accidental hit
    with torch.no_grad():
        loss, _ = objective(model, users, pos, negs)
        expected = _reference_in_batch(model.user_vectors(users), model.item_vectors(pos), model.item_vectors(negs),
                                       pos, negs, opts["in_batch_log_q"])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_log_q_is_the_log_share_of_training_interactions(tiny_split):
    log_p = supervised_options(TrainConfig(in_batch_negatives=True), tiny_split)["in_batch_log_q"]
    counts = torch.bincount(tiny_split.train.indices, minlength=tiny_split.n_items).float()
    seen = counts > 0
    torch.testing.assert_close(log_p.exp()[seen], counts[seen] / counts.sum())


def test_without_in_batch_the_options_carry_only_bsl_tau2(tiny_split):
    assert supervised_options(TrainConfig(loss="bsl", bsl_tau2=1.2, in_batch_negatives=False)) == {"bsl_tau2": 1.2}
    with pytest.raises(RankdistillError, match="bsl_tau2 must be > 0"):
        TrainConfig(bsl_tau2=0)


def test_a_cosine_teacher_learns_the_tiny_data(tiny_split):
    """A few epochs of cosine + softmax with in-batch negatives beat popularity on validation."""
    from rankdistill.evaluation.evaluator import evaluate
    from rankdistill.models.popularity import Popularity
    from rankdistill.train.trainer import Trainer

    train = TrainConfig(epochs=8, batch_size=64, negatives=32, in_batch_negatives=True, loss="bsl", bsl_tau2=1.1)
    model = build_model(ModelConfig(embedding_dim=16, score="cosine", temperature=0.2, lr=0.2), tiny_split.n_users,
                        tiny_split.n_items, seed=0)
    fit = Trainer(model, tiny_split, SupervisedObjective.from_config(train, tiny_split), train).fit()
    pop = evaluate(Popularity(tiny_split.train), tiny_split, "valid", (20,), ("ndcg",))["ndcg@20"]
    assert fit.best_valid["ndcg@20"] > pop


@pytest.mark.parametrize("tau2, users", [(1.0, None), (1.3, torch.tensor([1, 1, 2, 3, 3]))])
def test_block_wise_losses_equal_the_losses_of_the_joined_matrix(tau2, users):
    from rankdistill.losses.supervised import bilateral_softmax_blocks, softmax_blocks

    g = torch.Generator().manual_seed(1)
    pos, a, b = torch.randn(5, generator=g), torch.randn(5, 7, generator=g), torch.randn(5, 3, generator=g)
    joined = torch.cat([pos[:, None], a, b], dim=1)
    torch.testing.assert_close(softmax_blocks(pos, [a, b]), sampled_softmax(joined))
    torch.testing.assert_close(bilateral_softmax_blocks(pos, [a, b], tau2, users), bilateral_softmax(joined, tau2, users))


@pytest.mark.parametrize("shifted, excluded", [(False, False), (True, False), (True, True)])
def test_block_logsumexp_equals_autograd_logsumexp(shifted, excluded):
    """The closed-form block log-sum-exp against torch.logsumexp of the shifted, masked copy: same values and
    same gradient in the scores, an all-excluded row (very negative, finite, no gradient) included."""
    from rankdistill.losses.supervised import block_logsumexp

    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(4, 6, generator=g) * 4
    shift = torch.randn(6, generator=g) if shifted else None
    out = torch.rand(4, 6, generator=g) > 0.6 if excluded else None
    if excluded:
        out[1] = True
    fast, slow = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
    x = slow - shift if shifted else slow
    if excluded:
        x = x.masked_fill(out, torch.finfo(x.dtype).min / 4)
    a, b = block_logsumexp(fast, shift, out), torch.logsumexp(x, dim=1)
    torch.testing.assert_close(a, b)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    torch.testing.assert_close(fast.grad, slow.grad)
    if excluded:
        assert torch.isfinite(a).all() and a[1] < -1e30 and (fast.grad[out] == 0).all()


def test_pool_by_user_equals_the_pairwise_definition():
    from rankdistill.losses.supervised import pool_by_user

    g = torch.Generator().manual_seed(2)
    pos = torch.randn(40, generator=g, requires_grad=True)
    users = torch.randint(12, (40,), generator=g)
    same = users[:, None] == users[None, :]
    slow = torch.logsumexp(pos[None, :].masked_fill(~same, float("-inf")), dim=1) - same.sum(1).log()
    fast = pool_by_user(pos, users)
    torch.testing.assert_close(fast, slow)
    (g_fast,) = torch.autograd.grad(fast.sum(), pos)
    (g_slow,) = torch.autograd.grad(slow.sum(), pos)
    torch.testing.assert_close(g_fast, g_slow)
