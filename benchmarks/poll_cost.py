"""What one tab watching a live run costs the server per poll: the store read of its curves.

The Train page's dashboard polls every 2 s. It used to read the whole run (``store.metrics``);
it now keeps a :class:`flowlib.store.records.CurveFollower` per tab that reads only the rows
written since its last poll. This times both on a run with a long curve, with a few new rows
written before each poll, as a live run does.

    python -m benchmarks.poll_cost                  # 20,000 rows, median of 20 polls
    python -m benchmarks.poll_cost --rows 100000 --polls 50

Numbers live in benchmarks/RESULTS.md and in the commit that made polls incremental.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from flowlib.store.limits import Limits
from flowlib.store.records import CurveFollower
from flowlib.store.request import RunRequest
from flowlib.store.runs import RunStore

KEYS = ("train_bpd", "loss_nats", "lr", "images_per_s", "elapsed_s")


def _rows(first_step: int, n_rows: int) -> list[tuple]:
    steps = range(first_step, first_step + n_rows // len(KEYS))
    return [(s, 1000.0 + s, k, float(s)) for s in steps for k in KEYS]


def measure(rows: int = 20_000, polls: int = 20, per_poll: int = 10) -> dict:
    """Median seconds of one poll's store read, full and incremental, on a run of ``rows`` rows."""
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp, Limits())
        run_id = store.create_run(RunRequest.from_dicts("long", {}, {"max_steps": 10**7}))
        store.append_metrics(run_id, _rows(1, rows))
        step = rows // len(KEYS) + 1
        follower = CurveFollower(run_id)
        follower.refresh(store)
        full, incremental = [], []
        for _ in range(polls):
            store.append_metrics(run_id, _rows(step, per_poll))
            step += per_poll // len(KEYS)
            t0 = time.perf_counter()
            expected = store.metrics(run_id)
            full.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = follower.refresh(store)
            incremental.append(time.perf_counter() - t0)
            assert got == expected
        return {"rows": rows, "polls": polls, "full_ms": 1000 * statistics.median(full),
                "incremental_ms": 1000 * statistics.median(incremental), "full_reads": follower.full_reads}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args(argv)
    r = measure(args.rows, args.polls)
    print(f"{r['rows']:,} rows, median of {r['polls']} polls: full read {r['full_ms']:.2f} ms, "
          f"incremental {r['incremental_ms']:.3f} ms ({r['full_reads']} full read, the first)")


if __name__ == "__main__":
    main()
