"""What a checkpoint's tensors would cost, read from the file before ``torch.load`` builds any.

``torch.save`` writes a zip: ``<root>/data.pkl``, the pickled object, in which every tensor is a
call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and every storage a
reference ``("storage", FloatStorage, key, location, numel)``; and one entry ``<root>/data/<key>``
per storage, holding its bytes. ``torch.load`` trusts those numbers: a 46 KB file can declare a
tensor of a billion elements over a one-value storage (stride 0), which loads for free, and the
first thing that reads it (``isfinite``, ``load_state_dict``) asks the allocator for gigabytes.

:func:`check_tensor_bounds` replays ``data.pkl`` with an unpickler that builds nothing: a storage
becomes its declared element size, count and key; a tensor its storage, offset, size and stride;
any other global becomes an inert placeholder (``torch.load(weights_only=True)`` then judges the
file's globals as it always does). The file is refused, in words, unless

* every storage is exactly as large as its entry in the file (so storages hold what was read),
* every tensor addresses values inside its storage, each value at most once (no stride tricks:
  its dimensions, by increasing stride, each step past everything the smaller ones reach), and
* all tensors together address no more bytes than the file's storages hold (a value belongs to
  one tensor), which bounds the memory of anything that reads every tensor by the file's size.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

__all__ = ["TensorBoundsError", "check_tensor_bounds"]

# Bytes per element of the storage types torch.save names (``torch.<Type>Storage``).
STORAGE_ITEMSIZE = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}
MAX_DIMS = 64  # torch's own limit on a tensor's dimensions


class TensorBoundsError(ValueError):
    """The file's tensors or storages claim more than the file holds; the message says which."""


@dataclass(frozen=True)
class _Storage:
    key: str
    itemsize: int
    numel: int


@dataclass(frozen=True)
class _View:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    itemsize: int


class _Inert:
    """Whatever a global other than a tensor or a storage builds: nothing, whatever it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TensorBoundsError(f"a tensor's {what} is not a list of at most {MAX_DIMS} whole numbers")
    return tuple(value)


def _view(storage: Any, offset: Any, size: Any, stride: Any, itemsize: int | None = None) -> _View:
    if not isinstance(storage, _Storage):
        raise TensorBoundsError("a tensor is built on something that is not one of the file's storages")
    if not isinstance(offset, int) or offset < 0:
        raise TensorBoundsError(f"a tensor starts at offset {offset!r}")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or min(size + stride, default=0) < 0:
        raise TensorBoundsError(f"a tensor has size {size} with strides {stride}")
    return _View(storage, offset, size, stride, storage.itemsize if itemsize is None else itemsize)


def _rebuild_tensor_v2(storage, offset, size, stride, *rest) -> _View:
    return _view(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *rest) -> _View:
    # v3 names a dtype that differs from the storage's: only its element size matters here
    itemsize = getattr(dtype, "itemsize", None)
    if not isinstance(itemsize, int) or itemsize < 1:
        raise TensorBoundsError("a tensor names an element type this check does not know")
    return _view(storage, offset, size, stride, itemsize)


def _rebuild_parameter(data, *rest):
    return data


REBUILDERS = {"_rebuild_tensor_v2": _rebuild_tensor_v2, "_rebuild_tensor_v3": _rebuild_tensor_v3,
              "_rebuild_parameter": _rebuild_parameter, "_rebuild_parameter_with_state": _rebuild_parameter}


class _Dict(dict):
    """``collections.OrderedDict`` as far as sizes go; a state dict's ``_metadata`` lands here."""


class _DtypeSize:
    """``torch.float32`` and friends, as far as v3 needs them: an element size."""

    def __init__(self, itemsize: int):
        self.itemsize = itemsize


DTYPE_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
                  "int16": 2, "int8": 1, "uint8": 1, "bool": 1, "uint16": 2, "uint32": 4, "uint64": 8,
                  "complex64": 8, "complex128": 16}


class _ShapeUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO):
        super().__init__(stream, encoding="utf-8")
        self.views: list[_View] = []
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name.startswith("_rebuild"):
            if name not in REBUILDERS:
                raise TensorBoundsError(f"it holds a kind of tensor ({name}) that Flow Lab never writes")
            rebuild = REBUILDERS[name]

            def record(*args):
                view = rebuild(*args)
                if isinstance(view, _View) and rebuild is not _rebuild_parameter:
                    self.views.append(view)
                return view
            return record
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            if name not in STORAGE_ITEMSIZE:
                raise TensorBoundsError(f"it holds a kind of storage ({name}) that Flow Lab never writes")
            return ("storage-type", STORAGE_ITEMSIZE[name])
        if module == "torch" and name in DTYPE_ITEMSIZE:
            return _DtypeSize(DTYPE_ITEMSIZE[name])
        if (module, name) == ("collections", "OrderedDict"):
            return _Dict
        if (module, name) == ("torch", "Size"):
            return tuple
        return _Inert

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], tuple) and pid[1][:1] == ("storage-type",)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise TensorBoundsError("a storage reference in it is malformed")
        key = pid[2].decode("ascii", "replace") if isinstance(pid[2], bytes) else str(pid[2])
        storage = _Storage(key, pid[1][1], pid[4])
        known = self.storages.setdefault(key, storage)
        if known != storage:
            raise TensorBoundsError(f"its storage {key!r} is declared twice with different sizes")
        return known


def _addressed(view: _View) -> tuple[int, int]:
    """(elements the view holds, the highest element of its storage it reaches + 1); raises
    when two of its indices reach the same element."""
    numel = math.prod(view.size)
    if numel == 0:
        return 0, 0
    reach = 0  # the highest offset the dimensions sorted so far can reach
    for size, stride in sorted((d for d in zip(view.size, view.stride) if d[0] > 1), key=lambda d: d[1]):
        if stride <= reach:
            raise TensorBoundsError(
                f"a tensor of {numel:,} elements reads the same stored values more than once "
                f"(size {view.size}, strides {view.stride}), a trick that makes a small file "
                "unpack into a large tensor")
        reach += (size - 1) * stride
    return numel, view.offset + reach + 1


def check_tensor_bounds(archive: zipfile.ZipFile) -> None:
    """Refuse (:class:`TensorBoundsError`) a torch.save zip whose tensors claim more than it holds."""
    names = {info.filename: info for info in archive.infolist()}
    pickles = [n for n in names if PurePosixPath(n).name == "data.pkl" and n.count("/") == 1]
    if len(pickles) != 1:
        raise TensorBoundsError("it is not the zip that torch.save writes (no single data.pkl)")
    root = pickles[0].split("/")[0]
    unpickler = _ShapeUnpickler(io.BytesIO(archive.read(pickles[0])))
    try:
        unpickler.load()
    except TensorBoundsError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle fails in many ways
        raise TensorBoundsError(f"its data.pkl cannot be read ({type(exc).__name__})") from None
    stored = 0
    for storage in unpickler.storages.values():
        entry = names.get(f"{root}/data/{storage.key}")
        declared = storage.numel * storage.itemsize
        if entry is None or entry.file_size != declared:
            holds = "no entry" if entry is None else f"an entry of {entry.file_size:,} bytes"
            raise TensorBoundsError(f"its storage {storage.key!r} declares {declared:,} bytes but the "
                                    f"file has {holds} for it")
        stored += declared
    addressed = 0
    for view in unpickler.views:
        numel, end = _addressed(view)
        if end > view.storage.numel * view.storage.itemsize // view.itemsize:
            raise TensorBoundsError(
                f"a tensor of size {view.size} reaches element {end - 1:,} of its storage "
                f"{view.storage.key!r}, which holds {view.storage.numel:,}")
        addressed += numel * view.itemsize
    if addressed > stored:
        raise TensorBoundsError(f"its tensors address {addressed:,} bytes but its storages hold only "
                                f"{stored:,}: stored values are counted more than once")
