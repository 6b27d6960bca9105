"""Studies: is one setting really better than another, over several paired seeds? Which settings are best?

A Flow Lab study is an Optuna study (comparisons enqueue arms × seeds; searches sample ranges
with TPE, pruned by Optuna's MedianPruner on first-seed runs), its trials trained as Flow Lab
runs by workers on one machine or many, answered honestly.

    spec      StudySpec, the paper presets, planning (comparisons and searches), values from text
    space     a search's ranges (LOW:HIGH[:log], V1,V2,...)
    storage   the study storage: embedded SQLite, PostgreSQL, a journal file; refusals in words
    engine    the Optuna study: create, queue trials, stop, resume, take a trial, the pruner
    work      a worker: trials trained as runs of this machine's run store, reported, told
    records   trials (or older studies' runs) as plain records
    answer    the answer: intervals, every pair with Holm, the best configuration, named runs
    estimate  how long, before and while it runs
    stats     Student-t intervals, paired differences, paired t-test, Holm
    api       what the command line and the pages call

``python -m flowlib.study`` (``__main__.py``) is the command; its code is in ``flowlib.cli.study``.
"""
