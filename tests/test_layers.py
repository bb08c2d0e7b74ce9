"""Which module may import which (read from the source, function-level imports included)."""

import ast
from pathlib import Path

import rankdistill

ROOT = Path(rankdistill.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _importers(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / package).glob("*.py")):
        bad = sorted(n for n in _imports(path) if n.startswith(forbidden))
        if bad:
            found[path.name] = bad
    return found


def test_training_layer_does_not_import_the_pipeline_or_the_commands():
    assert _importers("train", ("rankdistill.pipeline", "rankdistill.commands", "rankdistill.auto",
                                "rankdistill.cli")) == {}


def test_processes_know_nothing_of_sharding_or_models():
    imports = _imports(ROOT / "train" / "processes.py")
    assert not [n for n in imports if n.startswith(("torchrec", "rankdistill.models", "rankdistill.train."))]


def test_sharding_runs_no_training_loop():
    imports = _imports(ROOT / "train" / "sharding.py")
    assert not [n for n in imports if n.startswith(("rankdistill.train.trainer", "rankdistill.train.engine",
                                                    "rankdistill.train.sharded_engine"))]


def test_no_second_trainer_module():
    assert not (ROOT / "train" / "distributed.py").exists()


def test_metrics_do_not_import_fidelity():
    assert not [n for n in _imports(ROOT / "evaluation" / "metrics.py") if "fidelity" in n]
