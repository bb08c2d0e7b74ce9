"""Teacher–student fidelity: overlap@K and rank correlation of the teacher's top-K under the student, by hand,
against scipy, and end to end through the report."""

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from helpers import MatrixRanker
from rankdistill.data.csr import Csr
from rankdistill.data.split import Split
from rankdistill.evaluation.fidelity import fidelity, kendall_tau, overlap_at_k, spearman_rho, teacher_ranking


def test_overlap_hand_computed():
    teacher = torch.tensor([[1, 2, 3, 4]])
    student = torch.tensor([[4, 9, 1, 8]])
    assert overlap_at_k(teacher, student, 2).tolist() == [0.0]  # {1, 2} vs {4, 9}
    assert overlap_at_k(teacher, student, 4).tolist() == [0.5]  # {1, 2, 3, 4} ∩ {4, 9, 1, 8} = {1, 4}


def test_overlap_of_identical_lists_is_one_and_of_disjoint_lists_zero():
    a = torch.tensor([[5, 6, 7], [1, 2, 3]])
    assert overlap_at_k(a, a.flip(1), 3).tolist() == [1.0, 1.0]
    assert overlap_at_k(a, a + 100, 3).tolist() == [0.0, 0.0]


def test_overlap_counts_only_valid_positions():
    teacher, student = torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 1]])
    tv = torch.tensor([[True, True, False]])  # the teacher had 2 candidates
    sv = torch.tensor([[True, False, False]])
    assert overlap_at_k(teacher, student, 3, tv, sv).tolist() == [0.5]  # {1, 2} ∩ {2}


def test_kendall_tau_hand_computed():
    # teacher order a, b, c; student scores put b first, then a, then c
    items = torch.tensor([[10, 11, 12]])
    scores = torch.tensor([[2.0, 3.0, 1.0]])
    # pairs (a,b) discordant, (a,c) concordant, (b,c) concordant: tau = (2 - 1) / 3
    assert kendall_tau(items, scores, 3).tolist() == pytest.approx([1 / 3])
    # Spearman: student ranks 1, 0, 2 vs teacher 0, 1, 2 -> d² = 1 + 1 + 0; rho = 1 - 6·2 / (3·8)
    assert spearman_rho(items, scores, 3).tolist() == pytest.approx([1 - 12 / 24])


def test_identical_order_gives_one_and_reversed_order_minus_one():
    items = torch.tensor([[3, 1, 2, 0]])
    assert kendall_tau(items, torch.tensor([[4.0, 3.0, 2.0, 1.0]]), 4).tolist() == [1.0]
    assert kendall_tau(items, torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 4).tolist() == [-1.0]


def test_student_ties_are_ordered_by_item_index():
    # equal student scores: the student's order is by item index, 1 before 3, so (3, 1) is discordant
    items = torch.tensor([[3, 1]])
    assert kendall_tau(items, torch.tensor([[0.5, 0.5]]), 2).tolist() == [-1.0]


def test_fewer_than_two_items_give_nan():
    items, scores = torch.tensor([[4, 5]]), torch.tensor([[1.0, 0.0]])
    assert torch.isnan(kendall_tau(items, scores, 2, torch.tensor([[True, False]]))).all()
    assert torch.isnan(spearman_rho(items, scores, 1)).all()


def test_rank_correlations_agree_with_scipy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 15))
    items = torch.arange(15).expand(20, -1)
    ours_tau = kendall_tau(items, torch.from_numpy(scores), 15)
    ours_rho = spearman_rho(items, torch.from_numpy(scores), 15)
    teacher_rank = -np.arange(15)  # the teacher's order: position 0 first
    for u in range(20):
        assert ours_tau[u].item() == pytest.approx(kendalltau(teacher_rank, scores[u]).statistic)
        assert ours_rho[u].item() == pytest.approx(spearmanr(teacher_rank, scores[u]).statistic)


def random_split(n_users=40, n_items=60, seed=0) -> Split:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_users), 3)
    cols = np.concatenate([rng.choice(n_items, 3, replace=False) for _ in range(n_users)])
    part = np.tile([0, 1, 2], n_users)
    make = lambda m: Csr.from_pairs(rows[m], cols[m], n_users, n_items)  # noqa: E731
    return Split("manual", n_users, n_items, make(part == 0), make(part == 1), make(part == 2))


def test_a_model_against_itself_has_full_fidelity():
    g = torch.Generator().manual_seed(0)
    model = MatrixRanker(torch.randn(40, 4, generator=g), torch.randn(60, 4, generator=g))
    out = fidelity(model, model, random_split())
    assert out == {"overlap@10": 1.0, "kendall_tau@10": 1.0, "overlap@20": 1.0, "kendall_tau@20": 1.0}


def test_fidelity_matches_a_per_user_reference():
    g = torch.Generator().manual_seed(1)
    teacher = MatrixRanker(torch.randn(40, 4, generator=g), torch.randn(60, 4, generator=g))
    student = MatrixRanker(torch.randn(40, 2, generator=g), torch.randn(60, 2, generator=g))
    split = random_split(seed=1)
    reference = teacher_ranking(teacher, split, "test", 20)
    out = fidelity(teacher, student, split, "test", (5, 20), reference=reference)
    t_scores, s_scores = teacher.U @ teacher.I.T, student.U @ student.I.T
    overlaps, taus = [], []
    for u in range(40):
        seen = set(split.train.indices[split.train.indptr[u] : split.train.indptr[u + 1]].tolist())
        seen |= set(split.valid.indices[split.valid.indptr[u] : split.valid.indptr[u + 1]].tolist())
        cand = [i for i in range(60) if i not in seen]
        t_top = sorted(cand, key=lambda i: (-t_scores[u, i].item(), i))[:5]
        s_top = sorted(cand, key=lambda i: (-s_scores[u, i].item(), i))[:5]
        overlaps.append(len(set(t_top) & set(s_top)) / 5)
        t20 = sorted(cand, key=lambda i: (-t_scores[u, i].item(), i))[:20]
        taus.append(kendalltau(-np.arange(20), s_scores[u, t20].numpy()).statistic)
    assert out["overlap@5"] == pytest.approx(np.mean(overlaps))
    assert out["kendall_tau@20"] == pytest.approx(np.mean(taus), abs=1e-6)
    assert list(out) == ["overlap@5", "kendall_tau@5", "overlap@20", "kendall_tau@20"]


def test_distilled_model_entry_in_report_has_fidelity(tiny_split, tiny_run_config):
    from rankdistill.models.factory import build_model
    from rankdistill.pipeline import RunResult, TrainedModel, add_fidelity
    from rankdistill.report import build_report, markdown

    cfg = tiny_run_config
    n_users, n_items = tiny_split.n_users, tiny_split.n_items
    teacher = build_model(cfg.teacher, n_users, n_items, seed=0)
    result = RunResult(data=_FakeData(n_users, n_items), split=tiny_split)
    zero = {f"{m}@{k}": 0.0 for k in cfg.ks for m in ("ndcg", "recall", "mrr")}
    result.models["teacher"] = TrainedModel(teacher, None, zero)
    result.models["student"] = TrainedModel(build_model(cfg.student, n_users, n_items, seed=1), None, zero)
    result.models["distilled"] = TrainedModel(build_model(cfg.student, n_users, n_items, seed=2), None, zero, "listkl")
    add_fidelity(result, teacher, cfg.ks)
    report = build_report(result, cfg)
    fid = report["models"]["distilled"]["fidelity"]
    assert set(fid) == {"overlap@10", "overlap@20", "kendall_tau@10", "kendall_tau@20"}
    assert all(-1.0 <= v <= 1.0 for v in fid.values())
    assert "fidelity" not in report["models"]["teacher"]
    assert "Fidelity of distilled to the teacher" in markdown(report)


class _FakeData:
    def __init__(self, n_users, n_items):
        self.name, self.n_users, self.n_items, self.source = "fake", n_users, n_items, {}

    def __len__(self):
        return 0
