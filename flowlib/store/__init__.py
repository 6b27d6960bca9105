"""The run store: one SQLite file per server, the runs' folders, and the limits it enforces.

    runs     RunStore: runs, their status, concurrency slots, owners, the queue; its public
             transaction / read API
    request  RunRequest: a run's name, FlowConfig, TrainConfig, owner and preset, typed
    records  metric curves, events and sample grids of a run (a part of RunStore)
    studies  StudyStore: groups of runs that answer one question
    schema   the tables, the layout version (PRAGMA user_version) and the migrations
    dbfile   the database file's own faults: not ours, damaged, read-only, a full disk
    limits   Limits: classroom caps, concurrency, timing windows
"""
