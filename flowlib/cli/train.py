"""``python -m flowlib.train``: train a flow headless; the run appears in the app's run list.

    python -m flowlib.train --preset mnist-fast --dataset mnist --steps 2000
    python -m flowlib.train --resume mnist-fast-mnist --steps 4000     # continue, larger budget
    python -m flowlib.train --help                                      # every flag

A run started here belongs to the terminal (``TERMINAL_OWNER``): a browser tab can watch it,
and only the terminal or the teacher's key can stop, resume, rename or delete it. The
terminal itself is trusted: ``--resume`` continues any run.

The model and training flags are generated from the settings declared in ``flowlib.config``
(``build_parser``): a field added there gets its flag here, with its help and default.
"""

from __future__ import annotations

import argparse
import sys
import time

from flowlib import env
from flowlib.config import DATASET_NAMES, PRESETS, FlowConfig, TrainConfig
from flowlib.settings import Setting, settings_of
from flowlib.store.dbfile import StoreUnavailableError
from flowlib.store.request import RunRequest
from flowlib.store.runs import TERMINAL_OWNER, RunStore, StoreBusyError

__all__ = ["build_parser", "config_overrides", "main"]

# argparse type and metavar of each kind of setting (bools are --flag / --no-flag)
_METAVARS = {"int": "N", "float": "X", "choice": "NAME", "device": "NAME", "temperatures": "T,T",
             "shape": "C,H,W"}


def _floats(text: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _shape(text: str) -> tuple:
    try:
        c, h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W such as 1,28,28, got {text!r}") from None
    return (c, h, w)


_TYPES = {"int": int, "float": float, "choice": str, "device": str, "temperatures": _floats, "shape": _shape}


def _default_words(s: Setting, value) -> str:
    if value is None:
        return f": {s.none_words}"
    if isinstance(value, tuple):
        return " " + ",".join(f"{v:g}" for v in value)
    if isinstance(value, bool):
        return " on" if value else " off"
    return " " + (f"{value:g}" if isinstance(value, float) else str(value))


def _flag_help(s: Setting, default=None, show_default: bool = False) -> str:
    extras = []
    if s.kind == "choice":
        extras.append(" | ".join(s.choices))
    if show_default:
        extras.append("default" + _default_words(s, default))
    text = s.help + (f" ({'; '.join(extras)})" if extras else "")
    return text.replace("%", "%%")  # argparse formats help with %


def add_setting_flags(group, cls, prefix: str, show_defaults: bool) -> None:
    """One flag per field of ``cls`` that declares one; values land in ``args.<prefix>_<field>``."""
    defaults = cls() if show_defaults else None
    for name, s in settings_of(cls):
        if s.flag is None:
            continue
        text = _flag_help(s, getattr(defaults, name, None), show_defaults)
        if s.kind == "bool":
            group.add_argument(s.flag, dest=f"{prefix}_{name}", action=argparse.BooleanOptionalAction,
                               default=None, help=text)
        else:
            group.add_argument(s.flag, dest=f"{prefix}_{name}", type=_TYPES[s.kind], default=None,
                               help=text, metavar=_METAVARS[s.kind])


def config_overrides(args, cls, prefix: str) -> dict:
    """{field: value} for the flags of ``cls`` given on the command line (``--grad-clip 0`` -> None)."""
    out = {}
    for name, s in settings_of(cls):
        value = getattr(args, f"{prefix}_{name}", None)
        if s.flag is None or value is None:
            continue
        out[name] = None if s.cli_none is not None and value == s.cli_none else value
    return out


def build_parser(flow_cls=FlowConfig, train_cls=TrainConfig) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flowlib.train",
        description="Train a normalizing flow headless; the run appears in the app's run list. "
                    "Ctrl-C stops cleanly with a checkpoint (twice: at once).",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=36, width=130))
    run = p.add_argument_group("run")
    run.add_argument("--preset", default="mnist-fast", choices=sorted(PRESETS),
                     help="model preset to start from (default mnist-fast)", metavar="NAME")
    run.add_argument("--dataset", default=None, metavar="NAME",
                     help=f"dataset: {', '.join(DATASET_NAMES)} (default mnist)")
    run.add_argument("--data-path", default=None, metavar="PATH", help="folder or file for datasets that read one")
    run.add_argument("--name", default=None, metavar="NAME", help="run name shown in the app (default: preset-dataset)")
    run.add_argument("--runs-dir", default=None, metavar="DIR",
                     help="run store folder (default $FLOWLAB_RUNS_DIR or checkpoints/runs)")
    run.add_argument("--resume", default=None, metavar="RUN", help="continue a stopped/lost/failed run by id or name")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(p.add_argument_group("model (FlowConfig; default: the preset's value)"),
                      flow_cls, "flow", show_defaults=False)
    add_setting_flags(p.add_argument_group("training (TrainConfig)"), train_cls, "train", show_defaults=True)
    return p


class Progress:
    """A one-line text progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, stream=sys.stderr, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_print = 0.0

    def __call__(self, m: dict) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty and now - self.last_print < 5:
            return
        self.last_print = now
        total = m.get("max_steps")
        if total:
            done = min(1.0, m["step"] / total)
            bar = f"[{'#' * int(20 * done):<20}] {m['step']}/{total}"
        else:
            bar = f"step {m['step']}"
        test = f"  test {m['test_bpd']:.3f}" if m.get("test_bpd") is not None else ""
        loss = f"  loss {m['loss_nats']:.1f} nats  {m['train_bpd']:.3f} bpd" if "train_bpd" in m else ""
        line = f"{bar}{loss}{test}  {m['images_per_s']:.0f} img/s  {m['elapsed_s'] / 60:.1f} min"
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet and self.last_print:
            self.stream.write("\n")


def _device_type(args) -> str:
    import torch
    wanted = getattr(args, "train_device", None) or "auto"
    return "cuda" if wanted.startswith(("cuda", "auto")) and torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    """Train one run; under ``torchrun --nproc_per_node=N`` every rank runs this: rank 0 creates
    (or resumes) the run in the store and trains it, the others follow it (flowlib.train.distributed)."""
    from flowlib.train import distributed
    from flowlib.train.loop import follow_run

    parser = build_parser()
    args = parser.parse_args(argv)
    dist = distributed.from_env(_device_type(args))
    code = 1
    try:
        if dist.active and not dist.is_main:
            run = distributed.broadcast_object(None, dist)
            if run is None:
                code = 2        # rank 0 printed why
                return code
            result = follow_run(run, args.runs_dir or env.runs_root(), dist)
            code = 0 if result.status in ("finished", "stopped") else 1
            return code
        announced = False
        try:
            code, announced = _main_rank(args, parser, dist)
            return code
        finally:
            if dist.active and not announced:
                distributed.broadcast_object(None, dist)   # the followers must not wait for ever
    finally:
        if dist.active:
            import torch.distributed as torch_dist
            if code in (0, 2):
                # Leave together: a rank that tears its connections down while rank 0 still
                # writes the final checkpoint can make gloo abort rank 0 at exit.
                torch_dist.barrier()
            torch_dist.destroy_process_group()


def _main_rank(args, parser, dist) -> tuple[int, bool]:
    """The single process, or rank 0: (exit code, whether the run was announced to the other ranks)."""
    from flowlib.data import image_shape  # torch: only once the flags are known to be good
    from flowlib.jobs.worker import start_waiting
    from flowlib.train import distributed
    from flowlib.train.loop import train_run

    err = sys.stderr
    try:
        store = RunStore(args.runs_dir)
        store.add_slot_listener(lambda: start_waiting(store, watch=False))   # slots of lost runs go on
        overrides = config_overrides(args, TrainConfig, "train")
        flow = config_overrides(args, FlowConfig, "flow")
        if args.resume is not None:
            run = store.find_run(args.resume)
            if run is None:
                parser.error(f"--resume: no run with id or name {args.resume!r} in {store.root}")
            given = [s.flag for n, s in settings_of(FlowConfig) if n in flow]
            if given or args.dataset or args.data_path:
                drop = ", ".join(given) or "--dataset/--data-path"
                parser.error(f"--resume keeps the run's model and data; drop {drop}")
            if overrides:
                train = store.stored_request(run["id"]).train.replace(**overrides)
                store.update_train(run["id"], train)
            run_id = run["id"]
        else:
            dataset = args.dataset or "mnist"
            options = {"path": args.data_path} if args.data_path else {}
            if "max_minutes" in overrides and "max_steps" not in overrides:
                overrides["max_steps"] = None  # --minutes alone: a time budget only
            if "batch_size" not in overrides:   # 256 on a GPU, 64 on a CPU
                from flowlib.machine.device import default_batch_size, pick_device
                try:
                    overrides["batch_size"] = default_batch_size(pick_device(overrides.get("device", "auto")))
                except ValueError:
                    pass    # a device that is not here: the trainer says so in the run's message
            train = TrainConfig(dataset=dataset, dataset_options=options).replace(**overrides)
            shape = flow.pop("image_shape", None)
            if shape is None:
                print(f"loading {dataset} to read its image shape ...", file=err)
                shape = image_shape(dataset, **options)
            if flow.get("condition", PRESETS[args.preset].condition) != "none" and "n_classes" not in flow:
                from flowlib.data import class_names
                flow["n_classes"] = len(class_names(dataset, **options))   # 0 (refused) without labels
            config = PRESETS[args.preset].replace(image_shape=shape, **flow)
            name = args.name or f"{args.preset}-{dataset}"
            # Created already holding a slot (one transaction): a refusal leaves no run behind.
            run_id = store.create_run(RunRequest(name, config, train, owner=TERMINAL_OWNER, preset=args.preset),
                                      status="queued")
        run = store.request_start(run_id) if args.resume is not None else store.get_run(run_id)
        if store.run_dir(run_id).is_dir():   # before the other ranks look into it
            note = store.claim_folder(run_id)
            if note:
                store.add_event(run_id, "warning", note, 0)
    except (ValueError, KeyError, PermissionError, StoreBusyError, StoreUnavailableError) as exc:
        # StoreUnavailableError: a damaged or foreign runs.sqlite, a read-only folder, a full disk
        print(f"error: {exc}", file=err)
        return 2, False
    print(f"run {run_id} '{run['name']}' -> {store.run_dir(run_id)}  (store {store.db_path})"
          + (f"  on {dist.world_size} processes" if dist.active else ""), file=err)
    for warning in store.events(run_id, kinds=["warning"]):
        print(f"warning: {warning['message']}", file=err)   # e.g. a stranger's folder set aside
    distributed.broadcast_object(run, dist)
    progress = Progress(err, args.quiet)
    try:
        result = train_run(store, run_id, on_log=progress, handle_signals=True, dist=dist)
    except StoreUnavailableError as exc:   # the store failed before training could begin
        print(f"error: {exc}", file=err)
        return 1, True
    finally:
        progress.close()
        try:
            start_waiting(store, watch=False)   # the slot this run held goes to the queue
        except (StoreBusyError, StoreUnavailableError) as exc:
            print(f"could not start the next waiting run: {exc}", file=err)
    print(f"{result.status}: {result.message}", file=err)
    return (0 if result.status in ("finished", "stopped") else 1), True


if __name__ == "__main__":
    sys.exit(main())
