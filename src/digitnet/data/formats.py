"""The files digits come in, read and written with every field checked.

Three formats, each read into plain NumPy arrays and checked on the way in:

* **IDX** (the original MNIST format, raw or gzip-compressed): a magic number
  ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, then the values,
  big-endian. :func:`read_idx` checks the magic, the type code and that the
  sizes account for every byte of the file; :func:`write_idx` writes one.
* **CSV**: one image per row, label first (785 columns) or pixels only (784
  columns, e.g. Kaggle's ``test.csv``), with or without a header row.
  :func:`write_submission` writes the answer Kaggle takes back: ``ImageId,Label``.
* **NPZ**: Keras's ``mnist.npz`` layout, ``x_train, y_train, x_test, y_test``;
  read by :class:`NpzReader`, which parses each ``.npy`` header itself and
  never unpickles, so a file can never run code.

Images come out as ``uint8`` arrays of shape ``(n, 784)`` (rows of 28 x 28
pixels), labels as ``uint8`` arrays of shape ``(n,)`` with values 0-9.
Anything else raises :class:`~digitnet.errors.DataError` naming the file, what
is wrong with it and what to do.

Every reader is bounded before it allocates: what a header declares is checked
against the bytes present and :data:`MAX_ARRAY_BYTES`; compressed data is
inflated in chunks (:func:`read_capped`, :func:`read_exactly`) and refused past
its cap, so a decompression bomb stops there; a CSV's text is measured against
:data:`MAX_CSV_BYTES` before it is parsed; every error zipfile, zlib, gzip or
lzma can raise (:data:`ZIP_ERRORS`) becomes one message.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import lzma
import math
import os
import re
import reprlib
import secrets
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from digitnet.errors import DataError

PIXELS = 784  # 28 x 28
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK"
# IDX type code -> dtype of the values (stored big-endian).
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# Limits checked before anything is allocated (see the README's "Bad input").
MAX_ARRAY_BYTES = 512 << 20  # all the arrays one IDX, NPZ or model file may hold together, inflated
MAX_CSV_BYTES = 256 << 20  # the text of one CSV, inflated (MNIST's 60,000 rows take 105 MB)
MAX_JSON_BYTES = 256 << 20  # one JSON file of a run or a search (a history takes about 60 bytes a batch)
MAX_CSV_LINE = 64 << 10  # the first line of a CSV (785 fields of 3 digits take 3 KB)
MAX_IDX_DIMS = 32
CHUNK = 1 << 20
# What zipfile, zlib, gzip and lzma raise for an archive that is damaged, crafted or of a kind
# Python cannot open (compression method 99, "zip file version 16.5", an encrypted member, a bad CRC).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


# --------------------------------------------------------------------------- files
def read_file(path, *, gunzip: bool = True, limit: int = MAX_ARRAY_BYTES) -> bytes:
    """Return the bytes of ``path``, decompressed if they start with the gzip magic.

    Parameters
    ----------
    path : str or Path
    gunzip : bool, default True
        Decompress gzip data (detected by its magic bytes, not the file name).
    limit : int, default MAX_ARRAY_BYTES
        The most bytes the file may hold (once decompressed); checked while inflating.

    Raises
    ------
    DataError
        If the file is missing, unreadable, damaged gzip, or larger than ``limit``.
    """
    with open_maybe_gzip(path, gunzip) as fh:
        return read_capped(fh, limit, str(path))


@contextlib.contextmanager
def open_maybe_gzip(path, gunzip: bool = True):
    """Open ``path`` for reading bytes, through gzip if it starts with the gzip magic.

    Every error of the file or of its compression becomes one :class:`DataError` naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file")
    try:
        with open(path, "rb") as raw:
            if gunzip and raw.read(2) == GZIP_MAGIC:
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                    yield fh
            else:
                raw.seek(0)
                yield raw
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: check the path") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path} is a damaged gzip file ({exc or 'it ends early'}): download it again"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_capped(fh, limit: int, where: str, error=DataError) -> bytes:
    """Read a stream to its end, refusing (before holding more) once it passes ``limit`` bytes.

    Raises ``error`` (a :class:`~digitnet.errors.DigitnetError` class) naming ``where``.
    """
    data = read_upto(fh, limit + 1)
    if len(data) > limit:
        raise error(
            f"{where} holds more than {limit:,} bytes (decompressed), more than digitnet reads "
            "from one file: it is damaged, or a decompression bomb"
        )
    return data


def read_upto(fh, n: int) -> bytes:
    """At most ``n`` bytes of a stream, read in chunks (never one allocation of ``n``)."""
    parts, total = [], 0
    while total < n and (chunk := fh.read(min(CHUNK, n - total))):
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def read_exactly(fh, nbytes: int, where: str, error=DataError) -> np.ndarray:
    """Read exactly ``nbytes`` from a stream into a fresh ``uint8`` array of shape ``(nbytes,)``.

    The caller has checked ``nbytes`` against its limit; this reads in chunks, so a stream
    that holds less raises ``error`` (truncated) and one that holds more raises it too.
    """
    out = np.empty(nbytes, np.uint8)
    view, got = memoryview(out), 0
    while got < nbytes:
        n = fh.readinto(view[got : got + CHUNK])
        if not n:
            raise error(f"{where} is truncated: it holds {got:,} bytes of the {nbytes:,} it declares")
        got += n
    if fh.read(1):
        raise error(f"{where} holds more than the {nbytes:,} bytes it declares: the file is damaged")
    return out


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    A reader never sees a half-written file: either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def json_default(value):
    """``json.dumps(..., default=json_default)``: NumPy scalars and arrays as numbers and lists, paths as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def load_json(text, finite: bool = False):
    """``json.loads(text)``, with JSON nested too deep for Python's parser raised as a ValueError, as any
    other text that is not JSON is (the parser itself raises RecursionError there).

    With ``finite``, a number that is not finite (``NaN``, ``Infinity``, or one too large for a float,
    such as ``1e999``) is a ValueError too: Python's parser takes them, but they are not JSON. A whole
    number too large for a float (400 digits) always is: no file of digitnet's holds one, and every
    check of a number meets it as a float at last.
    """
    extra = dict(parse_constant=_not_finite, parse_float=_finite_float) if finite else {}
    try:
        return json.loads(text, parse_int=float_sized_int, **extra)
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None


def read_json(path, finite: bool = False, limit: int = MAX_JSON_BYTES):
    """The JSON value in the file ``path`` (UTF-8), parsed by :func:`load_json`, holding at most ``limit`` bytes.

    Raises ``OSError`` as ``open`` does (``FileNotFoundError`` when there is no such file), and
    ``ValueError`` when the file holds more than ``limit`` bytes (found before more is read: the
    memory stays bounded), is not UTF-8, or is not JSON.
    """
    with open(path, "rb") as fh:
        data = read_upto(fh, limit + 1)
    if len(data) > limit:
        raise ValueError(f"it holds more than {limit:,} bytes, more than digitnet writes to one such file")
    return load_json(data.decode("utf-8"), finite)


def _not_finite(name: str):
    raise ValueError(f"{name} is not a JSON number")


def float_sized_int(text: str) -> int:
    """``json.loads``'s ``parse_int``: a whole number, or a ValueError when it is too large for a float."""
    value = int(text)
    if len(text) > 300:  # a float holds up to 309 digits
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"{text[:40]}... is too large for a number") from None
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


# Values from a file, shown in messages: a few items, a few levels, a bounded length.
SHORT = reprlib.Repr()
SHORT.maxlevel, SHORT.maxstring, SHORT.maxother = 3, 60, 60
SHORT.maxtuple = SHORT.maxlist = SHORT.maxdict = SHORT.maxset = SHORT.maxfrozenset = 8


def shown(value) -> str:
    """A value read from a file as an error line can hold it: :data:`SHORT`'s repr, on one line."""
    return " ".join(SHORT.repr(value).split())


def first_line(exc) -> str:
    """An exception's message cut to its first line (200 characters at most), for an ``error:`` line."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def sniff(path) -> str:
    """Guess a file's format from its first bytes: ``"idx"``, ``"npz"`` or ``"csv"``.

    Raises
    ------
    DataError
        If the file is missing or is none of the three.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: check the path")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:2] == GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(4096)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is a damaged gzip file ({exc}): download it again") from None
    head = head.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    if head[:2] == ZIP_MAGIC:
        return "npz"
    if len(head) >= 4 and head[:2] == b"\0\0" and head[2] in IDX_DTYPES:
        return "idx"
    if b"\0" not in head and re.match(rb"\s*[\w\"']+\s*,", head):
        return "csv"
    raise DataError(
        f"{path} is not an IDX, CSV or NPZ file (it starts with {head[:8]!r}): "
        "pass a folder of IDX files, a .csv or a .npz"
    )


# --------------------------------------------------------------------------- checks
def check_images(x, where: str) -> np.ndarray:
    """Return images as a C-contiguous ``uint8`` array of shape ``(n, 784)``.

    Parameters
    ----------
    x : array_like, shape (n, 28, 28) or (n, 784)
        Whole-number pixel values 0-255, any number dtype.
    where : str
        Named in error messages (a file, or ``file:key``).
    """
    x = np.asarray(x)
    if x.ndim not in (2, 3) or x.shape[1:] not in ((28, 28), (PIXELS,)):
        raise DataError(f"{where}: images have shape {x.shape}; expected (n, 28, 28) or (n, 784)")
    if x.dtype.kind not in "uif":
        raise DataError(f"{where}: images have dtype {x.dtype}; expected numbers 0-255")
    x = x.reshape(len(x), PIXELS)
    if x.dtype != np.uint8 and x.size:
        bad = (x < 0) | (x > 255) | (x != np.round(x))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(
                f"{where}: pixel {j} of image {i} is {x[i, j]}; pixels must be "
                "whole numbers 0-255 (not scaled to 0-1)"
            )
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x)


def check_labels(y, where: str, n: int | None = None) -> np.ndarray:
    """Return labels as a ``uint8`` array of shape ``(n,)`` with values 0-9.

    Parameters
    ----------
    y : array_like, shape (n,) or (n, 1)
    where : str
        Named in error messages.
    n : int, optional
        The number of images the labels belong to.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "uif":
        raise DataError(
            f"{where}: labels have shape {y.shape} and dtype {y.dtype}; expected one number 0-9 per image"
        )
    bad = (y < 0) | (y > 9) | (y != np.round(y)) if y.dtype.kind == "f" else (y < 0) | (y > 9)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: sample {i} has label {y[i]}; labels must be whole numbers 0-9")
    if n is not None and len(y) != n:
        raise DataError(f"{where}: {len(y)} labels for {n} images; they must match one to one")
    return np.ascontiguousarray(y, dtype=np.uint8)


# --------------------------------------------------------------------------- IDX
def parse_idx(data: bytes, where: str) -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file; see :func:`read_idx`."""
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(
            f"{where} is not an IDX file: it does not start with the IDX magic "
            f"number 00 00 <type> <dims> (it starts with {data[:4].hex(' ') or 'nothing'})"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{where}: unknown IDX type code 0x{code:02x}; known codes are 08, 09, 0B, 0C, 0D, 0E"
        )
    if not 1 <= ndim <= MAX_IDX_DIMS:
        raise DataError(
            f"{where}: the IDX header says the data has {ndim} dimensions; digitnet reads 1-{MAX_IDX_DIMS} "
            "(MNIST's images have 3, its labels 1)"
        )
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(
            f"{where} is truncated: it ends inside its {ndim}-dimension header; download or copy it again"
        )
    dims = struct.unpack(f">{ndim}I", data[4:start])
    dtype = IDX_DTYPES[code]
    expected = start + math.prod(dims) * dtype.itemsize
    check_declared(expected, where, DataError)
    check_empty_shape(dims, dtype.itemsize, where)
    if len(data) < expected:
        raise DataError(
            f"{where} is truncated: its header promises {dims} values of {dtype.name} "
            f"({expected} bytes) but the file holds {len(data)}; download or copy it again"
        )
    if len(data) > expected:
        raise DataError(
            f"{where} does not match its header: {dims} values of {dtype.name} take "
            f"{expected} bytes but the file holds more; the file is damaged"
        )
    return np.frombuffer(data, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray
        Shape and dtype as the file's header says (e.g. ``(60000, 28, 28)``
        ``uint8`` for MNIST images, ``(60000,)`` for labels), native byte order.
    """
    where = str(path)
    with open_maybe_gzip(path) as fh:
        head = fh.read(4)
        if not (
            len(head) == 4 and head[:2] == b"\0\0" and head[2] in IDX_DTYPES and 1 <= head[3] <= MAX_IDX_DIMS
        ):
            return parse_idx(head, where)  # raises the header's own error
        head += fh.read(4 * head[3])
        if len(head) < 4 + 4 * head[3]:
            return parse_idx(head, where)  # raises: truncated inside the header
        dims = struct.unpack(f">{head[3]}I", head[4:])
        expected = math.prod(dims) * IDX_DTYPES[head[2]].itemsize
        check_declared(len(head) + expected, where, DataError)
        body = read_upto(fh, expected + 1)  # one byte too many is enough to say so
    return parse_idx(head + body, where)


def check_declared(nbytes: int, where: str, error=DataError, limit: int = MAX_ARRAY_BYTES) -> None:
    """Raise ``error`` if a header declares more than ``limit`` bytes of data, before any is allocated."""
    if nbytes > limit:
        raise error(
            f"{where} claims {nbytes:,} bytes of data, more than the {limit:,} digitnet reads from one "
            "file: it is damaged or crafted"
        )


def check_empty_shape(
    shape, itemsize: int, where: str, error=DataError, limit: int = MAX_ARRAY_BYTES
) -> None:
    """Raise ``error`` if ``shape`` has a 0 among dimensions no array could have.

    Such a shape holds no values, so its bytes pass :func:`check_declared`, but NumPy refuses to make
    it: it checks the other dimensions as if the 0 were 1 (``(2**32 - 1, 0, 2**32 - 1)`` is "too
    big"). A header declaring one is bounded here by the bytes those other dimensions would take.
    """
    if 0 in shape and math.prod(d for d in shape if d) * itemsize > limit:
        raise error(
            f"{where} declares the shape {tuple(shape)}: no values, but dimensions no array can have; "
            "it is damaged or crafted"
        )


def write_idx(path, array, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (atomically).

    Parameters
    ----------
    path : str or Path
    array : array_like
        1 to 32 dimensions; dtype uint8, int8, int16, int32, float32 or float64.
    compress : bool, optional
        Gzip the file; by default, when ``path`` ends in ``.gz``.
    """
    path, array = Path(path), np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    if array.dtype.newbyteorder("=") not in codes or not 1 <= array.ndim <= MAX_IDX_DIMS:
        raise DataError(
            f"cannot write {path}: IDX holds 1-{MAX_IDX_DIMS} dimensions of uint8, int8, int16, "
            f"int32, float32 or float64, not {array.ndim} of {array.dtype}"
        )
    code = codes[array.dtype.newbyteorder("=")]
    data = (
        bytes([0, 0, code, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(IDX_DTYPES[code], copy=False).tobytes()
    )
    if path.name.endswith(".gz") if compress is None else compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


# --------------------------------------------------------------------------- CSV
def read_csv(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read digits from a CSV file: one image per row, label first or no label.

    Accepts 785 columns (label, 784 pixels: Kaggle's ``train.csv``,
    ``mnist_train.csv``) or 784 (pixels only: Kaggle's ``test.csv``), with or
    without a header row; gzip-compressed files too.

    Returns
    -------
    x : ndarray of uint8, shape (n, 784)
    y : ndarray of uint8, shape (n,), or None when the file has no label column
    """
    path = Path(path)
    if sniff(path) != "csv":
        raise DataError(f"{path} is not a CSV file; pass a .csv with one image per row")
    with open_maybe_gzip(path) as fh:  # first its size, inflating without keeping: a bomb stops here
        while fh.read(CHUNK):
            if fh.tell() > MAX_CSV_BYTES:
                raise DataError(
                    f"{path} holds more than {MAX_CSV_BYTES:,} bytes of text (decompressed), more than "
                    "digitnet reads from one CSV: split it, or save the digits as .npz"
                )
    try:
        with open_maybe_gzip(path) as raw:
            return parse_csv(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), str(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def parse_csv(fh, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse an open, seekable text stream of CSV rows; see :func:`read_csv`."""
    first = fh.readline(MAX_CSV_LINE)
    if len(first) == MAX_CSV_LINE and not first.endswith("\n"):
        raise DataError(
            f"{where}: line 1 is longer than {MAX_CSV_LINE:,} characters; a digit CSV's lines hold "
            f"{PIXELS} or {PIXELS + 1} numbers"
        )
    fields = [f.strip() for f in first.split(",")]
    # A header is words ("label,pixel0,..."); a data row with one typo is still mostly numbers.
    words = sum(not re.fullmatch(r"-?\d+(\.\d*)?", f) for f in fields)
    header = words > len(fields) // 2
    if len(fields) not in (PIXELS, PIXELS + 1):
        raise DataError(
            f"{where}: line 1 has {len(fields)} columns; a digit CSV has "
            f"{PIXELS + 1} (label, then {PIXELS} pixels) or {PIXELS} (pixels only)"
        )
    fh.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": handled below
            rows = np.loadtxt(fh, delimiter=",", dtype=np.uint8, skiprows=int(header), ndmin=2)
    except ValueError as exc:
        raise DataError(_csv_problem(str(exc), where, int(header))) from None
    if len(rows) == 0:
        raise DataError(f"{where} has no rows of pixels")
    if header and rows.shape[1] != len(fields):
        raise DataError(
            f"{where}: the header has {len(fields)} columns but the rows have {rows.shape[1]}; "
            "every row needs a value for each header column"
        )
    if rows.shape[1] == PIXELS:
        return rows, None
    labels = rows[:, 0]
    if labels.max() > 9:
        i = int(np.argmax(labels > 9))
        raise DataError(
            f"{where}: line {i + 1 + header}: label {labels[i]} is outside 0-9; "
            "the first column holds the digit, 0-9"
        )
    return np.ascontiguousarray(rows[:, 1:]), labels.copy()


def _csv_problem(message: str, where: str, header: int) -> str:
    """Turn numpy's loadtxt complaint into one that names the line and the fix."""
    m = re.search(r"columns changed from (\d+) to (\d+) at row (\d+)", message)
    if m:
        return (
            f"{where}: line {int(m[3]) + header} has {m[2]} columns but the lines before "
            f"have {m[1]}; every row needs the same columns"
        )
    m = re.search(r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)", message)
    if m:
        value, line, col = m[1], int(m[2]) + 1 + header, int(m[3])
        what = "pixel" if col > 1 else "label or pixel"
        try:
            int(value)
            why = "is outside 0-255"
        except ValueError:
            why = (
                "is not a whole number" if re.fullmatch(r"-?\d*\.\d*(e-?\d+)?", value) else "is not a number"
            )
        return (
            f"{where}: line {line}, column {col}: {what} {value!r} {why}; pixels must be whole numbers 0-255"
        )
    return f"{where}: not a CSV of pixel rows ({message})"


def write_submission(path, digits) -> Path:
    """Write Kaggle's digit-recognizer submission file (atomically).

    The file is ASCII with ``\\n`` line ends: the header ``ImageId,Label``, then
    one row ``i,digit`` per image, ``i`` counting from 1 in the order given.

    Parameters
    ----------
    path : str or Path
    digits : array_like of int, shape (n,)
        The predicted class of each image, in the order of the CSV it was read from.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        If ``digits`` is not one whole number a row, or the file cannot be written.
    """
    path, digits = Path(path), np.asarray(digits)
    if digits.ndim != 1 or not (np.issubdtype(digits.dtype, np.integer) or digits.size == 0):
        raise DataError(
            f"cannot write the submission {path}: it takes one whole-number label per image, "
            f"not an array of shape {digits.shape} of {digits.dtype}"
        )
    lines = ["ImageId,Label"] + [f"{i},{d}" for i, d in enumerate(digits.tolist(), start=1)]
    try:
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="ascii", newline="\n")
    except OSError as exc:
        raise DataError(f"cannot write the submission {path}: {exc.strerror or exc}") from None
    return path


# --------------------------------------------------------------------------- NPZ
def read_npz(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read an NPZ archive in Keras's ``mnist.npz`` layout, never unpickling anything.

    Returns
    -------
    x_train : ndarray of uint8, shape (n, 784)
    y_train : ndarray of uint8, shape (n,)
    x_test : ndarray of uint8, shape (m, 784)
    y_test : ndarray of uint8, shape (m,)
    """
    arrays = read_npz_arrays(path, NPZ_KEYS)
    x_train = check_images(arrays["x_train"], f"{path}:x_train")
    y_train = check_labels(arrays["y_train"], f"{path}:y_train", len(x_train))
    x_test = check_images(arrays["x_test"], f"{path}:x_test")
    y_test = check_labels(arrays["y_test"], f"{path}:y_test", len(x_test))
    return x_train, y_train, x_test, y_test


def read_npz_arrays(path, keys) -> dict[str, np.ndarray]:
    """Return the arrays ``keys`` of an NPZ file, reading no other member and never unpickling.

    Raises
    ------
    DataError
        If the file is missing, not an archive, lacks a key, or an array is damaged, pickled,
        or larger than :data:`MAX_ARRAY_BYTES` (all of them together).
    """
    with NpzReader(path) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise DataError(
                f"{path} lacks {', '.join(missing)} (it holds {', '.join(npz.files) or 'nothing'}); "
                f"an .npz of digits holds {', '.join(keys)}"
            )
        return {key: npz.read(key) for key in keys}


class NpzReader:
    """An ``.npz`` archive opened to read one array at a time, each bounded before it is allocated.

    Each ``.npy`` member's header is parsed first (``numpy.lib.format``, which evaluates no code);
    its shape times its item size must equal the bytes the member holds, and all the arrays read
    together stay within ``budget`` bytes, so a crafted header ((2**62,), (10**9, 784)) or a member
    that inflates to gigabytes is refused before its memory is. Pickled (object) arrays are refused.

    Parameters
    ----------
    path : str or Path
    error : DigitnetError subclass, default DataError
        What every problem raises (:class:`~digitnet.errors.ModelFileError` for model files).
    budget : int, default MAX_ARRAY_BYTES
    what : str
        What the file should be, for the error when it is no archive at all.

    Attributes
    ----------
    files : list of str
        The arrays' names (members ending in ``.npy``, without it).
    """

    def __init__(self, path, error=DataError, budget: int = MAX_ARRAY_BYTES, what="a readable .npz archive"):
        self.path, self.error, self.budget = Path(path), error, budget
        if not self.path.is_file():
            raise error(
                f"{path} does not exist: check the path"
                if not self.path.exists()
                else f"{path} is a folder, not an .npz file"
            )
        try:
            with open(self.path, "rb") as fh:
                single = fh.read(6) == b"\x93NUMPY"
            if single:
                raise error(f"{path} is a single array (.npy), not an .npz archive")
            self.zip = zipfile.ZipFile(self.path)
        except ZIP_ERRORS as exc:
            raise error(f"{path} is not {what} ({first_line(exc)})") from None
        self.members = {
            info.filename[: -len(".npy")]: info
            for info in self.zip.infolist()
            if info.filename.endswith(".npy")
        }
        self.files = list(self.members)

    def read(self, key: str, limit: int | None = None) -> np.ndarray:
        """The array ``key``: its header's shape and dtype, native byte order, writeable.

        ``limit``, if given, bounds this array's bytes more tightly than the file's budget.
        """
        where = f"{self.path}:{key}"
        cap = self.budget if limit is None else min(limit, self.budget)
        try:
            with self.zip.open(self.members[key]) as fh:
                shape, fortran, dtype = self._header(fh, where)
                nbytes = math.prod(shape) * dtype.itemsize
                check_empty_shape(shape, dtype.itemsize, where, self.error, cap)
                present = self.members[key].file_size - fh.tell()
                if nbytes > cap:
                    raise self.error(
                        f"{where} claims {nbytes:,} bytes ({shape} of {dtype}) and holds {present:,}; "
                        f"digitnet reads at most {cap:,} bytes there"
                    )
                if nbytes != present:
                    raise self.error(
                        f"{where} claims {nbytes:,} bytes ({shape} of {dtype}) and holds {present:,}: "
                        "the file is damaged or crafted"
                    )
                data = read_exactly(fh, nbytes, where, self.error)
        except ZIP_ERRORS as exc:
            raise self.error(f"{where} is damaged ({first_line(exc)})") from None
        self.budget -= nbytes
        array = data.view(dtype).reshape(shape, order="F" if fortran else "C")
        return array.astype(dtype.newbyteorder("="), copy=False)

    def _header(self, fh, where):
        """``(shape, fortran_order, dtype)`` from an ``.npy`` header, each checked."""
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise self.error(f"{where} is an .npy of format version {version}, which digitnet does not read")
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        try:
            shape, fortran, dtype = read(fh)
        except Exception as exc:  # numpy parses the header as a literal: a crafted one fails in many ways
            if "allow_pickle" in str(exc) or "object" in str(exc).lower():
                dtype = np.dtype(object)
            else:
                raise self.error(f"{where} has a damaged .npy header ({first_line(exc)})") from None
        if dtype.hasobject:
            raise self.error(
                f"{where} holds pickled Python objects, which digitnet never loads (they can run code); "
                "save plain number arrays instead"
            )
        if dtype.kind not in "biufc" or dtype.names is not None or dtype.subdtype is not None:
            raise self.error(f"{where} holds {dtype}, not plain numbers")
        if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > MAX_IDX_DIMS:
            raise self.error(f"{where} has an impossible shape {str(shape)[:80]}")
        return shape, fortran, dtype

    def close(self):
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_npz(path, **arrays) -> Path:
    """Write ``arrays`` to an uncompressed NPZ file (atomically); quick to load again."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


def csv_from_zip(archive, member: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a CSV that sits inside a zip archive (e.g. a wheel) without extracting it."""
    where = f"{archive}:{member}"
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
            if info.file_size > MAX_CSV_BYTES:  # zipfile never inflates past the size it declares
                raise DataError(
                    f"{where} holds {info.file_size:,} bytes of text, more than the {MAX_CSV_BYTES:,} "
                    "digitnet reads from one CSV"
                )
            with zf.open(info) as raw:
                return parse_csv(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), where)
    except KeyError:
        raise DataError(f"{archive} has no {member}") from None
    except ZIP_ERRORS as exc:
        raise DataError(f"cannot read {where}: {first_line(exc)}") from None
