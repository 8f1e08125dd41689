"""Read a legacy (non-zip) PyTorch state-dict file as numpy arrays, without PyTorch.

`torch.save` before PyTorch 1.6 (and with `_use_new_zipfile_serialization=False`) writes five things in a
row: a pickled magic number, the protocol version (1001), a system-info dict, the pickled state dict whose
tensors refer to storages by persistent id ('storage', StorageType, key, device, numel, view), the pickled
list of storage keys, and then each storage's raw bytes, preceded by its element count as int64.

A pickle can run any callable it names, so the state dict is read by an unpickler that resolves exactly the
globals a state dict needs (OrderedDict, the tensor-rebuild function, the storage types) to harmless local
stand-ins and refuses every other one: nothing from the file is ever executed.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION

# Storage types a state dict may name -> numpy dtype (little-endian, as the file's sys_info says).
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class TorchFileError(ValueError):
    """The file is not a legacy PyTorch state dict this reader accepts (the message names the file)."""


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass
class _Storage:
    key: str
    dtype: str
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor_v2: remember where the tensor lies; arrays come later."""
    return _TensorRef(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only a state dict's globals; any other global is refused before anything runs."""

    def __init__(self, fh: IO[bytes], path: Path) -> None:
        super().__init__(fh)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise TorchFileError(f"{self.path}: refuses to load global {module}.{name} (only a plain state dict of "
                             "tensors is read; this file may run code if loaded with pickle)")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', type, key, device, numel, view): view is None unless the tensor shares a larger storage.
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and pid[5] is None):
            raise TorchFileError(f"{self.path}: unexpected persistent id {str(pid)[:80]}")
        _, kind, key, _device, numel, _view = pid
        if key not in self.storages:
            self.storages[key] = _Storage(str(key), kind.dtype, int(numel))
        return self.storages[key]


def _header(fh: IO[bytes], path: Path) -> None:
    """Check the magic number and protocol; skip the system-info dict (it holds only plain values)."""
    try:
        magic = _NoGlobals(fh, path).load()
    except (pickle.UnpicklingError, EOFError, TorchFileError, ValueError):
        magic = None
    if magic != MAGIC:
        raise TorchFileError(f"{path}: not a legacy PyTorch file (no magic number; a zip-format .pt/.pth "
                             "is not supported)")
    # Protocol and sys_info are ints, bools and dicts: a loader that refuses every global reads them safely.
    protocol = _NoGlobals(fh, path).load()
    if protocol != PROTOCOL:
        raise TorchFileError(f"{path}: PyTorch file protocol {protocol!r}, expected {PROTOCOL}")
    info = _NoGlobals(fh, path).load()
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise TorchFileError(f"{path}: only little-endian files are supported")


class _NoGlobals(pickle.Unpickler):
    def __init__(self, fh: IO[bytes], path: Path) -> None:
        super().__init__(fh)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        raise TorchFileError(f"{self.path}: refuses to load global {module}.{name} in the file header")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy PyTorch state dict, by key, as a C-contiguous numpy array (a copy)."""
    path = Path(path)
    with path.open("rb") as fh:
        _header(fh, path)
        unpickler = _StateDictUnpickler(fh, path)
        state = unpickler.load()
        keys = _NoGlobals(fh, path).load()
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise TorchFileError(f"{path}: expected a state dict and a storage-key list")
        for key in keys:
            storage = unpickler.storages.get(key)
            if storage is None:
                raise TorchFileError(f"{path}: storage {key!r} is listed but no tensor uses it")
            count = struct.unpack("<q", fh.read(8))[0]
            dtype = np.dtype(storage.dtype)
            blob = fh.read(count * dtype.itemsize)
            if count != storage.numel or len(blob) != count * dtype.itemsize:
                raise TorchFileError(f"{path}: storage {key} is truncated or has the wrong size "
                                     f"({len(blob)} bytes, expected {storage.numel * dtype.itemsize})")
            storage.data = np.frombuffer(blob, dtype=dtype)
    out: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef) or ref.storage.data is None:
            raise TorchFileError(f"{path}: entry {name!r} is not a tensor with stored data")
        data = ref.storage.data
        item = data.itemsize
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) if all(ref.shape) else -1
        if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= data.size:
            raise TorchFileError(f"{path}: tensor {name!r} reaches past its storage")
        view = np.lib.stride_tricks.as_strided(data[ref.offset:], shape=ref.shape,
                                               strides=tuple(s * item for s in ref.stride), writeable=False)
        out[str(name)] = np.array(view)
    return out
