"""rankdistill: distil large embedding-based recommender ranking models into small, cheap-to-serve students.

The public API::

    import rankdistill as rd
    data = rd.load_interactions("interactions.parquet")        # or None: the embedded synthetic data
    split = rd.make_split(data)                                  # temporal leave-one-out
    run = rd.RunConfig()
    teacher = rd.train_model(split, rd.ModelConfig(embedding_dim=128, lr=0.05), run, "teacher")
    student = rd.distill(split, teacher.model, run)              # run.student, run.distill
    print(student.metrics, rd.evaluate(student.model, split, "test", (10, 20)))
"""

from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
from rankdistill.data.interactions import Interactions
from rankdistill.data.io import Columns, read_interactions
from rankdistill.data.load import DataSpec, load_interactions
from rankdistill.data.split import Split, make_split
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import PerUserMetrics, Ranking, evaluate, evaluate_per_user, rank_all
from rankdistill.evaluation.fidelity import fidelity, kendall_tau, overlap_at_k, spearman_rho
from rankdistill.evaluation.metrics import HIGHER_IS_BETTER, compute_metrics
from rankdistill.evaluation.run_file import evaluate_run, evaluate_run_files
from rankdistill.evaluation.sampled import evaluate_sampled
from rankdistill.evaluation.topk import topk_ties_by_index
from rankdistill.losses.registry import KD_LOSSES
from rankdistill.modeldir import SavedModel, load, save_model
from rankdistill.models.base import DotProductRanker, Ranker
from rankdistill.models.factory import build_model
from rankdistill.models.lightgcn import LightGCN
from rankdistill.models.popularity import Popularity
from rankdistill.models.two_tower import TwoTower
from rankdistill.pipeline import RunConfig, RunResult, TrainedModel, distill, gap_recovered, run, train_model
from rankdistill.train.alignment import TeacherAlignment
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective
from rankdistill.train.trainer import FitResult, Trainer

__version__ = "0.1.0"

__all__ = [
    "Columns",
    "DataSpec",
    "DistillConfig",
    "DistillationObjective",
    "DotProductRanker",
    "FitResult",
    "HIGHER_IS_BETTER",
    "IdVocab",
    "Interactions",
    "KD_LOSSES",
    "LightGCN",
    "ModelConfig",
    "PerUserMetrics",
    "Popularity",
    "Ranker",
    "RankdistillError",
    "Ranking",
    "RunConfig",
    "RunResult",
    "SavedModel",
    "Split",
    "SupervisedObjective",
    "SyntheticConfig",
    "TeacherAlignment",
    "TeacherKnowledge",
    "Trainer",
    "TrainConfig",
    "TrainedModel",
    "TwoTower",
    "build_model",
    "compute_metrics",
    "distill",
    "evaluate",
    "evaluate_per_user",
    "evaluate_run",
    "evaluate_run_files",
    "evaluate_sampled",
    "fidelity",
    "gap_recovered",
    "kendall_tau",
    "load",
    "load_interactions",
    "make_split",
    "make_synthetic",
    "overlap_at_k",
    "rank_all",
    "read_interactions",
    "run",
    "save_model",
    "spearman_rho",
    "topk_ties_by_index",
    "train_model",
]
