"""One training session of one run, from the run store to a checkpoint and a final score.

``python -m flowlib.train`` (``__main__.py``) is the command; the command-line code is in
``flowlib.cli.train``, above this package.
"""
