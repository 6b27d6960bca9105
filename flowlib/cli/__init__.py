"""The command lines, on the top floor: ``python -m flowlib.train`` and ``python -m flowlib.study``.

    train  flags generated from the settings in flowlib.config; torchrun-aware
    study  plan, run, list and show studies
"""
