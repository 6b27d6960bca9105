"""Settings declared once (flowlib.config): checks, the CLI, the Train form and the Runs diff follow."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from flowlib.cli.train import build_parser, config_overrides
from flowlib.config import (
    APP_TRAIN_DEFAULTS,
    DATASET_NAMES,
    DEVICE_CHOICES,
    PRESETS,
    FlowConfig,
    TrainConfig,
    comparison_rows,
    max_levels,
)
from flowlib.settings import ConfigError, Setting, field_errors, form_fields


def _config_with_a_new_field():
    """TrainConfig plus one field, declared the way a new engineer would add it to config.py."""
    ema = Setting(label="EMA decay", help="decay of an exponential moving average of the weights",
                  kind="float", bounds=(0.0, 1.0), flag="--ema-decay", form=True, form_step=0.01)
    return dataclasses.make_dataclass(
        "TrainConfigWithEma", [("ema_decay", float, dataclasses.field(default=0.0, metadata={"setting": ema}))],
        bases=(TrainConfig,), frozen=True)


# -- torch-free, and in step with the modules that import torch ---------------------------------
def test_config_imports_without_torch():
    code = ("import sys, flowlib.config; from flowlib import FlowConfig, PRESETS, preset; "
            "preset('glow'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dataset_and_device_names_match_the_torch_modules():
    import flowlib.data
    import flowlib.machine.device
    assert DATASET_NAMES == tuple(flowlib.data.DATASETS)
    assert flowlib.machine.device.DEVICE_CHOICES is DEVICE_CHOICES


def test_presets_round_trip_through_dicts_as_checkpoints_store_them():
    for cfg in PRESETS.values():
        assert FlowConfig(**cfg.to_dict()) == cfg == FlowConfig.from_dict(cfg.to_dict())
    tc = TrainConfig(sample_temperatures=[0, 1], max_minutes=3)
    assert TrainConfig.from_dict(tc.to_dict()) == tc and tc.to_dict()["sample_temperatures"] == [0, 1]


def test_the_app_and_the_library_share_one_default_schedule():
    assert APP_TRAIN_DEFAULTS.lr_schedule == TrainConfig().lr_schedule == "cosine"
    assert isinstance(APP_TRAIN_DEFAULTS, TrainConfig)


@pytest.mark.parametrize("h, w, levels", [(28, 28, 2), (32, 32, 5), (256, 256, 8), (6, 8, 1), (7, 7, 0)])
def test_max_levels(h, w, levels):
    assert max_levels(h, w) == levels


# -- one error type that names the field ---------------------------------------------------------
@pytest.mark.parametrize("cls, changes, field, words", [
    (TrainConfig, dict(batch_size=0), "batch_size", "batch_size must be an integer in 1..4096, got 0"),
    (TrainConfig, dict(batch_size=True), "batch_size", "integer"),
    (TrainConfig, dict(threads=0), "threads", "1..1024 or None"),
    (TrainConfig, dict(lr=0), "lr", "lr must be a finite number with 0 < value ≤ 1, got 0"),
    (TrainConfig, dict(lr_drop=1.0), "lr_drop", "0 < value < 1"),
    (TrainConfig, dict(max_minutes=float("nan")), "max_minutes", "or None"),
    (TrainConfig, dict(bf16="yes"), "bf16", "bf16 must be True or False"),
    (TrainConfig, dict(lr_schedule="linear"), "lr_schedule", "one of constant, cosine; got 'linear'"),
    (TrainConfig, dict(dataset="../etc"), "dataset", "one of mnist, faces"),
    (TrainConfig, dict(device="tpu"), "device", "(or cuda:N)"),
    (TrainConfig, dict(sample_temperatures=()), "sample_temperatures", "1..8 numbers in 0..2"),
    (TrainConfig, dict(dataset_options=[]), "dataset_options", "dict with string keys"),
    (TrainConfig, dict(dataset_options={"path": float("nan")}), "dataset_options", "plain JSON"),
    (TrainConfig, dict(max_steps=None, max_minutes=None), "max_steps", "a budget is required"),
    (FlowConfig, dict(hidden=0), "hidden", "hidden must be an integer in 1..2048, got 0"),
    (FlowConfig, dict(coupling="affline"), "coupling", "coupling must be one of affine, additive"),
    (FlowConfig, dict(actnorm=1), "actnorm", "True or False"),
    (FlowConfig, dict(affine_clamp=0.0), "affine_clamp", "0.1 ≤ value ≤ 10"),
    (FlowConfig, dict(image_shape=(1, 28)), "image_shape", "three integers"),
    (FlowConfig, dict(image_shape=(9, 28, 28)), "image_shape", "channels must be in 1..4"),
    (FlowConfig, dict(levels=3), "levels", "use levels ≤ 2 for this image size"),
])
def test_a_bad_value_raises_config_error_naming_its_field(cls, changes, field, words):
    with pytest.raises(ConfigError) as info:
        cls(**changes)
    assert info.value.field == field and words in str(info.value)
    assert isinstance(info.value, ValueError)     # callers that catch ValueError keep working


def test_unknown_fields_and_presets_name_themselves():
    with pytest.raises(ConfigError) as info:
        FlowConfig.from_dict({"depth": 3})
    assert info.value.field == "depth" and "unknown FlowConfig field(s) ['depth']" in str(info.value)


def test_field_errors_reports_every_bad_field_at_once():
    errors = field_errors(TrainConfig, {"batch_size": 0, "lr": -1.0, "warmup_steps": 10, "eval_every": 0})
    assert set(errors) == {"batch_size", "lr", "eval_every"}


# -- today's command line, flag by flag ------------------------------------------------------------
# Every flag of the hand-written tables this replaced (_FLOW_FLAGS / _TRAIN_FLAGS in the old
# flowlib/train/loop.py), with a value and the field and value it must set.
OLD_FLOW_FLAGS = [
    (["--levels", "3"], "levels", 3), (["--flow-steps", "5"], "steps", 5), (["--hidden", "32"], "hidden", 32),
    (["--coupling", "additive"], "coupling", "additive"), (["--permutation", "shuffle"], "permutation", "shuffle"),
    (["--mask", "checkerboard"], "mask", "checkerboard"), (["--actnorm"], "actnorm", True),
    (["--no-actnorm"], "actnorm", False), (["--coupling-actnorm"], "coupling_actnorm", True),
    (["--no-coupling-actnorm"], "coupling_actnorm", False), (["--split-prior", "standard"], "split_prior", "standard"),
    (["--top-prior", "standard"], "top_prior", "standard"), (["--n-bits", "5"], "n_bits", 5),
    (["--affine-clamp", "1.5"], "affine_clamp", 1.5), (["--dequantization", "variational"], "dequantization", "variational"),
    (["--input-transform", "logit"], "input_transform", "logit"), (["--model-seed", "7"], "seed", 7),
    (["--image-shape", "1,32,32"], "image_shape", (1, 32, 32)),
]
OLD_TRAIN_FLAGS = [
    (["--batch-size", "16"], "batch_size", 16), (["--lr", "0.002"], "lr", 0.002),
    (["--warmup-steps", "10"], "warmup_steps", 10), (["--lr-schedule", "constant"], "lr_schedule", "constant"),
    (["--steps", "100"], "max_steps", 100), (["--minutes", "2.5"], "max_minutes", 2.5),
    (["--grad-clip", "10"], "grad_clip", 10.0), (["--grad-clip", "0"], "grad_clip", None),
    (["--seed", "3"], "seed", 3), (["--log-every", "2"], "log_every", 2), (["--eval-every", "20"], "eval_every", 20),
    (["--first-eval", "0"], "first_eval", 0), (["--eval-subset", "64"], "eval_subset", 64),
    (["--epoch-size", "1000"], "epoch_size", 1000),
    (["--sample-temperatures", "0,0.5,1"], "sample_temperatures", (0.0, 0.5, 1.0)),
    (["--samples-per-temperature", "4"], "samples_per_temperature", 4),
    (["--checkpoint-every-minutes", "0.5"], "checkpoint_every_minutes", 0.5),
    (["--nan-patience", "5"], "nan_patience", 5), (["--lr-drop", "0.25"], "lr_drop", 0.25),
    (["--device", "cuda:1"], "device", "cuda:1"), (["--bf16"], "bf16", True), (["--no-bf16"], "bf16", False),
    (["--threads", "2"], "threads", 2),
]


@pytest.mark.parametrize("argv, field, value", OLD_FLOW_FLAGS)
def test_every_model_flag_of_before_still_parses(argv, field, value):
    args = build_parser().parse_args(argv)
    assert config_overrides(args, FlowConfig, "flow") == {field: value}
    assert config_overrides(args, TrainConfig, "train") == {}


@pytest.mark.parametrize("argv, field, value", OLD_TRAIN_FLAGS)
def test_every_training_flag_of_before_still_parses(argv, field, value):
    args = build_parser().parse_args(argv)
    assert config_overrides(args, TrainConfig, "train") == {field: value}
    assert config_overrides(args, FlowConfig, "flow") == {}


def test_the_run_flags_still_parse():
    args = build_parser().parse_args(["--preset", "glow", "--dataset", "faces", "--data-path", "/x", "--name", "n",
                                      "--runs-dir", "/r", "--resume", "3", "--quiet"])
    assert (args.preset, args.dataset, args.data_path, args.name, args.runs_dir, args.resume, args.quiet) == \
        ("glow", "faces", "/x", "n", "/r", "3", True)


# -- a field added in one place appears everywhere -----------------------------------------------
def test_a_new_field_is_validated_and_gets_a_cli_flag():
    plus = _config_with_a_new_field()
    assert plus(ema_decay=0.5).ema_decay == 0.5 and plus().to_dict()["ema_decay"] == 0.0
    with pytest.raises(ConfigError) as info:
        plus(ema_decay=2.0)
    assert info.value.field == "ema_decay"
    parser = build_parser(train_cls=plus)
    assert "--ema-decay" in parser.format_help()
    assert config_overrides(parser.parse_args(["--ema-decay", "0.99"]), plus, "train") == {"ema_decay": 0.99}


def test_a_new_field_gets_a_train_form_widget():
    from streamlit.testing.v1 import AppTest

    def form_page():
        import dataclasses

        import streamlit as st

        from flowlib.config import TrainConfig
        from flowlib.settings import Setting, form_fields
        from pages.common import settings_form

        ema = Setting(label="EMA decay", help="decay of an exponential moving average of the weights",
                      kind="float", bounds=(0.0, 1.0), flag="--ema-decay", form=True, form_step=0.01)
        plus = dataclasses.make_dataclass(
            "TrainConfigWithEma",
            [("ema_decay", float, dataclasses.field(default=0.0, metadata={"setting": ema}))],
            bases=(TrainConfig,), frozen=True)
        for name in form_fields(plus):
            st.session_state.setdefault("form_" + name, getattr(plus(), name))
        settings_form.render_settings(plus, form_fields(plus), "form_")
        st.session_state["values"] = settings_form.form_values(plus, "form_")

    assert "ema_decay" in form_fields(_config_with_a_new_field())
    at = AppTest.from_function(form_page)
    at.run()
    assert not at.exception, at.exception
    widget = at.number_input(key="form_ema_decay")
    assert widget.label == "EMA decay" and "Valid: 0 ≤ value ≤ 1." in widget.help
    widget.set_value(0.9).run()
    assert at.session_state["values"]["ema_decay"] == 0.9
    assert at.selectbox(key="form_lr_schedule").value == "cosine"       # the existing fields too


def test_a_new_field_gets_a_runs_comparison_row():
    from pages.common.settings_form import settings_table

    plus = _config_with_a_new_field()
    assert ("EMA decay", "train", "ema_decay") in comparison_rows(FlowConfig, plus)
    runs = [{"id": i, "name": f"r{i}", "dataset": "mnist", "preset": "mnist-fast",
             "config": PRESETS["mnist-fast"].to_dict(), "train": plus(ema_decay=ema).to_dict()}
            for i, ema in ((1, 0.0), (2, 0.99))]
    table, differing = settings_table(runs, train_cls=plus)
    assert differing == ["EMA decay"] and list(table.loc["EMA decay"]) == ["0.0", "0.99"]


def test_the_runs_diff_compares_the_schedule_and_bf16():
    from pages.common.settings_form import settings_table

    keys = {key for _, _, key in comparison_rows()}
    assert {"lr_schedule", "bf16", "grad_clip", "coupling_actnorm", "affine_clamp"} <= keys
    runs = [{"id": i, "name": f"r{i}", "dataset": "mnist", "preset": "mnist-fast",
             "config": PRESETS["mnist-fast"].to_dict(), "train": TrainConfig(lr_schedule=s, bf16=b).to_dict()}
            for i, s, b in ((1, "constant", False), (2, "cosine", True))]
    _, differing = settings_table(runs)
    assert differing == ["learning-rate schedule", "bf16 coupling networks"]


def test_the_sample_caption_follows_the_temperatures():
    from pages.common import ui
    assert ui.sample_caption().startswith("Rows: temperature 0, 0.5, 0.7, 1 (top to bottom)")
    assert ui.sample_caption((0.3, 0.9)).startswith("Rows: temperature 0.3, 0.9 (top")
