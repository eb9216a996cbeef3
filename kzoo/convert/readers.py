"""Checkpoint readers: PyTorch `.pth`/`.pt`/`.bin` and `.safetensors` files as NumPy arrays, executing nothing.

A PyTorch checkpoint is a pickle, and unpickling can run any code the file
names. `torch.load(weights_only=True)` guards against that with an allowlist
of globals; this reader does the same without torch (kzoo does not depend on
it): only an ordered dict, the tensor-rebuilding functions and the storage
types may appear, and anything else is refused before it is called. Both of
torch's formats are read: the zip archive (`data.pkl` + `data/<key>`, torch
>= 1.6) and the older single-stream pickle (torchvision's 2017 files).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

# torch storage type -> NumPy dtype (bfloat16 is read as uint16 and widened).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely: unsafe, truncated, or not a state dict."""


class _Storage:
    """A torch storage as the pickle names it: its dtype and where its bytes are."""

    def __init__(self, dtype, read):
        self.dtype, self._read, self._array = dtype, read, None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.frombuffer(self._read(), dtype=np.dtype(self.dtype).newbyteorder("<"))
        return self._array


class _Tensor:
    """A tensor as the pickle describes it; its bytes are read when `array()` is called (legacy files
    store them after the pickle)."""

    def __init__(self, storage, offset, size, stride, *_):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.array()
        needed = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if needed > data.size:
            raise CheckpointError(f"a tensor of shape {self.size} reaches past its storage ({data.size} elements).")
        if self.size:
            array = np.lib.stride_tricks.as_strided(
                data[self.offset:], shape=self.size, strides=tuple(s * data.itemsize for s in self.stride),
                writeable=False,
            )
        else:  # A scalar, such as BatchNorm's num_batches_tracked.
            array = data[self.offset]
        array = np.array(array, dtype=data.dtype.newbyteorder("="))
        if self.storage.dtype is np.uint16:  # bfloat16: the top half of a float32.
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_parameter(data, *_):
    return data


def _rebuild_from_type(func, _type, args, _state):
    return func(*args)


class _StorageType:
    def __init__(self, name):
        self.name = name


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Tensor"): None,
    ("torch.nn.parameter", "Parameter"): None,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals; storages come from `storage_bytes(key, dtype, numel)`."""

    def __init__(self, file, storage_bytes, path):
        super().__init__(file)
        self._storage_bytes, self._path, self._storages = storage_bytes, path, {}

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise CheckpointError(
                f"{self._path!r} names {module}.{name}, which a weights file has no need of; kzoo reads "
                "only state dicts of tensors and never runs code from a checkpoint. If you trust the file, "
                "load it with torch, save its state_dict() with torch.save or safetensors, and pass that."
            )
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self._path!r} holds an object kzoo does not read: {pid!r:.80}.")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if key not in self._storages:
            dtype = _STORAGE_DTYPES[storage_type.name]
            self._storages[key] = _Storage(dtype, lambda: self._storage_bytes(key, dtype, numel))
        return self._storages[key]


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint file, by key.

    Args:
        path: A `.safetensors` file, or a PyTorch `.pth`/`.pt`/`.bin` file
            (zip or legacy format) holding a state dict, possibly nested under
            "state_dict" or "model" as training scripts save it.

    Returns:
        Key -> NumPy array (float32 for bfloat16 tensors).

    Raises:
        CheckpointError: For a file that names any other Python object (it is
            refused without being run), a truncated or corrupt file, or one
            that holds no dict of tensors.
    """
    return _read(os.fspath(path), arrays=True)


def checkpoint_keys(path) -> list[str]:
    """The keys of a checkpoint's state dict, without reading its tensors' bytes.

    Args:
        path: As for `read_checkpoint`.

    Raises:
        CheckpointError: As `read_checkpoint` does.
    """
    return _read(os.fspath(path), arrays=False)


def _read(path: str, arrays: bool):
    """`read_checkpoint`'s arrays by key, or (`arrays=False`) only the keys."""
    if path.endswith(".safetensors"):
        return _read_safetensors(path, arrays)
    try:
        if zipfile.is_zipfile(path):
            return _read_torch_zip(path, arrays)
        return _read_torch_legacy(path, arrays)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, zipfile.BadZipFile, struct.error, ValueError,
            IndexError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"Could not read the checkpoint {path!r}: it is truncated, corrupt or not a PyTorch file "
            f"({type(error).__name__}: {error}). Download or save it again."
        ) from None


def _read_safetensors(path: str, arrays: bool):
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        if not arrays:
            with safe_open(path, "numpy") as file:  # Reads the header alone.
                return list(file.keys())
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"Could not read the safetensors file {path!r}: {error}. Download it again.") from None


def _read_torch_zip(path: str, arrays: bool):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path!r} is a zip file but not a PyTorch checkpoint (no single data.pkl).")
        prefix = pickles[0][: -len("data.pkl")]
        order = archive.read(f"{prefix}byteorder").decode() if f"{prefix}byteorder" in names else "little"
        if order != "little":
            raise CheckpointError(f"{path!r} was saved on a big-endian machine; kzoo reads little-endian files.")

        def storage_bytes(key, dtype, numel):
            return archive.read(f"{prefix}data/{key}")

        state = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), storage_bytes, path).load()
        return _state_dict(state, path, arrays)  # Inside `with`: the tensors' bytes are read from the archive.


def _read_torch_legacy(path: str, arrays: bool):
    with open(path, "rb") as file:
        header = _SafeUnpickler(file, None, path)
        if header.load() != _LEGACY_MAGIC:
            raise CheckpointError(f"{path!r} is not a PyTorch checkpoint (no zip archive, no legacy magic number).")
        _SafeUnpickler(file, None, path).load()  # Protocol version.
        _SafeUnpickler(file, None, path).load()  # System info.
        storages = {}
        unpickler = _SafeUnpickler(file, lambda key, dtype, numel: storages[key], path)
        state = unpickler.load()
        if not arrays:  # The storages' bytes follow the state dict: no need to read them.
            return _state_dict(state, path, arrays)
        keys = _SafeUnpickler(file, None, path).load()
        for key in keys:  # Each storage: its element count (int64), then its bytes.
            dtype = unpickler._storages[str(key)].dtype
            (numel,) = struct.unpack("<q", file.read(8))
            nbytes = numel * np.dtype(dtype).itemsize
            data = file.read(nbytes)
            if len(data) != nbytes:
                raise CheckpointError(f"{path!r} is truncated: storage {key} has {len(data)} of {nbytes} bytes.")
            storages[str(key)] = data
        return _state_dict(state, path, arrays)


def _state_dict(state, path: str, arrays: bool = True):
    """The unpickled state dict (unwrapped from "state_dict", "model", ...) as arrays by key, or its keys."""
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path!r} holds no state dict (found {type(state).__name__}).")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, _Tensor):
            raise CheckpointError(f"{path!r}: entry {key!r} is a {type(value).__name__}, not a tensor.")
        tensors[str(key)] = value.array() if arrays else None
    return tensors if arrays else list(tensors)
