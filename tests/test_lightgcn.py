"""LightGCN: Â and the propagation against dense references computed by hand, one lookup per table per step,
rows outside the batch trained through the graph, the inference cache, saving and loading, distillation."""

import json
import math

import numpy as np
import pytest
import torch

from rankdistill.cli import main, parse_args
from rankdistill.commands.options import model_config
from rankdistill.config import DistillConfig, ModelConfig
from rankdistill.data.csr import Csr
from rankdistill.data.interactions import Interactions
from rankdistill.data.split import make_split
from rankdistill.errors import RankdistillError
from rankdistill.modeldir import load, save_model
from rankdistill.models.factory import build_model
from rankdistill.models.lightgcn import LightGCN, normalized_adjacency, propagate
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective
from rankdistill.train.sharded_engine import refuse_unshardable
from helpers import count_table_lookups, string_id_csv, tiny_batch, tiny_student

# 3 users, 3 items: u0-{i0, i1}, u1-{i0}, u2 has no interaction; i2 has none. The pair u0-i1 is given twice.
PAIRS = ([0, 0, 1, 0], [0, 1, 0, 1])
U, I = 3, 3


def _graph() -> Csr:
    return Csr.from_pairs(np.array(PAIRS[0]), np.array(PAIRS[1]), U, I)


def _dense_adjacency() -> torch.Tensor:
    """Â by hand, nodes [u0, u1, u2, i0, i1, i2]: Â_ui = 1 / sqrt(|N(u)| |N(i)|).
    Degrees: u0 2, u1 1, u2 0, i0 2, i1 1, i2 0."""
    a = torch.zeros(6, 6)
    a[0, 3] = 1 / math.sqrt(2 * 2)  # u0-i0
    a[0, 4] = 1 / math.sqrt(2 * 1)  # u0-i1 (given twice, counted once)
    a[1, 3] = 1 / math.sqrt(1 * 2)  # u1-i0
    return a + a.T


def _model(layers=2, dim=4, optimizer="sgd", lr=0.5) -> LightGCN:
    torch.manual_seed(0)
    return LightGCN(U, I, dim, layers, optimizer=optimizer, lr=lr, graph=_graph())


def _tiny_lightgcn(split, layers=2, dim=8, seed=1) -> LightGCN:
    return build_model(ModelConfig(kind="lightgcn", embedding_dim=dim, layers=layers), split.n_users, split.n_items,
                       seed=seed, graph=split.train)


# -- the graph and the propagation --------------------------------------------------------------------------
def test_normalized_adjacency_equals_the_formula():
    assert torch.allclose(normalized_adjacency(_graph()).to_dense(), _dense_adjacency())


def test_final_vectors_equal_the_dense_mean_of_layers():
    m = _model(layers=2)
    e0 = torch.cat([m.user_table.weight, m.item_table.weight]).clone()
    a = _dense_adjacency()
    ref = (e0 + a @ e0 + a @ a @ e0) / 3  # layer weights 1/(K+1), K = 2
    users, items = m.eval().final_vectors()
    assert torch.allclose(users, ref[:U], atol=1e-6) and torch.allclose(items, ref[U:], atol=1e-6)
    assert torch.allclose(users[2], e0[2] / 3)  # no interaction: only layer 0 is non-zero


def test_propagation_gradient_equals_the_dense_one():
    a = _dense_adjacency()
    e0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    (propagate(normalized_adjacency(_graph()), e0, 3) * w).sum().backward()
    ref = sum(torch.linalg.matrix_power(a, k) for k in range(4)).T @ w / 4  # d/de0 of <mean_k Â^k e0, w>
    assert torch.allclose(e0.grad, ref, atol=1e-6)


def test_training_forward_equals_the_cached_scores(tiny_split):
    m = _tiny_lightgcn(tiny_split)
    users, pos, negs = tiny_batch(tiny_split)
    train_scores = m.train()(users, pos[:, None], negs).scores.detach()
    assert torch.allclose(train_scores, m.eval()(users, pos[:, None], negs).scores, atol=1e-5)


def test_score_all_equals_pairwise_scores(tiny_split):
    m = _tiny_lightgcn(tiny_split).eval()
    users = torch.tensor([0, 7, 299])
    ref = m.score(users, torch.arange(tiny_split.n_items).expand(3, -1))
    assert torch.allclose(m.score_all(users), ref, atol=1e-5)


def test_shared_candidates_equal_per_row_scores(tiny_split):
    m = _tiny_lightgcn(tiny_split).train()
    users, own, shared = torch.tensor([1, 2, 3]), torch.tensor([[4], [5], [6]]), torch.tensor([7, 8])
    fwd = m(users, own, shared)
    ref = m(users, torch.cat([own, shared.expand(3, -1)], 1)).scores
    assert torch.allclose(fwd.scores, ref, atol=1e-6)
    assert fwd.user_emb.shape == (3, 8) and fwd.shared_emb.shape == (2, 8) and fwd.item_hidden.shape == (3, 1, 8)


# -- training ------------------------------------------------------------------------------------------------
def test_a_step_trains_rows_outside_the_batch_through_the_graph():
    m = _model(layers=2).train()
    calls = count_table_lookups(m)
    users_before, items_before = m.user_table.weight.clone(), m.item_table.weight.clone()
    m(torch.tensor([1]), torch.tensor([[0]])).scores.sum().backward()  # the batch: u1, i0
    assert calls == {"user": 1, "item": 1}  # every row, one lookup per table: one fused update per row
    users_changed = (m.user_table.weight != users_before).any(1).tolist()
    items_changed = (m.item_table.weight != items_before).any(1).tolist()
    assert users_changed == [True, True, False]  # u0 is not in the batch but shares i0; u2 has no edge
    assert items_changed == [True, True, False]  # i1 is not in the batch: i0 -> u0 -> i1, two hops from i0


def test_a_loaded_model_without_its_graph_refuses_to_train(tmp_path):
    m = LightGCN(U, I, 4, 2)
    with pytest.raises(RankdistillError, match="set_graph"):
        m.train()(torch.tensor([0]), torch.tensor([[0]]))
    with pytest.raises(RankdistillError, match="set_graph"):
        m.eval().score_all(torch.tensor([0]))  # never propagated and no graph


# -- the inference cache --------------------------------------------------------------------------------------
def test_eval_propagates_once_until_the_next_training_step():
    m = _model().eval()
    first = m.score_all(torch.arange(U))
    assert torch.equal(m.score_all(torch.arange(U)), first) and m.propagations == 1
    m.item_matrix(), m.user_vectors(torch.tensor([0]))
    assert m.propagations == 1
    m.train()(torch.tensor([1]), torch.tensor([[0]])).scores.sum().backward()  # a step: the rows change
    after = m.eval().score_all(torch.arange(U))
    assert m.propagations == 2 and not torch.equal(after, first)


@pytest.mark.parametrize("kd", ["listkl+soft_bce", "hint"])  # scores from the teacher's vectors; its forward
def test_a_frozen_teacher_does_not_propagate_at_every_distillation_step(kd, tiny_split):
    teacher = _tiny_lightgcn(tiny_split)
    knowledge = TeacherKnowledge.compute(teacher, tiny_split, k=20)
    objective = DistillationObjective(teacher, knowledge, DistillConfig(kd=kd, topk=20, topk_samples=4), l2=0.01)
    student = tiny_student(tiny_split)  # MF, dim 4
    for seed in (0, 1):
        loss, parts = objective(student, *tiny_batch(tiny_split, seed=seed))
        loss.backward()
        assert torch.isfinite(loss) and all(name in parts for name in kd.split("+"))
    assert teacher.propagations == 1


# -- saving and loading -----------------------------------------------------------------------------------
def test_save_and_load_give_the_same_scores_without_the_graph(tiny_frame, tmp_path):
    data = Interactions.from_frame(tiny_frame, "tiny")
    split = make_split(data)
    config = ModelConfig(kind="lightgcn", embedding_dim=8, layers=2)
    m = build_model(config, split.n_users, split.n_items, graph=split.train).train()
    users, pos, negs = tiny_batch(split)
    m(users, pos[:, None], negs).scores.sum().backward()  # a step: the rows are no longer the initial ones
    users = torch.arange(10)
    expected = m.eval().score_all(users)
    saved = load(save_model(tmp_path / "m", m.train(), config, data, split))  # saved while in training mode
    assert saved.model.adjacency is None and torch.allclose(saved.model.score_all(users), expected)
    assert saved.model.propagations == 0
    with pytest.raises(RankdistillError, match="set_graph"):
        saved.model.train()(torch.tensor([0]), torch.tensor([[0]]))


def test_train_command_writes_a_loadable_lightgcn(tiny_frame, tmp_path):
    string_id_csv(tiny_frame, tmp_path / "log.csv")
    args = ["train", "--data", str(tmp_path / "log.csv"), "--out", str(tmp_path / "gcn"), "--model", "lightgcn",
            "--layers", "2", "--dim", "8", "--epochs", "2", "--negatives", "32", "--quiet"]
    assert main(args) == 0
    config = json.loads((tmp_path / "gcn" / "config.json").read_text())
    assert config["model"]["kind"] == "lightgcn" and config["model"]["layers"] == 2
    assert config["model"]["score"] == "dot"
    saved = load(tmp_path / "gcn")
    _, split = saved.load_split()
    stored = saved.model.score_all(torch.arange(20))
    saved.model.set_graph(split.train)  # propagating the saved rows again gives the saved vectors
    assert torch.allclose(saved.model.score_all(torch.arange(20)), stored, atol=1e-5)


# -- configuration --------------------------------------------------------------------------------------------
def test_config_refuses_cosine_scores_and_too_few_layers():
    with pytest.raises(RankdistillError, match="score='dot'"):
        ModelConfig(kind="lightgcn", score="cosine")
    with pytest.raises(RankdistillError, match="layers must be an integer >= 1, got 0"):
        ModelConfig(kind="lightgcn", layers=0)
    assert ModelConfig(kind="lightgcn").layers == 3


def test_command_line_forces_dot_scores_for_lightgcn():
    args = parse_args(["train", "--out", "x", "--model", "lightgcn", "--layers", "2"])
    config = model_config(args)  # the train command's default --score is cosine
    assert (config.kind, config.score, config.layers) == ("lightgcn", "dot", 2)


def test_graph_of_other_sizes_is_refused():
    with pytest.raises(RankdistillError, match="3 users and 3 items but the graph has 3 and 5"):
        LightGCN(U, I, 4).set_graph(Csr.from_pairs(np.array([0]), np.array([4]), 3, 5))


def test_sharded_training_is_refused(tiny_split):
    config = ModelConfig(kind="lightgcn", embedding_dim=8)
    with pytest.raises(RankdistillError, match="one process"):
        refuse_unshardable(config, SupervisedObjective())
    with pytest.raises(RankdistillError, match="one process"):
        build_model(config, 5, 5, fused=False)


def test_extra_candidates_of_the_first_rows_equal_their_own_scores():
    m = _model()
    users, own, shared = torch.tensor([0, 1, 2]), torch.tensor([[0], [1], [2]]), torch.tensor([1])
    extra = torch.tensor([[0, 1, 2, 2], [2, 2, 1, 0]])
    fwd = m(users, own, shared, extra=extra)
    assert torch.allclose(fwd.extra_scores, m.score(users[:2], extra), atol=1e-6)
    assert torch.allclose(fwd.scores, m(users, own, shared).scores, atol=1e-6)
