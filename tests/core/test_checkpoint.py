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
    with pytest.raises(CheckpointError, match="^ck.pt: "):   # named, not by the server's path
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
    assert message == ("plain.pt: it is a plain Python pickle, not a PyTorch checkpoint, and such files "
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


# ----------------------------------------------------------------------------- tensors bounded by the file's bytes


def _torch_load_must_not_run(monkeypatch):
    from flowlib.core import checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load ran on a file whose tensors claim more than it holds")

    monkeypatch.setattr(checkpoint.torch, "load", refuse)


def test_a_stride_zero_tensor_of_a_billion_elements_is_refused_before_torch_load(tmp_path, monkeypatch):
    # A probe: a 46 KB file whose weights hold one float viewed a billion times (stride 0)
    # asked the allocator for 5 GB when its weights were checked for NaN.
    payload = model_payload(_small_model())
    payload["model"]["top_mean"] = torch.zeros(1).expand(10**9)
    path = tmp_path / "stride0.pt"
    save_checkpoint(path, payload)
    assert path.stat().st_size < 100_000
    _torch_load_must_not_run(monkeypatch)
    with pytest.raises(CheckpointError, match=r"stride0\.pt: a tensor of 1,000,000,000 elements reads the "
                                              r"same stored values more than once .* refused before anything "
                                              r"was allocated"):
        load_model(path)


def _forged(path, views, numel, entry_bytes, itemsize=4):
    """A torch.save-shaped zip written by hand: one float storage of ``numel`` declared elements
    whose entry holds ``entry_bytes`` bytes, and one tensor per (offset, size, stride) in views."""
    import collections
    import io
    import zipfile

    class Storage:
        pass

    storage = Storage()

    class View:
        def __init__(self, offset, size, stride):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is storage else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({f"t{i}": View(*v) for i, v in enumerate(views)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", bytes(range(256)) * (entry_bytes // 256) + bytes(entry_bytes % 256))
        zf.writestr("archive/version", "3\n")
    return path


def test_a_hand_written_checkpoint_with_honest_tensors_still_loads(tmp_path):
    path = _forged(tmp_path / "honest.pt", [(0, (2, 3), (3, 1)), (6, (3, 2), (1, 3))], 12, 48)
    ckpt = torch.load(path, weights_only=True)  # the forgery is a real torch file: torch reads it
    assert ckpt["t0"].shape == (2, 3) and ckpt["t1"].shape == (3, 2)
    import zipfile

    from flowlib.core.tensor_bounds import check_tensor_bounds
    with zipfile.ZipFile(path) as archive:
        check_tensor_bounds(archive)  # two views of one storage, no value twice: accepted


@pytest.mark.parametrize("views,numel,entry_bytes,message", [
    ([(0, (10**9,), (1,))], 10**9, 64, (r"its storage '0' declares 4,000,000,000 bytes but the file has an "
                                        r"entry of 64 bytes for it")),
    ([(3, (8,), (1,))], 8, 32, r"a tensor of size \(8,\) reaches element 10 of its storage '0', which holds 8"),
    ([(0, (10**5, 10**5), (1, 1))], 16, 64, r"a tensor of 10,000,000,000 elements reads the same stored values"),
    ([(0, (4, 4), (4, 1)), (0, (16,), (1,))], 16, 64, (r"its tensors address 128 bytes but its storages hold "
                                                       r"only 64: stored values are counted more than once")),
])
def test_tensors_that_claim_more_than_the_file_holds_are_refused_in_words(tmp_path, monkeypatch, views, numel,
                                                                          entry_bytes, message):
    path = _forged(tmp_path / "forged.pt", views, numel, entry_bytes)
    _torch_load_must_not_run(monkeypatch)
    with pytest.raises(CheckpointError, match=rf"forged\.pt: {message}.*refused before anything was allocated"):
        load_checkpoint(path)


def test_the_legacy_torch_format_is_refused_in_words(tmp_path, monkeypatch):
    path = tmp_path / "old.pt"
    torch.save(model_payload(_small_model()), path, _use_new_zipfile_serialization=False)
    _torch_load_must_not_run(monkeypatch)
    with pytest.raises(CheckpointError, match=r"old\.pt: it is in the legacy format of torch.save before "
                                              r"PyTorch 1.6"):
        load_checkpoint(path)


def test_a_trainers_checkpoint_with_optimizer_and_rng_passes_the_bounds(tmp_path):
    model = _small_model()
    optimizer = torch.optim.Adam(model.parameters())
    model.log_prob(torch.rand(2, 1, 8, 8) - 0.5).mean().backward()
    optimizer.step()
    path = tmp_path / "run.pt"
    save_checkpoint(path, {**model_payload(model), "optimizer": optimizer.state_dict(),
                           "rng": {"torch": torch.get_rng_state()}, "step": 1})
    ckpt = load_checkpoint(path)
    assert set(ckpt["optimizer"]["state"]) and torch.equal(ckpt["rng"]["torch"], torch.get_rng_state())
