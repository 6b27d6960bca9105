"""Studies: is one setting really better than another, over several paired seeds?

    spec   StudySpec, the paper presets, planning, starting and answering a study
    stats  Student-t intervals and paired differences

``python -m flowlib.study`` (``__main__.py``) is the command; its code is in ``flowlib.cli.study``.
"""
