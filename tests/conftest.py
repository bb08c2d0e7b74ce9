import numpy as np
import pandas as pd
import pytest
import torch

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes (torchrun, the command line in a subprocess); "
                                       "`pytest -m 'not slow'` runs the fast set, plain `pytest` runs all")


@pytest.fixture(scope="session")
def tiny_frame() -> pd.DataFrame:
    """A small synthetic log: 300 users, 150 items, 6,000 interactions (generated, never shipped data)."""
    from rankdistill.data.synthetic import SyntheticConfig, make_synthetic

    return make_synthetic(SyntheticConfig(users=300, items=150, interactions=6000, genres=20, taste_dim=16, seed=3))


@pytest.fixture(scope="session")
def tiny_split(tiny_frame):
    from rankdistill.data.interactions import Interactions
    from rankdistill.data.split import make_split

    return make_split(Interactions.from_frame(tiny_frame, "tiny"))


@pytest.fixture()
def tiny_run_config():
    from rankdistill.config import DistillConfig, ModelConfig, TrainConfig
    from rankdistill.pipeline import RunConfig

    return RunConfig(
        teacher=ModelConfig(embedding_dim=16, lr=0.1),
        student=ModelConfig(embedding_dim=4, lr=0.2),
        train=TrainConfig(epochs=2, batch_size=512, negatives=32, l2=0.01),
        distill=DistillConfig(kd="listkl", topk=20, topk_samples=4),
        quiet=True,
    )


def random_scores(n_users: int, n_items: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_users, n_items, generator=g)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
