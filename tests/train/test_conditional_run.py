"""Training a class-conditional flow: the labels reach the loss, the checkpoint records them."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

import flowlib.cli.train as cli_mod
from flowlib.core.checkpoint import class_names, load_model
from flowlib.data import load_images
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore
from flowlib.train.collaborators import Collaborators
from flowlib.train.evaluation import evaluate_bpd
from flowlib.train.loop import train_run
from flowlib.train.step import batch_terms
from tests.runs_kit import TINY, tiny_train

COND = TINY.replace(condition="top", n_classes=40, class_loss_weight=0.5)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs", Limits())


def _queued(store, cfg=COND, **changes) -> int:
    run_id = store.create_run(RunRequest("cond", cfg, tiny_train(**changes)))
    store.request_start(run_id)
    return run_id


def test_a_conditional_run_trains_on_its_labels_and_records_the_class_names(store):
    seen = []

    def terms(model, x, uniform, labels=None):
        seen.append(labels)
        return batch_terms(model, x, uniform, labels)

    run_id = _queued(store)
    result = train_run(store, run_id, collaborators=Collaborators(terms=terms))
    assert result.status == "finished", result.message
    assert len(seen) == 30 and all(y is not None and y.shape == (8,) and y.dtype == torch.int64 for y in seen)
    train = load_images("faces", "train")
    assert set(torch.cat(seen).tolist()) <= set(train.labels.tolist())
    model, ckpt = load_model(store.checkpoint_path(run_id))
    assert ckpt["config"]["condition"] == "top" and ckpt["config"]["n_classes"] == 40
    assert class_names(model, ckpt)[:2] == ["person 1", "person 2"] and len(ckpt["class_names"]) == 40
    # the head trained (the classification loss reached it) and the top prior's table moved
    assert model.classifier.linear.weight.abs().sum() > 0
    assert model.levels[-1].class_table.table.abs().sum() > 0
    # the reported test score is the marginal over labels, comparable with unconditional runs
    m = store.metrics(run_id)
    assert evaluate_bpd(model, load_images("faces", "test").images) == m["test_bpd_full"]["value"][0]


def test_the_batches_pair_each_image_with_its_own_label(store):
    from flowlib.train.batches import Batches
    from flowlib.train.distributed import SINGLE
    train = load_images("faces", "train")
    batches = Batches(train.images, tiny_train(augment="flip"), SINGLE, labels=train.labels)
    for step in range(5):
        order = batches.order.state()
        x, _, y = batches.next(step)
        idx = order["perm"][order["pos"]:order["pos"] + 8]
        assert torch.equal(y, train.labels[idx])
    unlabelled = Batches(train.images, tiny_train(), SINGLE)
    assert unlabelled.next(0).labels is None


def test_a_conditional_model_on_data_without_labels_fails_in_words(store, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(12):
        buffer = io.BytesIO()
        Image.new("L", (32, 32), 20 * i).save(buffer, format="PNG")
        (folder / f"{i}.png").write_bytes(buffer.getvalue())
    run_id = _queued(store, dataset="folder", dataset_options={"path": str(folder), "channels": 1, "size": 32},
                     eval_subset=2)
    result = train_run(store, run_id)
    assert result.status == "failed" and "have none" in result.message and "condition to none" in result.message


def test_too_few_classes_for_the_labels_is_refused(store):
    result = train_run(store, _queued(store, cfg=COND.replace(n_classes=10)))
    assert result.status == "failed" and "set n_classes to 40" in result.message


def test_the_cli_fills_in_the_number_of_classes_from_the_dataset(tmp_path):
    runs = str(tmp_path / "runs")
    args = ["--preset", "faces-fast", "--dataset", "faces", "--levels", "2", "--flow-steps", "1", "--hidden", "4",
            "--permutation", "reverse", "--batch-size", "8", "--eval-every", "10", "--eval-subset", "40",
            "--samples-per-temperature", "2", "--runs-dir", runs, "--condition", "all", "--steps", "4", "--quiet"]
    assert cli_mod.main(args) == 0
    (run,) = RunStore(runs, Limits()).list_runs()
    assert run["config"]["condition"] == "all" and run["config"]["n_classes"] == 40 and run["status"] == "finished"
