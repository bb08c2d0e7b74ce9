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
from rankdistill.data.load import load_interactions
from rankdistill.data.split import Split, make_split
from rankdistill.data.synthetic import SyntheticConfig, make_synthetic
from rankdistill.data.vocab import IdVocab
from rankdistill.errors import RankdistillError
from rankdistill.evaluation.evaluator import Ranking, evaluate, evaluate_per_user, rank_all
from rankdistill.evaluation.metrics import compute_metrics
from rankdistill.losses.registry import KD_LOSSES
from rankdistill.models.base import DotProductRanker, Ranker
from rankdistill.models.factory import build_model
from rankdistill.models.popularity import Popularity
from rankdistill.models.two_tower import TwoTower
from rankdistill.pipeline import RunConfig, RunResult, TrainedModel, distill, gap_recovered, run, train_model
from rankdistill.train.knowledge import TeacherKnowledge
from rankdistill.train.objectives import DistillationObjective, SupervisedObjective
from rankdistill.train.trainer import FitResult, Trainer

__version__ = "0.1.0"

__all__ = [
    "Columns",
    "DistillConfig",
    "DistillationObjective",
    "DotProductRanker",
    "FitResult",
    "IdVocab",
    "Interactions",
    "KD_LOSSES",
    "ModelConfig",
    "Popularity",
    "Ranker",
    "RankdistillError",
    "Ranking",
    "RunConfig",
    "RunResult",
    "Split",
    "SupervisedObjective",
    "SyntheticConfig",
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
    "gap_recovered",
    "load_interactions",
    "make_split",
    "make_synthetic",
    "rank_all",
    "read_interactions",
    "run",
    "train_model",
]
