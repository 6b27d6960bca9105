"""A run's timeline (curves and sample grids by step), saved small and played back; and the
recorded one that ships in checkpoints/timeline-mnist."""

import json

import pytest
from PIL import Image

from flowlib.env import REPO_ROOT
from flowlib.train.collaborators import Collaborators
from flowlib.train.heartbeat import Monitor
from flowlib.train.loop import TrainingSession
from flowlib.train.timeline import load_timeline, main, save_timeline, timeline_of_run
from tests.runs_kit import queued_run

SHIPPED = REPO_ROOT / "checkpoints" / "timeline-mnist"


def _trained(store, seconds_per_step=2.0, **changes) -> int:
    run_id = queued_run(store, grid_every_s=10.0, **changes)
    holder = []
    session = TrainingSession(store, store.get_run(run_id), Monitor(store, run_id),
                              collaborators=Collaborators(clock=lambda: holder[0].step * seconds_per_step
                                                          if holder else 0.0))
    holder.append(session)
    session.setup()
    session.run()
    store.finish_run(run_id, "finished", "Finished 30 steps.", 30)
    return run_id


def test_a_runs_timeline_has_its_grids_by_step_and_its_curves(store, tmp_path):
    run_id = _trained(store)
    tl = timeline_of_run(store, run_id)
    assert tl.steps == [0, 5, 10, 15, 20, 25, 30]
    assert tl.frame_at(12).step == 10 and tl.frame_at(0).step == 0 and tl.frame_at(99).step == 30
    assert tl.value_at("train_bpd", 12)[0] == 10 and tl.value_at("train_bpd", 4) is None
    assert tl.elapsed_at(0) == 0.0 and tl.elapsed_at(30) == pytest.approx(60.0, abs=2.5)
    assert tl.info["max_steps"] == 30 and tl.info["status"] == "finished"

    path = save_timeline(tl, tmp_path / "tl", note="made by a test")
    doc = json.loads(path.read_text())
    assert doc["format"] == "flowlab-timeline" and doc["info"]["note"] == "made by a test"
    back = load_timeline(tmp_path / "tl")
    assert back.steps == tl.steps and back.curves["train_bpd"]["step"] == tl.curves["train_bpd"]["step"]
    assert Image.open(back.frame_at(15).path).size == Image.open(tl.frame_at(15).path).size
    with pytest.raises(ValueError, match="no readable timeline"):
        load_timeline(tmp_path)


def test_the_command_line_saves_a_runs_timeline(store, tmp_path, capsys):
    run_id = _trained(store)
    assert main([str(run_id), "--runs-dir", str(store.root), "--out", str(tmp_path / "out")]) == 0
    assert "7 frames" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "frames").glob("*.png"))) == 7


@pytest.mark.skipif(not (SHIPPED / "timeline.json").is_file(), reason="no recorded timeline shipped")
def test_the_shipped_timeline_is_a_real_lecture_run_with_a_grid_every_few_seconds():
    tl = load_timeline(SHIPPED)
    assert tl.info["dataset"] == "mnist" and tl.info["status"] == "finished"
    assert tl.steps[0] == 0 and len(tl.steps) >= 15
    gaps = [tl.elapsed_at(b) - tl.elapsed_at(a) for a, b in zip(tl.steps, tl.steps[1:])]
    assert max(gaps) < 16.0                                   # a frame at least every ~10-15 s of training
    train = tl.curves["train_bpd"]["value"]
    assert train[0] > train[-1] and tl.curves["test_bpd_full"]["value"]
    assert tl.value_at("first_point_s", 10**9) is not None    # what Home's promise reads
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 1_500_000                                    # small enough to ship
