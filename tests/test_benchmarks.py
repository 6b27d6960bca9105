"""The benchmark harnesses run and refuse bad input clearly (their numbers live in RESULTS.md)."""

import json
import textwrap

import pytest

from benchmarks import side_by_side

# A stand-in with the reference's interface (Glow(in_channel, n_flow, n_block, affine, conv_lu);
# forward -> log_p, logdet, z_outs), so the harness is tested without the real checkout.
FAKE_REFERENCE = textwrap.dedent('''
    import torch
    from torch import nn

    class Glow(nn.Module):
        def __init__(self, in_channel, n_flow, n_block, affine=True, conv_lu=True):
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            z = x * torch.exp(self.scale)
            log_p = (-0.5 * z ** 2).flatten(1).sum(1)
            return log_p, self.scale.sum() * x[0].numel(), [z]
''')


def test_side_by_side_measures_both_sides_with_the_same_protocol(tmp_path):
    (tmp_path / "model.py").write_text(FAKE_REFERENCE)
    ref = side_by_side.measure("reference", 4, 2, str(tmp_path))
    ours = side_by_side.measure("flowlab-fp32", 4, 2, str(tmp_path))
    assert ref["impl"] == "reference" and ref["params"] == 1 and ref["images_per_s"] > 0
    assert ours["params"] > 5_000_000          # the width-512 demo architecture
    assert ours["step_ms"] > 0 and ours["page_faults_per_step"] >= 0


def test_side_by_side_says_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="no model.py"):
        side_by_side.main(["--reference", str(tmp_path)])
    (tmp_path / "model.py").write_text("import not_a_real_package_xyz\n")
    with pytest.raises(SystemExit, match="pip install not_a_real_package_xyz"):
        side_by_side.main(["--reference", str(tmp_path)])


@pytest.mark.slow
def test_stability_benchmark_runs_seeds_and_reports_the_spread(capsys):
    from benchmarks import stability
    assert stability.main(["--steps", "8", "--seeds", "2", "--settings", "after", "--eval-every", "2",
                           "--settle", "2"]) == 0
    out = capsys.readouterr().out
    assert "final bpd" in out and "s.d." in out and out.count("\n   0 ") == 1 and "\n   1 " in out
    with pytest.raises(SystemExit, match="unknown setting"):
        stability.main(["--settings", "sometimes"])


@pytest.mark.slow
def test_the_share_of_peak_benchmark_counts_flops_and_times_the_trainers_step():
    from benchmarks import peak
    row = peak.measure("mnist-fast", bf16=False, device_name="cpu", warmup=0, repeats=1)
    assert row["gflop_per_step"] > 1.0 and row["step_ms"] > 0 and row["peak_gflops"] > 0
    assert row["share"] == pytest.approx(row["achieved_gflops"] / row["peak_gflops"])
    assert row["peak_gflops"] == max(row["peak_matmul_gflops"], row["peak_conv1x1_gflops"])   # the faster product
    # The convolutions take part of the step, never more than all of it; so the ceiling (the
    # share with nothing but them) lies above the share. Profiled steps are slower, hence the slack.
    assert 0 < row["conv_ms"] < 2 * row["step_ms"]
    assert row["ceiling_share"] > row["share"]
    assert row["images_per_s"] == pytest.approx(64 / (row["step_ms"] / 1000))


@pytest.mark.slow
def test_the_gpu_check_script_runs_end_to_end_as_a_cpu_dry_run(tmp_path):
    """The script a lent GPU runs once: every step must still work after the library moves."""
    import subprocess
    import sys

    from flowlib.env import REPO_ROOT
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", str(tmp_path), "--cpu-dry-run"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("**CPU dry run")
    steps = [line for line in summary.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert len(steps) == 8 and all("exit 0" in s or "skipped" in s for s in steps), summary
    assert "mnist-fast float32" in summary     # the share-of-peak step read its row back


def test_the_study_estimate_benchmark_reads_back_what_the_study_cli_printed():
    from benchmarks.study_estimates import parse_estimate
    from flowlib.cli.study import _duration

    for seconds in (7, 89, 90, 245, 3725):
        assert parse_estimate(f"  time: about {_duration(seconds)} for up to 4 runs") == seconds
    assert parse_estimate("  time: not known yet on this device") is None


def test_poll_cost_times_both_reads_and_they_agree():
    from benchmarks import poll_cost
    r = poll_cost.measure(rows=500, polls=3)     # it asserts each incremental poll equals a full read
    assert r["full_reads"] == 1 and r["full_ms"] > 0 and r["incremental_ms"] > 0


def test_the_lecture_run_starts_homes_configuration_and_rows_append_as_json_lines(tmp_path, capsys):
    from benchmarks.estimates import beside_run, emit
    from benchmarks.lecture_run import lecture_configs
    from flowlib.config import PRESET_LR, PRESETS

    cfg, tc = lecture_configs(3.0, 64, {"hidden": 96}, True)
    assert cfg == PRESETS["mnist-fast"].replace(hidden=96)
    assert (tc.dataset, tc.batch_size, tc.max_steps, tc.max_minutes, tc.lr, tc.bf16) == \
        ("mnist", 64, None, 3.0, PRESET_LR["mnist-fast"], True)
    with beside_run(tmp_path / "beside", 1.0, wanted=False) as proc:
        assert proc is None and not (tmp_path / "beside").exists()
    rows = tmp_path / "rows.jsonl"
    emit({"steps": 1}, str(rows))
    emit({"steps": 2}, str(rows))
    assert [json.loads(line)["steps"] for line in rows.read_text().splitlines()] == [1, 2]
    assert capsys.readouterr().out.count('"steps"') == 2
