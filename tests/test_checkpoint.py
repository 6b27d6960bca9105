"""Checkpoints: atomic writes, safe reads, clear refusals."""

import os
import pickle

import pytest
import torch

from flowlib import FlowConfig, FlowModel
from flowlib.checkpoint import CheckpointError, load_checkpoint, load_model, model_payload, save_checkpoint


def _small_model(**kw):
    model = FlowModel(FlowConfig(image_shape=(1, 8, 8), levels=2, steps=2, hidden=8, **kw))
    model.initialize(torch.rand(4, 1, 8, 8) - 0.5)
    return model


def test_save_then_load_model_gives_identical_outputs(tmp_path):
    model = _small_model()
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {**model_payload(model), "step": 12})
    loaded, ckpt = load_model(path)
    assert ckpt["step"] == 12 and not loaded.training
    x = torch.rand(3, 1, 8, 8) - 0.5
    assert torch.equal(model.encode(x).zs[1], loaded.encode(x).zs[1])
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp files left behind


def test_failed_write_leaves_previous_checkpoint_untouched(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model_payload(_small_model()))
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model_payload(_small_model(seed=5)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/flowlab_pwned_by_checkpoint",))


def test_checkpoint_with_code_payload_is_refused_and_nothing_runs(tmp_path):
    marker = "/tmp/flowlab_pwned_by_checkpoint"
    if os.path.exists(marker):
        os.unlink(marker)
    path = tmp_path / "evil.pt"
    payload = {**model_payload(_small_model()), "extra": _RunsCode()}
    with open(path, "wb") as f:
        torch.save(payload, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (os.urandom(4096), "not a readable PyTorch checkpoint|truncated"),
])
def test_garbage_files_are_refused_with_a_reason(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model_payload(_small_model()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    payload = model_payload(_small_model())
    payload["config"]["hidden"] = 16  # config no longer matches the weights
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(path)


def test_missing_file_and_foreign_dict(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a Flow Lab checkpoint"):
        load_checkpoint(path)
