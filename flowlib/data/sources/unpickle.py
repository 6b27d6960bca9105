"""Reading pickled data files without letting them run code.

MNIST's and CIFAR-10's python copies are pickles.  ``pickle.load`` on such a file would call
whatever function the file names (``os.system`` included); ``RestrictedUnpickler`` rebuilds
numpy arrays of numbers, dicts, lists, strings and numbers, and refuses everything else before
looking it up, numpy arrays of Python objects included (their contents are whatever the file
says, of any shape).

What it builds costs what was read: every element of a list or dict, every level of nesting,
every reference to an object seen before takes at least one byte of the file. What the caller
does next need not: a list that holds the same nested list ten thousand times is a few bytes
per reference, and ``np.asarray`` on it expands every copy. So a caller checks the types and
lengths of what it got before converting anything (``cifar10.parse_cifar_batch`` does).
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from typing import Any

import numpy as np

from .common import DatasetError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles of bytes at protocol <= 2 call _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


class _RefusedContent(pickle.UnpicklingError):
    """The pickle holds something other than plain data (e.g. a numpy array of Python objects)."""


def _numeric_dtype(*args: Any, **kwargs: Any) -> np.dtype:
    # Every dtype in a pickle, nested field types included, is rebuilt through here.
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise _RefusedContent("a numpy array of Python objects")
    return dtype


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _numeric_dtype}
    # numpy 1 pickles say numpy.core, numpy 2 pickles say numpy._core: same functions.
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle named a function or class outside the allowed numpy set."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numeric numpy arrays, dicts, lists, strings and numbers — nothing else.

    Any other global (``os.system``, ``builtins.eval``, a class with ``__reduce__``) raises
    ``pickle.UnpicklingError`` before it is even looked up.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def restricted_load(stream: io.BufferedIOBase, what: str, encoding: str = "latin1") -> Any:
    """Unpickle a data file with ``RestrictedUnpickler``; problems become ``DatasetError``.

    ``latin1`` is what numpy needs for arrays pickled by Python 2 (MNIST, CIFAR-10).
    """
    try:
        return RestrictedUnpickler(stream, encoding=encoding).load()
    except _RefusedGlobal as exc:
        raise DatasetError(
            f"Refused to load {what}: the file asks to run {exc}, and only numpy array data "
            "is allowed. It is not a plain data file; delete it and get a fresh copy."
        ) from None
    except _RefusedContent as exc:
        raise DatasetError(
            f"Refused to load {what}: it holds {exc}, and only numbers, strings and numeric arrays "
            "are allowed. It is not a plain data file; delete it and get a fresh copy."
        ) from None
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{what} is not a readable pickle ({exc}). Get a fresh copy.") from None
    except (EOFError, OSError, ValueError, TypeError, struct.error, AttributeError) as exc:
        raise DatasetError(
            f"{what} is damaged or truncated ({type(exc).__name__}: {exc}). Get a fresh copy."
        ) from None
