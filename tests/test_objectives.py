"""The distillation objective: candidate list, frozen teacher, cached-only mode, per-epoch state, registry."""

import math

import pytest
import torch

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.errors import RankdistillError
from rankdistill.losses.registry import KD_LOSSES, parse_kd
from rankdistill.losses.topk import discrepancy_weights, estimate_rank, position_weights, ranking_distillation
from rankdistill.models.factory import build_model
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective, gumbel_topk
from rankdistill.train.trainer import Trainer
from helpers import count_table_lookups, tiny_batch, tiny_student

CACHED_OK = [name for name, term in KD_LOSSES.items() if not term.needs_teacher]


@pytest.fixture(scope="module")
def teacher(tiny_split):
    return build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)


@pytest.fixture(scope="module")
def knowledge(teacher, tiny_split):
    return TeacherKnowledge.compute(teacher, tiny_split, k=20)


_student, _batch = tiny_student, tiny_batch


def _config(kd, **kw):
    return DistillConfig(kd=kd, topk=20, topk_samples=4, **kw)


def _capture(objective, name):
    """Make the term ``name`` record the KDBatch it sees."""
    seen, term = [], objective.terms[name]
    original = term.forward
    term.forward = lambda b: (seen.append(b), original(b))[1]
    return seen


# -- every loss runs, online and cached ------------------------------------------------------------------
@pytest.mark.parametrize("kd", list(KD_LOSSES))
def test_every_loss_trains_a_step_online(kd, teacher, knowledge, tiny_split):
    objective = DistillationObjective(teacher, knowledge, _config(kd), l2=0.01)
    loss, parts = objective(_student(tiny_split), *_batch(tiny_split))
    loss.backward()
    assert torch.isfinite(loss) and kd in parts and math.isfinite(float(parts[kd]))


@pytest.mark.parametrize("kd", [name for name in CACHED_OK if KD_LOSSES[name].teacher_columns == "none"
                                and name not in ("dcd", "rce")])  # rce's own list carries teacher scores
def test_rank_only_losses_are_the_same_from_the_knowledge_alone(kd, teacher, knowledge, tiny_split):
    # rrd and rd read the teacher's ranks, which the knowledge holds: online and cached are one loss (dcd also
    # reads the teacher's ranks beyond its top-K online: test_dcd_online_ranks_the_over_estimated_items_beyond_k)
    batch = _batch(tiny_split)
    online = DistillationObjective(teacher, knowledge, _config(kd), seed=5)(_student(tiny_split), *batch)
    cached = DistillationObjective(None, knowledge, _config(kd), seed=5)(_student(tiny_split), *batch)
    assert torch.equal(online[0], cached[0]) and torch.equal(online[1][kd], cached[1][kd])


def _term_gradient(objective, kd, student, batch) -> torch.Tensor:
    """d kd / d (the student's scores of the candidate list; rce: of its own list) for one batch."""
    seen = _capture(objective, kd)
    objective(student, *batch)
    term, b = objective.terms[kd], seen[0]
    scores = [b.rce.student] if kd == "rce" else [b.student_own, b.student_negatives]
    grads = torch.autograd.grad(type(term).forward(term, b), scores, allow_unused=True)  # cached: no negatives
    return torch.cat([torch.zeros_like(s) if g is None else g for g, s in zip(grads, scores)], dim=1)


# losses whose minimum over the student's scores is the teacher's scores (cached rce is not: the student's top
# items outside the teacher's top-K carry no teacher mass there)
AT_TEACHER = [(kd, online) for kd in ("mse", "soft_bce", "margin_mse", "listkl", "rce") for online in (True, False)
              if (kd, online) != ("rce", False)]


@pytest.mark.parametrize("kd, online", AT_TEACHER, ids=[f"{kd}-{'online' if o else 'cached'}" for kd, o in AT_TEACHER])
def test_a_student_equal_to_the_teacher_gets_no_push(kd, online, teacher, knowledge, tiny_split):
    # each student score meets the teacher's score of the same (user, item): a copy of the teacher is at the
    # loss's minimum, every gradient 0 (to rounding); another student is not (the scores of fresh tables are
    # small, and so are its gradients: it is the ratio that tells)
    batch = _batch(tiny_split)
    objective = lambda: DistillationObjective(teacher if online else None, knowledge, _config(kd), seed=5)  # noqa: E731
    copy = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)
    at_teacher = _term_gradient(objective(), kd, copy, batch).abs().max()
    elsewhere = _term_gradient(objective(), kd, _student(tiny_split), batch).abs().max()
    assert at_teacher < 1e-8 and elsewhere > 1e-5


@pytest.mark.parametrize("kd", ["hint", "de", "listkl+hint"])
def test_cached_mode_refuses_losses_that_need_the_teacher_weights(kd, knowledge):
    with pytest.raises(RankdistillError, match="needs the teacher's weights"):
        DistillationObjective(None, knowledge, _config(kd))


def test_total_is_supervised_plus_weighted_terms(teacher, knowledge, tiny_split):
    objective = DistillationObjective(teacher, knowledge, _config("listkl:0.5+mse:2"), l2=0.01)
    loss, parts = objective(_student(tiny_split), *_batch(tiny_split))
    expected = parts["softmax"] + parts["l2"] + 0.5 * parts["listkl"] + 2 * parts["mse"]
    assert torch.isclose(loss, expected)


def test_same_seed_same_loss(teacher, knowledge, tiny_split):
    losses = [DistillationObjective(teacher, knowledge, _config("rrd+listkl"), seed=3)(_student(tiny_split),
                                                                                      *_batch(tiny_split))[0]
              for _ in range(2)]
    assert losses[0] == losses[1]


def test_no_kd_terms_is_the_supervised_objective(knowledge, tiny_split):
    batch = _batch(tiny_split)
    a, _ = DistillationObjective(None, knowledge, _config("none"))(_student(tiny_split), *batch)
    b, _ = SupervisedObjective()(_student(tiny_split), *batch)
    assert torch.isclose(a, b)


# -- the frozen teacher, one lookup per table --------------------------------------------------------------
def test_teacher_is_frozen(tiny_split, knowledge):
    teacher = build_model(ModelConfig(embedding_dim=8), tiny_split.n_users, tiny_split.n_items, seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = DistillationObjective(teacher, knowledge, _config("listkl+hint"))
    objective.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student = _student(tiny_split)
    for seed in range(2):
        loss, _ = objective(student, *_batch(tiny_split, seed=seed))
        loss.backward()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_the_student_looks_up_each_table_once_per_step(teacher, knowledge, tiny_split):
    student = _student(tiny_split)
    objective = DistillationObjective(teacher, knowledge, _config("listkl+rd+dcd"))
    objective(student, *_batch(tiny_split))  # dcd's once-per-epoch ranking of the catalogue (no_grad) is done
    calls = count_table_lookups(student)
    objective(student, *_batch(tiny_split, seed=1))
    assert calls == {"user": 1, "item": 1}


# -- the candidate list ---------------------------------------------------------------------------------
def test_candidate_list_layout_online(teacher, knowledge, tiny_split):
    objective = DistillationObjective(teacher, knowledge, _config("listkl+rd", rd_k=3))
    seen = _capture(objective, "listkl")
    users, pos, negs = _batch(tiny_split)
    student = _student(tiny_split)
    objective(student, users, pos, negs)
    b = seen[0]
    assert b.topk == slice(1, 1 + 3 + 4) and b.n_own == 8 and b.negatives == slice(8, 8 + len(negs))
    assert torch.equal(b.topk_ranks[:, :3], torch.arange(3).expand(len(users), -1))  # rd's fixed ranks
    assert (b.topk_ranks.diff(dim=1) > 0).all()  # the teacher's order, no repeats
    own = torch.cat([pos[:, None], knowledge.items[users[:, None], b.topk_ranks]], dim=1)
    with torch.no_grad():
        expected = student(users, own, negs).scores
        teacher_scores = teacher(users, own, negs).scores
    assert torch.allclose(b.student, expected, atol=1e-6) and torch.allclose(b.teacher, teacher_scores)
    assert b.known[:, : b.n_own].all() and b.teacher.shape == b.student.shape
    twice = [[int(n) in set(own[r].tolist()) for n in negs] for r in range(len(users))]
    assert b.known[:, b.negatives].tolist() == [[not t for t in row] for row in twice]
    topk_teacher = knowledge.scores[users[:, None], b.topk_ranks]
    assert torch.allclose(b.teacher[:, b.topk], topk_teacher, atol=1e-5)  # the cache agrees with the teacher


@pytest.mark.parametrize("kd, list_width", [("rce", 0), ("dcd", 2 * 3), ("rd", 3), ("hint", 0), ("listkl", 4),
                                            ("rce+soft_bce", 4), ("rd+rrd", 3 + 4)])
def test_the_sampled_top_k_columns_are_looked_up_only_when_a_term_reads_them(kd, list_width, teacher, knowledge,
                                                                             tiny_split):
    """rce, dcd, rd, hint and de read other columns (their own lists, rd's fixed ranks, representations of
    the observed items): with them alone the rows carry no sampled top-K items. Each row's own list is its
    observed item; the lists of the terms are the extra candidates of the first kd_rows rows."""
    objective = DistillationObjective(teacher, knowledge, _config(kd, rd_k=3, dcd_samples=3, kd_rows=5),
                                      exclude=tiny_split.train)
    student, shapes = _student(tiny_split), []
    original = student.forward

    def spy(users, own, shared=None, extra=None):
        shapes.append((own.shape[1], None if extra is None else tuple(extra.shape)))
        return original(users, own, shared, extra)

    student.forward = spy
    loss, _ = objective(student, *_batch(tiny_split))
    rce = objective.knowledge.k + objective.rce_pool if "rce" in kd else 0
    rows = 5 if all(KD_LOSSES[name].few_rows for name in kd.split("+")) else 32
    expected = None if list_width + rce == 0 else (rows, list_width + rce)
    assert shapes[-1] == (1, expected) and torch.isfinite(loss)


@pytest.mark.parametrize("kd", ["listkl", "rce", "listkl+rce"])
@pytest.mark.parametrize("online", [True, False], ids=["online", "cached"])
def test_the_terms_see_the_first_kd_rows_rows_as_if_they_were_the_batch(kd, online, teacher, knowledge, tiny_split):
    """kd_rows = 6 on a batch of 32: each term's value is the value it has on a batch of those 6 rows alone
    (same negatives, same random stream), and only the supervised loss sees the other 26."""
    users, pos, negs = _batch(tiny_split, b=32)
    values = []
    for rows, batch in ((6, (users, pos, negs)), (64, (users[:6], pos[:6], negs))):
        objective = DistillationObjective(teacher if online else None, knowledge, _config(kd, kd_rows=rows),
                                          exclude=tiny_split.train, seed=3)
        _, parts = objective(_student(tiny_split), *batch)
        values.append({name: parts[name] for name in kd.split("+")})
    for name in kd.split("+"):
        torch.testing.assert_close(values[0][name], values[1][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kd", ["soft_bce", "rrd+rd", "soft_bce+dcd", "hint", "de", "rce+soft_bce"])
def test_a_term_that_needs_every_row_makes_every_row_carry_the_lists(kd, teacher, knowledge, tiny_split):
    """Terms not marked few_rows (soft_bce lost 5% on a validation split with 64 of 512 rows) see the whole
    batch whatever kd_rows says, and so does every term beside them."""
    users, pos, negs = _batch(tiny_split, b=32)
    objective = DistillationObjective(teacher, knowledge, _config(kd, kd_rows=6), exclude=tiny_split.train)
    seen = [_capture(objective, name) for name in kd.split("+")]
    objective(_student(tiny_split), users, pos, negs)
    for batches in seen:
        b = batches[0]
        assert b.rows == 32 and b.student.shape[0] == 32 and (b.rce is None or b.rce.rows == 32)


@pytest.mark.parametrize("online", [True, False], ids=["online", "cached"])
def test_the_negatives_columns_of_the_kd_rows_are_their_scores_and_computed_only_when_read(online, teacher, knowledge,
                                                                                         tiny_split):
    """With kd_rows < batch a dot-product student scores the shared negatives of those rows by its own product
    (equal to its forward's scores); a cached listkl step never reads them."""
    objective = DistillationObjective(teacher if online else None, knowledge, _config("listkl", kd_rows=5))
    seen = _capture(objective, "listkl")
    users, pos, negs = _batch(tiny_split)
    student = _student(tiny_split)
    objective(student, users, pos, negs)
    b = seen[0]
    assert ("student_negatives" in vars(b)) == online  # cached_property: read by the term, or not
    own = torch.cat([pos[:5, None], knowledge.items[users[:5, None], b.topk_ranks]], dim=1)
    with torch.no_grad():
        expected = student(users[:5], own, negs).scores
    assert torch.allclose(b.student, expected, atol=1e-6)


def test_cached_mode_knows_teacher_scores_only_for_top_k_items(knowledge, tiny_split):
    objective = DistillationObjective(None, knowledge, _config("listkl"))
    seen = _capture(objective, "listkl")
    users, pos, negs = _batch(tiny_split)
    objective(_student(tiny_split), users, pos, negs)
    b = seen[0]
    assert b.teacher.shape == b.known.shape == (len(users), b.n_own)  # no teacher scores for the negatives
    assert not b.known[:, 0].any()  # nor for the observed item (training items are not in the top-K)
    assert torch.equal(b.known[:, b.topk], knowledge.valid[users[:, None], b.topk_ranks])
    assert torch.equal(b.teacher[:, b.topk], knowledge.scores[users[:, None], b.topk_ranks])


def test_row_sampling_draws_each_row_apart_and_batch_sampling_shares_ranks(knowledge, tiny_split):
    users = _batch(tiny_split, b=64)[0]
    shared = DistillationObjective(None, knowledge, _config("listkl"))._sample_topk(users)[0]
    per_row = DistillationObjective(None, knowledge, _config("listkl", topk_sampling="row"))._sample_topk(users)[0]
    assert (shared == shared[:1]).all()
    assert not (per_row == per_row[:1]).all()
    assert (per_row.diff(dim=1) > 0).all()


def test_short_teacher_lists_mask_their_padding(tiny_split):
    items = torch.arange(20).expand(tiny_split.n_users, -1).clone()
    scores = torch.linspace(1, 0, 20).expand(tiny_split.n_users, -1).clone()
    scores[:, 2:] = float("-inf")  # every user has only two real entries
    kn = TeacherKnowledge(items, scores, tiny_split.n_items)
    objective = DistillationObjective(None, kn, _config("listkl", topk_sampling="row"))
    seen = _capture(objective, "listkl")
    loss, _ = objective(_student(tiny_split), *_batch(tiny_split))
    b = seen[0]
    assert b.valid[:, b.topk].sum(1).eq(2).all() and torch.isfinite(loss)


def test_gumbel_topk_samples_in_proportion_to_the_weights():
    g = torch.Generator().manual_seed(0)
    log_w = torch.log(torch.tensor([[4.0, 2.0, 1.0, 1.0]])).expand(20000, -1)
    picked, ok = gumbel_topk(log_w, 1, g)
    freq = torch.bincount(picked[:, 0], minlength=4).float() / 20000
    assert ok.all() and torch.allclose(freq, torch.tensor([0.5, 0.25, 0.125, 0.125]), atol=0.015)


def test_gumbel_topk_without_replacement_and_with_impossible_positions():
    g = torch.Generator().manual_seed(0)
    log_w = torch.tensor([[0.0, float("-inf"), 0.0, 0.0]])
    picked, ok = gumbel_topk(log_w, 4, g)
    assert sorted(picked[0].tolist()) == [0, 1, 2, 3]
    assert ok[0].tolist() == [True, True, True, False] and picked[0, 3] == 1


def test_uninteresting_negatives_exclude_positive_and_teacher_top_k(knowledge, tiny_split):
    objective = DistillationObjective(None, knowledge, _config("rrd"))
    users, pos, _ = _batch(tiny_split, b=8)
    negs = torch.cat([knowledge.items[users[0], :2], pos[1:2], knowledge.items[users[0], :1], torch.arange(5)])
    got = objective._uninteresting(users, pos, negs, objective._seen_negatives(users, negs))
    for r in range(len(users)):
        top = set(knowledge.items[users[r]].tolist())
        train = set(tiny_split.train.indices[tiny_split.train.indptr[users[r]]:tiny_split.train.indptr[users[r] + 1]]
                    .tolist())
        expected = [n not in top and n != int(pos[r]) and n not in train for n in negs.tolist()]
        assert got[r].tolist() == expected


def test_seen_negatives_are_the_users_training_items(knowledge, tiny_split):
    objective = DistillationObjective(None, knowledge, _config("rd"), exclude=tiny_split.train)
    users, _, negs = _batch(tiny_split, b=16, s=64, seed=4)
    got = objective._seen_negatives(users, negs)
    tr = tiny_split.train
    for r, u in enumerate(users.tolist()):
        train = set(tr.indices[tr.indptr[u]:tr.indptr[u + 1]].tolist())
        assert got[r].tolist() == [n in train for n in negs.tolist()]
    assert got.any()  # the tiny data is dense enough that some negatives are training items


def test_a_negative_that_is_also_a_top_k_candidate_counts_once_in_listkl(teacher, knowledge, tiny_split):
    """Online listkl over [own | negatives]: a top-K item drawn again as a shared negative is masked there, so
    its teacher probability is not counted twice."""
    objective = DistillationObjective(teacher, knowledge, _config("listkl"))
    seen = _capture(objective, "listkl")
    users, pos, _ = _batch(tiny_split, b=4)
    objective(_student(tiny_split), users, pos, torch.arange(tiny_split.n_items))  # every item is a negative
    b = seen[0]
    own_items = torch.cat([pos[:, None], knowledge.items[users[:, None], b.topk_ranks]], dim=1)
    for r in range(len(users)):
        own = set(own_items[r].tolist())
        masked = {j for j in range(tiny_split.n_items) if not b.known[r, b.negatives][j]}
        assert masked == own  # each own candidate appears once in the list the losses compare


# -- per-epoch state --------------------------------------------------------------------------------------
def test_rd_uses_position_weights_then_discrepancy_weights_from_the_switch_epoch(knowledge, tiny_split):
    cfg = _config("rd", rd_k=5, rd_dynamic_from=3)
    objective = DistillationObjective(None, knowledge, cfg)
    seen = _capture(objective, "rd")
    student, batch = _student(tiny_split), _batch(tiny_split)
    for epoch in (1, 2, 3):
        objective.on_epoch_start(epoch)
        _, parts = objective(student, *batch)
        b = seen[-1]
        s = b.student[:, 1:6]
        weights = position_weights(5, cfg.rd_lambda)
        if epoch >= 3:
            # the user's training items among the negatives are left out of the rank estimate
            assert b.negatives_seen is not None and b.negatives_seen.any()
            student_ranks = estimate_rank(s, b.student[:, b.negatives], tiny_split.n_items, ~b.negatives_seen)
            weights = weights * discrepancy_weights(torch.arange(5), student_ranks, cfg.rd_mu)
        assert torch.isclose(parts["rd"], ranking_distillation(s, weights, b.valid[:, 1:6]))


def test_dcd_reranks_the_student_at_each_epoch_start(knowledge, tiny_split):
    objective = DistillationObjective(None, knowledge, _config("dcd", dcd_samples=5))
    student = _student(tiny_split)
    objective(student, *_batch(tiny_split))
    first = objective.dcd_state
    objective(student, *_batch(tiny_split, seed=1))
    assert objective.dcd_state is first  # same epoch: no re-ranking
    objective.on_epoch_start(2)
    objective(student, *_batch(tiny_split, seed=2))
    assert objective.dcd_state is not first


def test_dcd_samples_carry_their_teacher_ranks(knowledge, tiny_split):
    objective = DistillationObjective(None, knowledge, _config("dcd", dcd_samples=5))
    users = _batch(tiny_split)[0]
    items, ranks, ok = objective._sample_dcd(_student(tiny_split), users)
    assert items.shape == ranks.shape == ok.shape == (len(users), 10)
    assert (ranks[:, :5] < knowledge.k).all()  # under-estimated: drawn from the teacher's top-K
    student_top = objective.dcd_state[1]
    for r, u in enumerate(users.tolist()):
        teacher_list = knowledge.items[u].tolist()
        for item, rank, real in zip(items[r].tolist(), ranks[r].tolist(), ok[r].tolist()):
            if real:
                assert (teacher_list[rank] == item) if rank < knowledge.k else (item not in teacher_list)
        assert set(items[r, 5:][ok[r, 5:]].tolist()) <= set(student_top[u].tolist())  # over-estimated


def test_dcd_needs_the_training_items(knowledge, tiny_split):
    bare = TeacherKnowledge(knowledge.items, knowledge.scores, knowledge.n_items)  # e.g. loaded without a split
    with pytest.raises(RankdistillError, match="training items"):
        DistillationObjective(None, bare, _config("dcd"))
    DistillationObjective(None, bare, _config("dcd"), exclude=tiny_split.train)


def test_size_mismatch_between_teacher_and_knowledge_is_refused(teacher, tiny_split):
    kn = TeacherKnowledge(torch.zeros(10, 5, dtype=torch.int64), torch.zeros(10, 5), tiny_split.n_items)
    with pytest.raises(RankdistillError, match="300 users and 150 items but its knowledge has 10 users"):
        DistillationObjective(teacher, kn, _config("listkl"))


# -- learned modules of the objective ---------------------------------------------------------------------
@pytest.mark.parametrize("kd", ["hint", "de"])
def test_representation_modules_train_with_the_trainers_adam(kd, teacher, knowledge, tiny_split):
    objective = DistillationObjective(teacher, knowledge, _config(kd))
    trainer = Trainer(_student(tiny_split), tiny_split, objective, TrainConfig(epochs=1, batch_size=2048, negatives=16))
    own = [p for p in objective.parameters() if p.requires_grad]
    assert own and all(any(p is q for q in trainer.dense_params) for p in own)
    trainer.train_epoch(1)
    assert all(trainer.dense_optimizer.state[p]["step"] > 0 for p in own)  # lazy ones materialised and stepped


def test_learned_modules_start_from_the_seed_not_the_global_random_state(teacher, knowledge):
    torch.manual_seed(1)
    a = DistillationObjective(teacher, knowledge, _config("de"), seed=5).terms.state_dict()
    torch.manual_seed(2)
    b = DistillationObjective(teacher, knowledge, _config("de"), seed=5).terms.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.endswith(("first.weight", "first.bias")))  # not lazy


def test_two_epoch_run_with_stateful_losses(teacher, knowledge, tiny_split):
    cfg = _config("rd+dcd+rrd", rd_k=3, dcd_samples=3, rd_dynamic_from=2)
    objective = DistillationObjective(None, knowledge, cfg)
    trainer = Trainer(_student(tiny_split), tiny_split, objective, TrainConfig(epochs=2, batch_size=1024, negatives=16))
    fit = trainer.fit()
    assert len(fit.history) == 2 and objective.epoch == 2
    assert all(math.isfinite(v) for record in fit.history for v in record["loss"].values())


# -- registry and configuration ---------------------------------------------------------------------------
def test_parse_kd_names_and_weights():
    assert parse_kd("soft_bce:0.5+listkl") == (("soft_bce", 0.5), ("listkl", 1.0))
    assert parse_kd("none") == ()
    with pytest.raises(RankdistillError, match="--kd is empty"):
        parse_kd("")


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "unknown distillation loss 'nonsense'"),
    ("listkl:abc", "is not a number"),
    ("listkl:0", "finite number > 0"),
    ("listkl:inf", "finite number > 0"),
    ("listkl+listkl:2", "appears twice"),
])
def test_parse_kd_rejects_mistakes(spec, message):
    with pytest.raises(RankdistillError, match=message):
        parse_kd(spec)


def test_every_registered_loss_has_help():
    assert all(term.help for term in KD_LOSSES.values())


def test_config_checks_loss_hyperparameters():
    with pytest.raises(RankdistillError, match="rd_k \\(30\\) must be <= topk \\(20\\)"):
        DistillConfig(kd="rd", topk=20, rd_k=30)
    DistillConfig(kd="listkl", topk=5, topk_samples=4)  # rd_k and dcd_samples unused: not checked
    with pytest.raises(RankdistillError, match="topk_sampling"):
        DistillConfig(topk_sampling="sometimes")
    with pytest.raises(RankdistillError, match="de_tau_end"):
        DistillConfig(de_tau_start=0.1, de_tau_end=1.0)
    with pytest.raises(RankdistillError, match="rd_mu must be > 0"):
        DistillConfig(rd_mu=0)


@pytest.mark.parametrize("kd, expected", [("rrd", []), ("rd", []), ("rce", [False]), ("listkl", [True]),
                                          ("rrd+listkl", [True])])
def test_the_teacher_scores_only_the_columns_a_term_uses(kd, expected, teacher, knowledge, tiny_split, monkeypatch):
    """rrd/rd need only the teacher's ranks (the knowledge), rce its scores of the student's top list on the
    rows that carry it (its top-K scores are in the knowledge), the score-matching losses those of each row's
    own candidates and of the shared negatives."""
    calls, forward_calls = [], []
    objective = DistillationObjective(teacher, knowledge, _config(kd), exclude=tiny_split.train)
    monkeypatch.setattr(teacher, "forward", lambda *a, **kw: forward_calls.append(1))
    original = objective._teacher_scores
    monkeypatch.setattr(objective, "_teacher_scores", lambda users, own, shared: (
        calls.append(shared is not None), original(users, own, shared))[1])
    loss, _ = objective(_student(tiny_split), *_batch(tiny_split))
    assert calls == expected and torch.isfinite(loss)
    assert not forward_calls  # a frozen dot-product teacher scores from vectors computed once


def test_teacher_scores_from_its_vectors_equal_its_forward(teacher, knowledge, tiny_split):
    objective = DistillationObjective(teacher, knowledge, _config("listkl"))
    users, pos, negs = _batch(tiny_split)
    for width in (2, 5):  # a short list gathers item vectors; a long one against this small catalogue scores all
        own = torch.stack([(pos + j) % tiny_split.n_items for j in range(width)], dim=1)
        with torch.no_grad():
            expected = teacher(users, own, negs).scores
        torch.testing.assert_close(objective._teacher_scores(users, own, negs), expected)
        torch.testing.assert_close(objective._teacher_scores(users, own, None), expected[:, :width])


@pytest.mark.parametrize("teacher_online", [True, False])
def test_rce_term_equals_rce_kd_on_the_rows_that_carry_it(teacher_online, teacher, knowledge, tiny_split,
                                                          monkeypatch):
    """The rce part of a step is rce_kd over the first kd_rows rows, from the student's and the teacher's
    scores of those rows' K + P items (the closure draw made deterministic: the first L positions)."""
    import rankdistill.train.objectives as objectives_module
    from rankdistill.losses.rce import rce_kd
    from rankdistill.train.knowledge import rank_with_positions

    def first_positions(log_w, m, generator):
        return torch.arange(m).expand(log_w.shape[0], -1), torch.isfinite(log_w[:, :m])

    monkeypatch.setattr(objectives_module, "gumbel_topk", first_positions)
    config = _config("rce", kd_rows=3, rce_samples=6, rce_pool=20)
    objective = DistillationObjective(teacher if teacher_online else None, knowledge, config,
                                      exclude=tiny_split.train)
    student = _student(tiny_split)
    users, pos, negs = _batch(tiny_split)
    _, parts = objective(student, users, pos, negs)

    rows = users[:3]
    with torch.no_grad():
        top, top_ok, _, t_rank = rank_with_positions(student, tiny_split.train, 20, knowledge.items, knowledge.valid,
                                                     with_ranks=False)
        top, top_ok, t_rank = top[rows], top_ok[rows], t_rank[rows]
        t_items = knowledge.items[rows]
        s_t, s_s = student.score(rows, t_items), student.score(rows, top)
        if teacher_online:
            tt, ts, known = teacher.score(rows, t_items), teacher.score(rows, top), top_ok
        else:  # from the knowledge: only the student's items inside the teacher's top-K have a teacher score
            tt, known = knowledge.scores[rows], top_ok & (t_rank < 20)
            ts = knowledge.scores[rows].gather(1, t_rank.clamp_max(19)) * known
        sampled, sampled_ok = torch.arange(6).expand(3, -1), torch.ones(3, 6, dtype=torch.bool)
        expected = rce_kd(s_t, tt, knowledge.valid[rows], s_s, ts, known, top_ok, t_rank, sampled, sampled_ok,
                          beta=config.rce_beta, temperature=config.rce_tau)
    torch.testing.assert_close(parts["rce"], expected, rtol=1e-5, atol=1e-6)


def test_pick_reads_each_rows_columns_also_from_a_truncated_table():
    """_pick(table, users, columns)[b, m] = table[users[b], columns[b, m]], by hand, on a column slice (as
    TeacherKnowledge.truncate leaves it: not contiguous) and on the whole table."""
    from rankdistill.train.objectives import _pick

    table = torch.arange(12).view(3, 4)  # row u holds 4u .. 4u + 3
    users, columns = torch.tensor([2, 0]), torch.tensor([[1, 0], [1, 1]])
    assert _pick(table[:, :2], users, columns).tolist() == [[9, 8], [1, 1]]
    assert _pick(table, users, columns + 2).tolist() == [[11, 10], [3, 3]]


def test_negatives_hit_matches_a_loop_also_with_repeated_negatives_and_padding():
    from rankdistill.train.objectives import negatives_hit

    g = torch.Generator().manual_seed(5)
    negs = torch.tensor([7, 3, 9, 3, 0, 12, 7, 5])  # 3 and 7 twice
    items = torch.randint(14, (6, 4), generator=g)
    items[0] = torch.tensor([3, 7, 13, 0])
    real = torch.rand(6, 4, generator=g) > 0.3
    real[0] = torch.tensor([True, False, True, True])  # row 0's 7 is padding: it must not count
    expected = [[any(bool(real[r, c]) and int(items[r, c]) == int(n) for c in range(4)) for n in negs]
                for r in range(6)]
    assert negatives_hit(negs, items, real).tolist() == expected
    assert expected[0] == [False, True, False, True, True, False, False, False]


@pytest.mark.parametrize("first, carried", [(0, 6), (4, 2), (10, 0)])
def test_a_process_carries_its_part_of_the_global_batchs_first_kd_rows_rows(first, carried, teacher, knowledge,
                                                                            tiny_split):
    """Sharded: a process whose rows begin at the global batch's row ``first`` carries the lists on those of
    its rows among the batch's first kd_rows = 6, possibly none (then the term is 0 and the step still runs)."""
    from rankdistill.losses._masking import batch_share

    objective = DistillationObjective(teacher, knowledge, _config("listkl", kd_rows=6))
    seen = _capture(objective, "listkl")
    student = _student(tiny_split)
    with batch_share(lambda count: count, 1.0, first_row=first):  # one process standing for the whole batch
        loss, parts = objective(student, *_batch(tiny_split))
    loss.backward()
    assert seen[0].rows == carried and seen[0].student.shape[0] == carried
    assert torch.isfinite(loss) and (carried > 0 or parts["listkl"] == 0)
