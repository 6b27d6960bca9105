"""Checkpoints: atomic writes, safe reads, clear refusals."""

import os
import pickle

import pytest
import torch

from flowlib import FlowConfig, FlowModel
from flowlib.core.checkpoint import CheckpointError, load_checkpoint, load_model, model_payload, save_checkpoint


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


# ----------------------------------------------------------------------------- inputs that cost more than they look


def _never_built(monkeypatch):
    import flowlib.core.checkpoint as checkpoint

    def refuse_to_build(*args, **kwargs):
        raise AssertionError("the model was built before the checkpoint was checked")

    monkeypatch.setattr(checkpoint, "FlowModel", refuse_to_build)


def test_huge_config_is_refused_before_building(tmp_path, monkeypatch):
    # A probe: a 2 KB file whose valid config describes 10 billion parameters built
    # the model first (22.8 GB resident, then killed for memory).
    payload = model_payload(_small_model())
    payload["config"] = FlowConfig(image_shape=(4, 256, 256), levels=8, steps=64, hidden=2048).to_dict()
    payload["model"] = {"top_mean": torch.zeros(1)}
    path = tmp_path / "huge.pt"
    save_checkpoint(path, payload)
    assert path.stat().st_size < 4096
    _never_built(monkeypatch)
    with pytest.raises(CheckpointError, match=r"huge\.pt: its config describes a model of 10,092,448,352 "
                                              r"parameters, more than the 200,000,000"):
        load_model(path)


def test_config_larger_than_its_weights_is_refused_before_building(tmp_path, monkeypatch):
    payload = model_payload(_small_model())
    payload["config"]["hidden"] = 512  # under the cap, but the file holds hidden=8 weights
    path = tmp_path / "wider.pt"
    save_checkpoint(path, payload)
    _never_built(monkeypatch)
    with pytest.raises(CheckpointError, match=r"wider\.pt: the weights do not match .* needs [\d,]+ "
                                              r"parameters, the file holds [\d,]+ values"):
        load_model(path)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, bad_value):
    payload = model_payload(_small_model())
    name = "levels.1.steps.0.coupling.net.conv_in.weight"
    payload["model"][name].view(-1)[3] = bad_value
    path = tmp_path / "diverged.pt"
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match=rf"diverged\.pt: its weights contain NaN or infinite values "
                                              rf"\(first in '{name}'\)"):
        load_model(path)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)  # the trainer's resume reads through here too


def test_plain_pickle_is_refused_in_one_sentence_of_our_own(tmp_path):
    path = tmp_path / "plain.pt"
    with open(path, "wb") as f:
        pickle.dump({"config": {}, "model": {}, "note": object}, f)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message == (f"{path}: it is a plain Python pickle, not a PyTorch checkpoint, and such files "
                       "can run code when loaded, so it was refused")
    assert "Weights only" not in message and "\n" not in message


def test_compressed_checkpoint_is_refused_before_torch_inflates_it(tmp_path):
    import io
    import zipfile

    # torch.load reads deflated entries too: a 260 KB file became a 256 MB tensor.
    original = tmp_path / "ck.pt"
    save_checkpoint(original, model_payload(_small_model()))
    squeezed = io.BytesIO()
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(squeezed, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    path = tmp_path / "deflated.pt"
    path.write_bytes(squeezed.getvalue())
    with pytest.raises(CheckpointError, match=r"deflated\.pt: its entry .* is compressed, which torch.save never does"):
        load_checkpoint(path)


def test_atomic_write_fsyncs_file_then_folder_and_cleans_up(tmp_path, monkeypatch):
    from flowlib import fileio

    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "out.bin"
    fileio.atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert synced[:2] in ([False, True], [None, None])  # the file first, then its folder

    def fails_midway(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(target, fails_midway)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
