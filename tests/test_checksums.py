"""Checkpoints and model directories carry a checksum of their state: another program's torch file is
refused, and bytes changed inside the tensor data are refused at load (issue 13, item 13)."""

import json
import struct
import zipfile

import pytest
import torch

from rankdistill.config import ModelConfig, TrainConfig
from rankdistill.data.interactions import Interactions
from rankdistill.errors import RankdistillError
from rankdistill.modeldir import load, save_model
from rankdistill.models.factory import build_model
from rankdistill.train.checkpoint import state_checksum
from rankdistill.train.objectives import SupervisedObjective
from rankdistill.train.trainer import Trainer

CFG = TrainConfig(epochs=2, batch_size=512, negatives=32, l2=0.01, patience=10, seed=1)


def _fit(split, checkpoints):
    model = build_model(ModelConfig(embedding_dim=8, lr=0.1), split.n_users, split.n_items, seed=0)
    return Trainer(model, split, SupervisedObjective("softmax", CFG.l2), CFG, "m", checkpoint_dir=checkpoints).fit()


def overwrite_tensor_bytes(path, value: float = 5e36) -> str:
    """Overwrite the first 4 bytes of the largest tensor stored in the torch file ``path`` (its zip entries
    are stored uncompressed) with the float32 ``value``; -> the entry's name."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        f.write(struct.pack("<f", value))
    return info.filename


def test_foreign_torch_file_is_not_a_checkpoint(tiny_split, tmp_path):
    torch.save({"weights": torch.ones(3)}, tmp_path / "last.pt")
    with pytest.raises(RankdistillError, match=f"{tmp_path / 'last.pt'} is not a rankdistill checkpoint"):
        _fit(tiny_split, tmp_path)


def test_a_tensor_alone_is_not_a_checkpoint(tiny_split, tmp_path):
    torch.save(torch.ones(3), tmp_path / "last.pt")
    with pytest.raises(RankdistillError, match="is not a rankdistill checkpoint"):
        _fit(tiny_split, tmp_path)


def test_bytes_overwritten_in_a_checkpoints_tensor_data_are_refused(tiny_split, tmp_path):
    _fit(tiny_split, tmp_path)
    overwrite_tensor_bytes(tmp_path / "last.pt")
    with pytest.raises(RankdistillError, match=r"checkpoint .*last.pt is damaged: its contents no longer match the "
                                               r"checksum saved with them; delete .* to start this model's training over"):
        _fit(tiny_split, tmp_path)


def test_checkpoint_records_its_format_and_checksum(tiny_split, tmp_path):
    _fit(tiny_split, tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    state = {k: v for k, v in saved.items() if k not in ("format", "identity", "checksum")}
    assert saved["format"] == "rankdistill-checkpoint" and saved["checksum"] == state_checksum(state)


def test_state_checksum_sees_one_changed_element():
    state = {"w": torch.zeros(4), "rest": [1, 2.5, "x", None]}
    changed = {"w": torch.tensor([0.0, 0.0, 0.0, 1e-30]), "rest": [1, 2.5, "x", None]}
    assert state_checksum(state) != state_checksum(changed)
    assert state_checksum(state) == state_checksum({"rest": [1, 2.5, "x", None], "w": torch.zeros(4)})  # key order


def test_state_checksum_sees_dtype_and_shape():
    assert state_checksum(torch.zeros(4)) != state_checksum(torch.zeros(2, 2))
    assert state_checksum(torch.zeros(4, dtype=torch.int32)) != state_checksum(torch.zeros(4))


# -- model directories ----------------------------------------------------------------------------------------

@pytest.fixture()
def model_dir(tmp_path, tiny_frame, tiny_split):
    data = Interactions.from_frame(tiny_frame, "tiny")
    model = build_model(ModelConfig(embedding_dim=8), data.n_users, data.n_items, seed=1)
    return save_model(tmp_path / "model", model, ModelConfig(embedding_dim=8), data, tiny_split)


def test_model_directory_records_the_weights_checksum(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    state = torch.load(model_dir / "weights.pt", weights_only=True)
    assert config["weights_checksum"] == state_checksum(state)


def test_bytes_overwritten_in_a_models_weights_are_refused(model_dir):
    overwrite_tensor_bytes(model_dir / "weights.pt")
    with pytest.raises(RankdistillError, match=r"weights.pt is damaged: its contents no longer match the checksum "
                                               r"in config.json; write the model again"):
        load(model_dir)


def test_model_directory_without_a_checksum_still_loads(model_dir):
    """Directories written before checksums (format version 1 without the field) load as before."""
    config = json.loads((model_dir / "config.json").read_text())
    del config["weights_checksum"]
    (model_dir / "config.json").write_text(json.dumps(config))
    assert load(model_dir).model.n_users == config["n_users"]


def test_damaged_model_weights_on_the_command_line(model_dir, capsys):
    from rankdistill.cli import main

    overwrite_tensor_bytes(model_dir / "weights.pt")
    assert main(["recommend", "--model", str(model_dir), "--out", str(model_dir.parent / "r.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights.pt is damaged" in err[0]


class _Planted:
    """What a hostile torch file could hold: unpickling it would run code (here: write a file)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_checkpoint_holding_python_objects_is_refused_without_running_them(tiny_split, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"format": "rankdistill-checkpoint", "identity": {}, "x": _Planted(tmp_path / "planted")},
               ckpt / "last.pt")
    with pytest.raises(RankdistillError, match="is not a rankdistill checkpoint"):
        _fit(tiny_split, ckpt)
    assert not (tmp_path / "planted").exists()


def test_truncated_checkpoint_is_refused(tiny_split, tmp_path):
    _fit(tiny_split, tmp_path)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RankdistillError, match=r"cannot read checkpoint .*last.pt \(.*\); delete"):
        _fit(tiny_split, tmp_path)
