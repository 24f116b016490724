"""Read files written by ``torch.save`` without PyTorch, and without running code from them.

A ``.pth`` file is a Python pickle. Unpickling an untrusted pickle can call
any function (``os.system`` included), so this module never uses a plain
unpickler: :class:`_RestrictedUnpickler` resolves only the handful of names a
tensor state_dict needs and refuses every other one *before* anything is
called. What it accepts:

- containers: dict, ``collections.OrderedDict``, list, tuple, set, and plain
  numbers, strings, bytes, booleans and None;
- tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` /
  ``_rebuild_parameter``, whose storages are the usual ``torch.FloatStorage``,
  ``DoubleStorage``, ``HalfStorage``, ``BFloat16Storage`` and the integer and
  boolean ones. Tensors become NumPy arrays (bfloat16 as float32, exactly).

Both layouts ``torch.save`` has used are read:

- zip (PyTorch >= 1.6, the default): ``<name>/data.pkl`` plus one raw file
  per storage, ``<name>/data/<key>``;
- legacy (``_use_new_zipfile_serialization=False``): pickles of a magic
  number, a protocol version and system info, then the object, then the list
  of storage keys, then each storage as an int64 element count and its bytes.

Every tensor's size, stride and offset are checked against its storage
before a view is taken, so a crafted file cannot read outside it. The work is
bounded before it is done: the pickle is scanned (parsed, not run) for its
size, its number of opcodes and of memo references; storages are inflated in
chunks within one budget for the file; nested data deeper than
:data:`MAX_DEPTH` or holding more than :data:`MAX_ITEMS` elements is refused;
error messages show the file's values through :mod:`reprlib`, so they never
expand data that shares references. The names the unpickler accepts cannot be
changed by the file (no ``BUILD`` on them), so one file cannot affect the next.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import pickletools
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np

from digitnet.data.formats import (
    MAX_ARRAY_BYTES,
    SHORT,
    ZIP_ERRORS,
    check_empty_shape,
    first_line,
    read_exactly,
    read_upto,
)
from digitnet.errors import ModelFileError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# A state_dict's pickle is kilobytes (its tensors live beside it); these bound a crafted one.
MAX_PICKLE_BYTES = 16 << 20
MAX_PICKLE_OPS = 1_000_000  # opcodes in one pickle
MAX_MEMO_REFS = 100_000  # references back to an object already built (GET opcodes)
MAX_DEPTH = 64  # containers inside containers (a state_dict nests 2 or 3)
MAX_ITEMS = 1_000_000  # elements of all the containers, each counted once

# torch storage class -> NumPy dtype of its elements ("bfloat16" is read as uint16, then widened).
STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

# Callables a malicious pickle reaches for; refusing them gets the sternest message.
CODE_RUNNERS = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "builtins",
    "sys",
    "shutil",
    "importlib",
    "runpy",
    "socket",
    "pty",
    "code",
    "codeop",
    "ctypes",
    "pickle",
    "_pickle",
    "marshal",
    "types",
    "functools",
    "operator",
    "webbrowser",
    "platform",
    "multiprocessing",
    "asyncio",
    "io",
    "pathlib",
    "tempfile",
    "signal",
    "threading",
    "pydoc",
    "timeit",
    "cProfile",
    "profile",
    "pdb",
    "bdb",
    "trace",
}

SAVE_STATE_DICT = (
    'save the weights instead, with torch.save(model.state_dict(), "model.pth"), and import that file'
)


class StorageType:
    """What ``torch.FloatStorage`` and friends resolve to: just an element type, unchangeable by a file."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype("uint16" if STORAGE_DTYPES[name] == "bfloat16" else STORAGE_DTYPES[name])

    def __setstate__(self, state):
        raise ModelFileError(f"the file tries to change torch.{self.name}, which torch.save never does")

    def __repr__(self):
        return f"torch.{self.name}"


class Allowed:
    """A function the file may call, wrapped so that the file cannot change it (``BUILD``)."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def __setstate__(self, state):
        raise ModelFileError(
            f"the file tries to change {self.function.__name__}, which torch.save never does"
        )


class Storage:
    """A flat run of elements in the file; read only when a tensor needs it."""

    __slots__ = ("type", "key", "numel", "_read", "_array")

    def __init__(self, storage_type: StorageType, key: str, numel: int, read):
        self.type, self.key, self.numel, self._read, self._array = storage_type, key, numel, read, None

    def array(self) -> np.ndarray:
        """The storage's elements, shape ``(numel,)``, in native byte order."""
        if self._array is None:
            self._array = self._read(self)
        return self._array

    def __setstate__(self, state):
        raise ModelFileError("the file tries to change a storage's state, which torch.save never does")


class Tensor:
    """A tensor waiting for its storage: ``(storage, offset, size, stride)`` in elements."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, Storage):
            raise ModelFileError(f"a tensor refers to {type(storage).__name__}, not to a storage in the file")
        for name, value in (("offset", offset), ("size", size), ("stride", stride)):
            values = value if isinstance(value, tuple) else (value,)
            if not all(type(v) is int and v >= 0 for v in values) or len(values) > MAX_DEPTH:
                raise ModelFileError(f"a tensor has an impossible {name} {SHORT.repr(value)}")
        if len(size) != len(stride):
            raise ModelFileError(f"a tensor has size {SHORT.repr(size)} but stride {SHORT.repr(stride)}")
        check_empty_shape(size, storage.type.dtype.itemsize, "a tensor", ModelFileError)
        if int(np.prod(size, dtype=np.float64)) > storage.numel:
            raise ModelFileError(
                f"a tensor of size {size} has more elements than its storage ({storage.numel}): "
                "torch.save never writes that for a state_dict"
            )
        if 0 not in size:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= storage.numel:
                raise ModelFileError(
                    f"a tensor of size {size} at offset {offset} reaches element {last} "
                    f"of a storage of {storage.numel}: the file is damaged or crafted"
                )
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):
        raise ModelFileError("the file tries to change a tensor's state, which a state_dict never needs")

    def to_numpy(self) -> np.ndarray:
        """A C-contiguous array of shape ``size``.

        A view of the storage's array when the tensor lies in it contiguously (as every tensor
        of a saved state_dict does, so tensors sharing a storage share memory, as in PyTorch);
        otherwise a copy.
        """
        data = self.storage.array()
        numel = math.prod(self.size)
        contiguous = tuple(math.prod(self.size[i + 1 :]) for i in range(len(self.size)))
        if 0 in self.size:
            out = np.zeros(self.size, data.dtype)
        elif self.stride == contiguous or numel == 1:
            out = data[self.offset : self.offset + numel].reshape(self.size)
        else:
            item = data.itemsize
            view = np.lib.stride_tricks.as_strided(
                data[self.offset :], self.size, tuple(s * item for s in self.stride), writeable=False
            )
            out = np.array(view, order="C")
        if self.storage.type.name == "BFloat16Storage":  # bfloat16 is float32's top half
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, Tensor):
        raise ModelFileError("a parameter in the file does not hold a tensor")
    return data


def _encode(text, encoding="latin1"):
    """``_codecs.encode``, which protocol-2 pickles use for bytes; only latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ModelFileError(
            "the file asks for a text encoding other than latin-1, which torch.save never does"
        )
    return text.encode("latin-1")


# Classes here are immutable types (BUILD on them fails); functions are wrapped in Allowed.
ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): Allowed(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): Allowed(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): Allowed(_rebuild_parameter),
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): Allowed(_encode),
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


def python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol-2 pickles name Python 2 modules (``__builtin__``, ``commands``); map them as pickle does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED` names and turns storages into :class:`Storage`."""

    def __init__(self, file, path: Path, storage_reader, pickle_bytes: bytes | None = None):
        super().__init__(file)
        self.path, self.storage_reader, self.pickle_bytes = path, storage_reader, pickle_bytes
        self.storages: dict[str, Storage] = {}

    def find_class(self, module, name):
        module, name = python3_name(module, name)
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise ModelFileError(_refusal(self.path, module, name, self.pickle_bytes))

    def persistent_load(self, pid):
        if not (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
            and isinstance(pid[2], str)
            and type(pid[4]) is int
            and pid[4] >= 0
            and (len(pid) == 5 or pid[5] is None)
        ):
            raise ModelFileError(
                f"{self.path}: a storage reference in the file is not one torch.save writes: {SHORT.repr(pid)}"
            )
        storage_type, key, numel = pid[1], pid[2], pid[4]
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = Storage(storage_type, key, numel, self.storage_reader)
        elif known.type.name != storage_type.name or known.numel != numel:
            raise ModelFileError(f"{self.path}: storage {key} is described twice, differently")
        return known


def _refusal(path: Path, module: str, name: str, pickle_bytes: bytes | None) -> str:
    """The message for a name the file asks for that a state_dict never needs."""
    what = f"{module}.{name}"
    names = _pickle_globals(pickle_bytes) if pickle_bytes is not None else []
    if module.split(".")[0] in CODE_RUNNERS and not module.startswith("torch.nn"):
        return (
            f"refused {path}: it asks to call {what} while loading, which a PyTorch state_dict never does; "
            "the file may be malicious. Nothing from it was run."
        )
    if any(m.startswith("torch.nn.") for m, _ in names):
        return (
            f"{path} holds a whole pickled model ({what}), not a state_dict of weights: loading it would mean "
            f"running its code, so digitnet refuses. In PyTorch, {SAVE_STATE_DICT}."
        )
    return (
        f"{path} refers to {what}, which is not part of a tensor state_dict (digitnet reads tensors, numbers, "
        f"strings, lists and dicts; nothing from the file was run). If it is a whole model saved with "
        f"torch.save(model), {SAVE_STATE_DICT}."
    )


def _pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every ``module.name`` a pickle refers to, found by parsing it without running it."""
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                module, _, name = arg.partition(" ")
                found.append(python3_name(module, name))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(python3_name(strings[-2], strings[-1]))
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a damaged pickle: the names found so far are all there is to say
        pass
    return found


def _scan(data: bytes, path: Path) -> None:
    """Refuse a pickle too big for a state_dict, before running it: bytes, opcodes, memo references,
    and memo numbers out of sequence.

    A pickler numbers the objects it memoizes 0, 1, 2 ..., so the object put at number ``n`` comes
    after more than ``n`` steps. A crafted number is a memory bomb: the unpickler grows its memo to
    reach it (19 bytes putting an object at 841,968,993 took 13 GB and 35 s, before this check).
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise ModelFileError(f"{path}: its pickle holds {len(data):,} bytes, far more than a state_dict's")
    ops = refs = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # pickletools on a crafted string escape
            for op, arg, _ in pickletools.genops(data):
                ops += 1
                refs += op.name in ("GET", "BINGET", "LONG_BINGET")
                if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg >= ops:
                    raise ModelFileError(
                        f"{path}: its pickle puts an object at memo number {arg:,} after {ops:,} steps, "
                        "out of sequence as no pickler writes it; it is damaged or crafted"
                    )
                if ops > MAX_PICKLE_OPS or refs > MAX_MEMO_REFS:
                    break
    except ModelFileError:
        raise
    except Exception:  # a damaged pickle: the unpickler says how, below
        pass
    if ops > MAX_PICKLE_OPS or refs > MAX_MEMO_REFS:
        raise ModelFileError(
            f"{path}: its pickle has more than {MAX_PICKLE_OPS:,} steps or {MAX_MEMO_REFS:,} "
            "references to shared objects, far more than a state_dict's; it is damaged or crafted"
        )


def _unpickle(data: bytes, path: Path, storage_reader):
    """Unpickle ``data`` with the restricted unpickler; any failure becomes a :class:`ModelFileError`."""
    _scan(data, path)
    unpickler = _RestrictedUnpickler(io.BytesIO(data), path, storage_reader, pickle_bytes=data)
    try:
        return unpickler.load(), unpickler.storages
    except ModelFileError:
        raise
    except RecursionError:
        raise ModelFileError(f"{path}: its pickle nests too deeply to be a state_dict") from None
    except Exception as exc:  # UnpicklingError, EOFError, TypeError from a bad call ...
        raise ModelFileError(
            f"{path}: its pickle cannot be read as a state_dict ({type(exc).__name__}: {first_line(exc)[:160]})"
        ) from None


def _materialize(obj, done=None, active=None, depth=0, items=None):
    """Replace every :class:`Tensor` in a nest of containers by a NumPy array; dicts become plain dicts.

    An object met twice is converted once (``done``), so shared references cannot multiply the work;
    an object that contains itself (``active``), nesting deeper than :data:`MAX_DEPTH`, more than
    :data:`MAX_ITEMS` elements in all, and tensors taking more than :data:`MAX_ARRAY_BYTES` together
    (views of one storage count each time) are refused.
    """
    done = {} if done is None else done
    active = set() if active is None else active
    items = [0, 0] if items is None else items  # elements and tensor bytes so far, shared by the walk
    if not isinstance(obj, (Tensor, dict, list, tuple, set, frozenset)):
        return obj
    key = id(obj)
    if key in done:
        return done[key]
    if key in active:
        raise ModelFileError("the file's data refers to itself in a loop, which a state_dict never does")
    if depth > MAX_DEPTH:
        raise ModelFileError(
            f"the file's data nests deeper than {MAX_DEPTH} levels, which a state_dict never does"
        )
    items[0] += 1 if isinstance(obj, Tensor) else len(obj)
    if items[0] > MAX_ITEMS:
        raise ModelFileError(
            f"the file's data holds more than {MAX_ITEMS:,} items, far more than a state_dict"
        )
    if isinstance(obj, Tensor):  # tensors may view one storage many times: count what the copies take
        items[1] += math.prod(obj.size) * obj.storage.type.dtype.itemsize
        if items[1] > MAX_ARRAY_BYTES:
            raise ModelFileError(
                f"the file's tensors take more than {MAX_ARRAY_BYTES:,} bytes together, more than digitnet "
                "reads from one file"
            )
    active.add(key)
    if isinstance(obj, Tensor):
        out = obj.to_numpy()
    elif isinstance(obj, dict):
        out = {k: _materialize(v, done, active, depth + 1, items) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [_materialize(v, done, active, depth + 1, items) for v in obj]
    else:  # a tuple, a set: a set of arrays cannot be (they have no hash)
        try:
            out = type(obj)(_materialize(v, done, active, depth + 1, items) for v in obj)
        except TypeError:
            raise ModelFileError(
                "the file's data holds tensors in a set, which a state_dict never does"
            ) from None
    active.discard(key)
    done[key] = out
    return out


def read_torch_file(path):
    """Load what ``torch.save`` wrote, with tensors as NumPy arrays, without PyTorch and without running code.

    Parameters
    ----------
    path : str or Path
        A ``.pth`` / ``.pt`` file in the zip or the legacy layout.

    Returns
    -------
    The saved object: typically a dict ``{"0.weight": ndarray (out, in), "0.bias": ndarray (out,), ...}``,
    or a checkpoint dict holding one.

    Raises
    ------
    ModelFileError
        When the file is missing, damaged, not a ``torch.save`` file, or asks for anything beyond tensors
        and plain containers (a whole pickled model, a crafted file).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist or is not a file")
    try:
        return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except ModelFileError as exc:  # name the file, once
        if str(path) in str(exc):
            raise
        raise ModelFileError(f"{path}: {exc}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: its data nests too deeply to be a state_dict") from None
    except ZIP_ERRORS as exc:
        raise ModelFileError(
            f"{path} cannot be read as a torch.save file ({type(exc).__name__}: {first_line(exc)})"
        ) from None


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise ModelFileError(
                f"{path} is a TorchScript archive (torch.jit.save), not a state_dict: {SAVE_STATE_DICT}"
            )
        if not pickles:
            if any(n.endswith(".npy") for n in names):
                raise ModelFileError(
                    f"{path} is a NumPy .npz file, not a torch.save file "
                    "(a digitnet model needs no importing: use it as it is)"
                )
            raise ModelFileError(f"{path} is a zip file but not one torch.save wrote (it has no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            with archive.open(prefix + "byteorder") as fh:
                big_endian = read_upto(fh, 16).strip() == b"big"
        budget = [MAX_ARRAY_BYTES]

        def read_storage(storage: Storage) -> np.ndarray:
            member = f"{prefix}data/{storage.key}"
            expected = storage.numel * storage.type.dtype.itemsize
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise ModelFileError(f"{path}: storage {member} is missing from the archive") from None
            if info.file_size != expected:
                raise ModelFileError(
                    f"{path}: storage {member} holds {info.file_size:,} bytes, its tensors need {expected:,}"
                )
            if expected > budget[0]:
                raise ModelFileError(
                    f"{path}: storage {member} claims {expected:,} bytes; digitnet reads at most "
                    f"{MAX_ARRAY_BYTES:,} bytes of tensors from one file"
                )
            budget[0] -= expected
            with archive.open(info) as fh:  # inflated in chunks, never past the size it declares
                data = read_exactly(fh, expected, f"{path}: storage {member}", ModelFileError)
            dtype = storage.type.dtype.newbyteorder(">" if big_endian else "<")
            return data.view(dtype).astype(storage.type.dtype)

        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise ModelFileError(f"{path}: its data.pkl is far larger than a state_dict's")
        with archive.open(pickles[0]) as fh:
            pickled = read_upto(fh, MAX_PICKLE_BYTES + 1)
        obj, _ = _unpickle(pickled, path, read_storage)
        return _materialize(obj)


def _read_legacy(path: Path):
    if path.stat().st_size > MAX_ARRAY_BYTES + MAX_PICKLE_BYTES:
        raise ModelFileError(
            f"{path} holds {path.stat().st_size:,} bytes, more than digitnet reads from one torch.save file"
        )
    raw = path.read_bytes()
    stream = io.BytesIO(raw)
    header = []
    for _ in range(3):  # magic number, protocol version, system info: plain numbers and a dict
        start = stream.tell()
        try:
            end = _pickle_end(raw, start)
        except ValueError:
            raise ModelFileError(
                f"{path} is not a file torch.save wrote (neither its zip nor its legacy layout)"
            ) from None
        value, _ = _unpickle(raw[start:end], path, None)
        header.append(value)
        stream.seek(end)
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
        raise ModelFileError(f"{path} is not a file torch.save wrote (its legacy header is wrong)")
    if isinstance(header[2], dict) and header[2].get("little_endian") is False:
        raise ModelFileError(
            f"{path} was saved on a big-endian machine in the legacy layout, which digitnet does not read"
        )
    start = stream.tell()
    end = _pickle_end(raw, start)
    blobs: dict[str, np.ndarray] = {}
    obj, storages = _unpickle(raw[start:end], path, lambda s: blobs[s.key])
    offset = _pickle_end(raw, end)
    keys, _ = _unpickle(raw[end:offset], path, None)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise ModelFileError(f"{path}: its list of storages is not a list of names")
    for key in keys:
        if key not in storages:
            raise ModelFileError(f"{path}: storage {key} is stored but no tensor uses it")
        storage = storages[key]
        (count,) = struct.unpack_from("<q", raw, offset)
        size = count * storage.type.dtype.itemsize
        if count != storage.numel or offset + 8 + size > len(raw):
            raise ModelFileError(
                f"{path}: storage {key} should hold {storage.numel} elements; "
                "the file is damaged or truncated"
            )
        blobs[key] = np.frombuffer(raw, storage.type.dtype.newbyteorder("<"), count, offset + 8).astype(
            storage.type.dtype
        )
        offset += 8 + size
    missing = sorted(set(storages) - set(blobs))
    if missing:
        raise ModelFileError(f"{path}: the data of storages {missing[:5]} is missing")
    return _materialize(obj)


def _pickle_end(raw: bytes, start: int) -> int:
    """Offset just past the pickle that starts at ``start`` (found by parsing, not running, it)."""
    stream = io.BytesIO(raw)
    stream.seek(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pickletools on a crafted string escape
        for op, _, pos in pickletools.genops(stream):
            if op.name == "STOP":
                return pos + 1
    raise ValueError("no STOP opcode")
