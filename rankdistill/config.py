"""Typed, validated configurations. Each raises RankdistillError naming the bad value on creation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rankdistill.errors import RankdistillError


JOB_SEED = "(seed)"  # TrainConfig.seed has no flag or key of its own: a job's top-level seed sets it


def knob(default, help: str, *, flag: str | None = None, choices: tuple | None = None):
    """A config field that is also a command-line option and a job-file key: its default here is the one the
    command line shows, ``help`` its help text, ``flag`` its option name without ``--`` when not the field's
    name with dashes (see rankdistill/commands/options.py)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise RankdistillError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """A ranker's architecture and its embedding optimizer."""

    kind: str = knob("two_tower", "two_tower: dot product of user and item vectors (MF without tower layers), "
                     "servable by nearest-neighbour search; mlp: user and item embeddings concatenated and scored by "
                     "an MLP; lightgcn: embeddings smoothed over the training graph, dot product",
                     flag="model", choices=("two_tower", "mlp", "lightgcn"))
    embedding_dim: int = knob(64, "embedding size (a multiple of 4)", flag="dim")
    tower_layers: tuple[int, ...] = knob((), "two_tower: widths of the MLP on each side before the dot product, "
                                         "e.g. 64,32")
    mlp_layers: tuple[int, ...] = knob((64, 32), "mlp: hidden widths of the scoring MLP")
    optimizer: str = knob("rowwise_adagrad", "optimizer of the embedding tables (adam on CUDA only)",
                          choices=("rowwise_adagrad", "adagrad", "sgd", "adam"))
    lr: float = knob(0.05, "embedding learning rate")
    init_std: float = knob(0.1, "standard deviation of the initial embeddings")
    score: str = knob("dot", "two_tower scores: inner product, or cosine similarity / score temperature "
                      "(mlp and lightgcn score with dot)", choices=("dot", "cosine"))
    temperature: float = knob(1.0, "score cosine: scores are cos(u, i) / this (logits in [-1/t, 1/t])",
                              flag="score-temperature")
    layers: int = knob(3, "lightgcn: propagation layers over the training graph")

    def __post_init__(self) -> None:
        if self.kind not in ("two_tower", "mlp", "lightgcn"):
            raise RankdistillError(f"unknown model kind {self.kind!r}; choose two_tower, mlp or lightgcn")
        _positive(self, "embedding_dim", "lr", "init_std", "temperature")
        if self.score not in ("dot", "cosine"):
            raise RankdistillError(f"score must be 'dot' or 'cosine', got {self.score!r}")
        if self.score == "cosine" and self.kind == "mlp":
            raise RankdistillError("score='cosine' needs a two_tower model (an mlp model scores with its MLP)")
        if self.score == "cosine" and self.kind == "lightgcn":
            raise RankdistillError("a lightgcn model scores by the dot product of its propagated vectors; use "
                                   "score='dot' (--score dot)")
        if not (isinstance(self.layers, int) and self.layers >= 1):
            raise RankdistillError(f"layers must be an integer >= 1, got {self.layers!r}")
        if self.embedding_dim % 4:
            raise RankdistillError(f"embedding_dim must be a multiple of 4 (fbgemm's kernels), got {self.embedding_dim}")
        for name in ("tower_layers", "mlp_layers"):
            widths = tuple(int(w) for w in getattr(self, name))
            object.__setattr__(self, name, widths)
            if any(w <= 0 for w in widths):
                raise RankdistillError(f"{name} must be positive widths, got {widths}")
        if self.kind == "mlp" and not self.mlp_layers:
            raise RankdistillError("an mlp model needs at least one hidden layer in mlp_layers")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: one for teachers, students and distillation."""

    # Defaults chosen on validation NDCG@20 of Gowalla and MovieLens 100K (benchmarks/results/teacher-recipes.md)
    epochs: int = knob(30, "maximum epochs (early stopping on validation usually ends sooner)")
    batch_size: int = knob(512, "training interactions per batch")
    negatives: int = knob(1024, "uniform negatives per batch, shared by all its rows")
    loss: str = knob("bsl", "supervised loss", choices=("softmax", "bsl", "bpr", "bce"))
    bsl_tau2: float = knob(1.1, "loss bsl: weight (power) of the negative side (BSL's tau_2)")
    in_batch_negatives: bool = knob(True, "also the batch's other positives as negatives, logQ-corrected "
                                    "(dot-product models; an MLP ranker trains with the shared negatives alone)")
    l2: float = knob(0.0, "L2 penalty on the embedding rows of the batch")
    dense_lr: float = knob(1e-3, "Adam learning rate of the tower / MLP / projection weights")
    patience: int = knob(3, "epochs without validation improvement before stopping")
    min_delta: float = knob(0.0, "relative validation gain an epoch needs over the last counted best to reset the "
                            "patience (0: any gain; 0.005 stops a slow tail); the best weights are kept either way")
    select_metric: str = knob("ndcg@20", "validation metric for model selection: ndcg@K, recall@K or mrr@K")
    lr_schedule: str = knob("constant", "factor on every learning rate, per step",
                            choices=("constant", "cosine", "linear"))
    warmup_steps: int = knob(0, "steps of linear warm-up of every learning rate")
    clip_grad_norm: float | None = knob(None, "clip the dense gradients to this L2 norm (tables update inside "
                                        "backward)")
    bf16: bool = knob(True, "bf16 autocast of the student's forward pass on CUDA (the teacher, the targets and the "
                      "losses stay fp32; ignored on CPU)")
    seed: int = knob(0, "seed of the batches and negatives (a job's seed sets it)", flag=JOB_SEED)

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "negatives", "dense_lr", "patience", "bsl_tau2")
        if self.l2 < 0:
            raise RankdistillError(f"l2 must be >= 0, got {self.l2}")
        if not 0 <= self.min_delta < 1:
            raise RankdistillError(f"min_delta must be in [0, 1), got {self.min_delta}")
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise RankdistillError(f"lr_schedule must be constant, cosine or linear, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise RankdistillError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise RankdistillError(f"clip_grad_norm must be > 0, got {self.clip_grad_norm}")
        from rankdistill.losses.supervised import SUPERVISED_LOSSES

        if self.loss not in SUPERVISED_LOSSES:
            raise RankdistillError(f"unknown loss {self.loss!r}; choose one of {', '.join(SUPERVISED_LOSSES)}")
        name, _, k = self.select_metric.partition("@")
        if name not in ("ndcg", "recall", "mrr") or not k.isdigit() or int(k) < 1:
            raise RankdistillError(f"select_metric must look like ndcg@20 (ndcg, recall or mrr), got {self.select_metric!r}")


@dataclass(frozen=True)
class DistillConfig:
    """What the student learns from the teacher, on top of the true labels:
    ``total = supervised + Σ weight_i · kd_i``.

    The defaults of each loss's hyperparameters come from its paper (or the authors' code) unless noted."""

    kd: str = knob("auto", "distillation loss(es): NAME[:WEIGHT][+NAME[:WEIGHT]...], 'none', or 'auto': short "
                   "pilots of auto_menu from the same start, the best on validation is finished, never one below "
                   "the student trained alone")
    # --kd auto: the specs it tries, each at its paper's weight (rce: the authors' Gowalla config). rrd left the menu:
    # finished, it ends below the student alone on all three validation splits measured at weight 1, and where
    # lower weights were tried too (benchmarks/results/auto-menu.md), yet can win a 2-epoch pilot, and then auto
    # keeps the student alone. rce:10+listkl replaced rce:10 (2026-11-30): finished from the default runs' students,
    # best validation NDCG@20 MovieLens 0.1083 vs 0.1086, embedded 0.1858 vs 0.1806, Gowalla 0.0969 vs 0.0968
    # (auto-menu.md); both on the same 64 rows of a batch (kd_rows)
    auto_menu: tuple[str, ...] = knob(("rce:10+listkl", "listkl", "soft_bce"),
                                      "kd auto: the specs it tries, comma-separated")
    # MovieLens 100K: the order at 2 epochs is the order at 3
    auto_pilot_epochs: int = knob(2, "kd auto: epochs of each pilot before the choice")
    # chosen on validation (benchmarks/results/warm-start.md): the default run's distilled student, warm against
    # cold, MovieLens 0.1059 vs 0.1076, Gowalla 0.0918 vs 0.0921, embedded 0.1839 vs 0.1686, in fewer epochs
    warm_start: bool = knob(True, "start the distilled student (and auto's pilots) from the student trained alone "
                            "(its best weights, fresh optimizer state) instead of the shared random start, when "
                            "there is one (rankdistill run trains it; the distill command starts cold)")
    temperature: float = knob(1.0, "soft_bce, listkl: softmax temperature (Hinton et al. 2015)")
    topk: int = knob(100, "teacher top-K kept per user (the knowledge)", flag="kd-topk")
    topk_samples: int = knob(16, "teacher top-K items added to each training example's candidate list",
                             flag="kd-samples")
    rank_lambda: float = knob(10.0, "top-K items are sampled with probability ∝ exp(-rank / this) (RRD: 10)")
    topk_sampling: str = knob("batch", "batch: one draw of ranks per batch, shared by its rows (cheap); row: one "
                              "per row", choices=("batch", "row"))
    # rd: ranking distillation (Tang & Wang, KDD 2018; authors' code defaults)
    rd_k: int = knob(10, "rd: the teacher's first rd_k items are extra positives (always in the candidate list)")
    rd_lambda: float = knob(1.0, "rd: position weight ∝ exp(-rank / rd_lambda)")
    rd_mu: float = knob(0.1, "rd: sharpness of the ranking-discrepancy weight tanh(max(mu · (student rank - "
                        "rank), 0))")
    rd_dynamic_from: int = knob(11, "rd: first epoch (1-based) with the discrepancy weight; before it position "
                                "only")
    # dcd: rank-discrepancy-aware correction (Lee & Kim, CIKM 2021), user side
    dcd_samples: int = knob(10, "dcd: under-estimated items (teacher top-K) and over-estimated items (student "
                            "top-K), each")
    dcd_mu: float = knob(0.1, "dcd: sampling probability ∝ tanh(max(dcd_mu · rank discrepancy, 0))")
    # de: distillation experts (Kang et al., CIKM 2020)
    de_experts: int = knob(5, "de: experts per side (users, items); the authors' code uses up to 30")
    de_tau_start: float = knob(1.0, "de: Gumbel-softmax temperature of the expert selection at epoch 1 ...")
    de_tau_end: float = knob(0.01, "de: ... annealed geometrically to this at epoch de_anneal_epochs, then held")
    de_anneal_epochs: int = knob(20, "de: epochs of the temperature annealing")
    # rce: rejuvenated cross-entropy (Zhu & Zhang, ICLR 2026). Defaults: the authors' Gowalla MF config
    # (woriazzc/KDs configs/gowalla/bpr/mkd.yaml, mkd_* there). Its K is topk (mkd_K = 100); its weight there,
    # lmbda = 10 against a BPR loss summed like it over the batch, is the --kd weight: --kd rce:10
    rce_pool: int = knob(100, "rce: the student's top list the closure items are drawn from (mkd_mxK); "
                         "max(rce_pool, topk)")
    rce_samples: int = knob(50, "rce: closure items drawn per user from that list (mkd_L)")
    rce_sample_temperature: float = knob(10.0, "rce: drawn ∝ exp(min(c, 50) / T), c: teacher items at or below "
                                         "(mkd_T)")
    rce_beta: float = knob(5.0, "rce: mix γ = exp(-rce_beta · |teacher top-K ∩ drawn| / K) on the closure part "
                           "(mkd_beta)")
    rce_tau: float = knob(1.0, "rce: softmax temperature of both cross-entropies (mkd_tau)")
    # rows of each batch that carry the distillation terms' lists (the top-K samples, rce's columns: looked up
    # and scored on those rows only; every row still carries the supervised loss), when every term of --kd
    # learns as well from them (KDTerm.few_rows: rce, listkl, measured on validation); otherwise (soft_bce, dcd,
    # every term not measured, or a combination with one) every row carries them. A batch of interactions holds a
    # user about once per (its interactions) batches, so a few rows per batch still distil every user several
    # times an epoch (the reference implementations distil each user once per epoch). Chosen on validation
    # (benchmarks/results/teacher-recipes.md, "kd_rows")
    kd_rows: int = knob(64, "rows of each batch that carry the distillation terms' candidate lists, when every "
                        "term learns from a few rows (rce, listkl; others: every row); the supervised loss sees "
                        "every row")
    terms: tuple[tuple[str, float], ...] = field(init=False)

    def __post_init__(self) -> None:
        from rankdistill.losses.registry import parse_kd

        if self.kd.strip() == "auto":
            object.__setattr__(self, "auto_menu", tuple(str(m).strip() for m in self.auto_menu))
            if not self.auto_menu:
                raise RankdistillError("--kd auto needs at least one method in auto_menu")
            menu_terms = [t for spec in self.auto_menu for t in parse_kd(spec)]
            if any(spec in ("", "none", "auto") for spec in self.auto_menu):
                raise RankdistillError(f"auto_menu lists distillation losses, got {list(self.auto_menu)} (the student "
                                       "alone is always compared)")
            object.__setattr__(self, "terms", ())
        else:
            menu_terms = []
            object.__setattr__(self, "terms", parse_kd(self.kd))
        _positive(self, "temperature", "topk", "topk_samples", "rank_lambda", "rd_k", "rd_lambda", "rd_mu",
                  "rd_dynamic_from", "dcd_samples", "dcd_mu", "de_experts", "de_tau_start", "de_tau_end",
                  "de_anneal_epochs", "rce_pool", "rce_samples", "rce_sample_temperature", "rce_beta", "rce_tau", "kd_rows")
        if self.topk_sampling not in ("batch", "row"):
            raise RankdistillError(f"topk_sampling must be 'batch' or 'row', got {self.topk_sampling!r}")
        _positive(self, "auto_pilot_epochs")
        used = {name for name, _ in (*self.terms, *menu_terms)}
        for name, term in (("topk_samples", None), ("rd_k", "rd"), ("dcd_samples", "dcd")):
            if (term is None or term in used) and getattr(self, name) > self.topk:
                raise RankdistillError(f"{name} ({getattr(self, name)}) must be <= topk ({self.topk})")
        if "rce" in used and self.rce_samples > max(self.rce_pool, self.topk):
            raise RankdistillError(f"rce_samples ({self.rce_samples}) must be <= the length of the student's list they "
                                   f"are drawn from, max(rce_pool, topk) = {max(self.rce_pool, self.topk)}")
        if self.de_tau_end > self.de_tau_start:
            raise RankdistillError(f"de_tau_end ({self.de_tau_end}) must be <= de_tau_start ({self.de_tau_start})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("terms")
        return d
