"""The processes the server launches: a run's worker, the queue that starts them, the speed estimate.

    worker    submit, start, stop, resume; ``python -m flowlib.jobs.worker RUN_ID``
    estimate  what a run will cost, from history or a measuring process
    forecast  a run's pace here now, from this device's earlier runs and its load
    launch    start_module: ``python -m`` in a session of its own
"""
