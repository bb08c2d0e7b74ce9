"""Typed, validated configurations. Each raises RankdistillError naming the bad value on creation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rankdistill.errors import RankdistillError


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise RankdistillError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """A ranker's architecture and its embedding optimizer."""

    kind: str = "two_tower"  # two_tower (MF when tower_layers is empty) | mlp (concat -> MLP) | lightgcn
    embedding_dim: int = 64
    tower_layers: tuple[int, ...] = ()  # two_tower: MLP widths on each side before the dot product
    mlp_layers: tuple[int, ...] = (64, 32)  # mlp: hidden widths of the scoring MLP
    optimizer: str = "rowwise_adagrad"  # rowwise_adagrad | adagrad | sgd (| adam on CUDA)
    lr: float = 0.05
    init_std: float = 0.1
    score: str = "dot"  # two_tower: dot (inner product) | cosine (cosine similarity / temperature)
    temperature: float = 1.0  # score="cosine": scores are cos(u, i) / temperature (logits in [-1/t, 1/t])
    layers: int = 3  # lightgcn: propagation layers K over the training graph

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
    epochs: int = 20  # a maximum; early stopping usually ends sooner
    batch_size: int = 512
    negatives: int = 1024  # uniform negatives per batch, shared by all its rows
    loss: str = "bsl"  # supervised loss: softmax | bsl | bpr | bce
    bsl_tau2: float = 1.1  # loss="bsl": weight (power) of the negative side (BSL's tau_2)
    in_batch_negatives: bool = True  # also the batch's other positives as negatives, logQ-corrected (dot-product
    #                                  rankers only: an MLP ranker trains with the shared negatives alone)
    l2: float = 0.0  # L2 on the embedding rows of the batch
    dense_lr: float = 1e-3  # Adam, for tower / MLP / projection weights
    patience: int = 3  # epochs without validation improvement before stopping
    select_metric: str = "ndcg@20"  # validation metric for model selection
    lr_schedule: str = "constant"  # constant | cosine | linear: factor on every learning rate, per step
    warmup_steps: int = 0  # linear warm-up of every learning rate
    clip_grad_norm: float | None = None  # max L2 norm of the dense gradients (tables update inside backward)
    bf16: bool = True  # bf16 autocast for the forward pass on CUDA (ignored on CPU)
    seed: int = 0

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "negatives", "dense_lr", "patience", "bsl_tau2")
        if self.l2 < 0:
            raise RankdistillError(f"l2 must be >= 0, got {self.l2}")
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

    kd: str = "auto"  # NAME[:WEIGHT][+NAME[:WEIGHT]...] | none | auto (pilots of auto_menu, chosen on validation)
    # --kd auto: the specs it tries, one per family, each at its paper's weight (rce: the authors' Gowalla config)
    auto_menu: tuple[str, ...] = ("rce:10", "rrd", "listkl", "soft_bce")
    auto_pilot_epochs: int = 2  # --kd auto: epochs of each pilot (MovieLens 100K: the order at 2 is the order at 3)
    temperature: float = 1.0  # soft_bce, listkl (Hinton et al. 2015)
    topk: int = 100  # teacher top-K kept per user (the knowledge cache)
    topk_samples: int = 16  # teacher top-K items added to each training example's candidate list
    rank_lambda: float = 10.0  # top-K items are sampled with probability ∝ exp(-rank / rank_lambda) (RRD: 10)
    topk_sampling: str = "batch"  # batch: one draw of ranks per batch, shared by its rows (cheap) | row: one per row
    # rd: ranking distillation (Tang & Wang, KDD 2018; authors' code defaults)
    rd_k: int = 10  # the teacher's first rd_k items are extra positives (always in the candidate list)
    rd_lambda: float = 1.0  # position weight ∝ exp(-rank / rd_lambda)
    rd_mu: float = 0.1  # sharpness of the ranking-discrepancy weight tanh(max(mu · (student rank - rank), 0))
    rd_dynamic_from: int = 11  # first epoch (1-based) with the discrepancy weight; before it position only
    # dcd: rank-discrepancy-aware correction (Lee & Kim, CIKM 2021), user side
    dcd_samples: int = 10  # under-estimated items (teacher top-K) and over-estimated items (student top-K), each
    dcd_mu: float = 0.1  # sampling probability ∝ tanh(max(dcd_mu · rank discrepancy, 0))
    # de: distillation experts (Kang et al., CIKM 2020)
    de_experts: int = 5  # experts per side (users, items); the authors' code uses up to 30
    de_tau_start: float = 1.0  # Gumbel-softmax temperature of the expert selection at epoch 1 ...
    de_tau_end: float = 0.01  # ... annealed geometrically to this at epoch de_anneal_epochs, then held
    de_anneal_epochs: int = 20
    # rce: rejuvenated cross-entropy (Zhu & Zhang, ICLR 2026). Defaults: the authors' Gowalla MF config
    # (woriazzc/KDs configs/gowalla/bpr/mkd.yaml, mkd_* there). Its K is topk (mkd_K = 100); its weight there,
    # lmbda = 10 against a BPR loss summed like it over the batch, is the --kd weight: --kd rce:10
    rce_pool: int = 100  # the student's top list the closure items are drawn from (mkd_mxK); max(rce_pool, topk)
    rce_samples: int = 50  # closure items drawn per user from that list (mkd_L)
    rce_sample_temperature: float = 10.0  # drawn ∝ exp(min(c, 50) / T), c: teacher items at or below (mkd_T)
    rce_beta: float = 5.0  # mix γ = exp(-rce_beta · |teacher top-K ∩ drawn| / K) on the closure part (mkd_beta)
    rce_tau: float = 1.0  # softmax temperature of both cross-entropies (mkd_tau)
    # rows of each batch that carry rce's K + P columns (the others pad them with one repeated row, looked up
    # once): the reference distils each user once per epoch, a batch of interactions holds a user about once per
    # (its interactions) batches, so a sixteenth of a 512-row batch still distils every user several times an epoch
    rce_rows: int = 64
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
                  "de_anneal_epochs", "rce_pool", "rce_samples", "rce_sample_temperature", "rce_beta", "rce_tau", "rce_rows")
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
