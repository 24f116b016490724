"""Hostile files for every reader: crafted headers, zip details, pickles, metadata, and bombs.

Each kind is a :class:`Hostile`: a name, the command that reads it (``data`` for
``digitnet data info --data``, ``model`` for ``digitnet evaluate``, ``torch`` for
``digitnet import-torch``) and a function that writes it into a folder. The small kinds are
committed under ``tests/hostile/`` (``python tests/hostile_files.py`` writes them again); the
bombs (megabytes that inflate to gigabytes, built in a second from deflate blocks computed once)
and the few kinds too big to commit are ``large=True``: built at test time. Files the fuzzers find that break the
contract land in ``tests/hostile/`` too, named ``crash-<sha1>.<reader>.<ext>``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import clitools
import numpy as np

CORPUS = Path(__file__).parent / "hostile"
SIZES = [784, 3, 10]  # the tiny network of the model and torch kinds


@dataclass(frozen=True)
class Hostile:
    name: str
    command: str  # "data", "model", "torch" or "image"
    build: object  # folder -> path of the file (or folder) to read
    large: bool = False  # a bomb, or too big to commit: built at test time

    @property
    def expect(self) -> str | None:
        """A fragment of the one error line; None when reading it must succeed."""
        return expectation(self.name)


# What each kind's error says (first matching fragment of its name); None: a correct answer.
EXPECT = {
    "-dims": "dimensions",
    "dims-overflow": "claims",
    "-empty-": "holds no",
    "long-line": "longer than",
    "npz-object": "pickled",
    "-npy-": "claims",
    "zero-of-huge": "no array can have",
    "method-99": "compression method",
    "version-16.5": "version 16.5",
    "zip-truncated": "",
    "-crc": "CRC",
    "lzma-junk": "",
    "meta-nested": "nests",
    "400-digits": "too large for a number",
    "class-names-count": "class names for",
    "-meta-": "metadata's",
    "20-squares-broken": "do not form one chain",
    "20-squares": None,
    "build-": "tries to change",
    "shared-size": "impossible size",
    "shared-pid": "storage reference",
    "memo-refs": "references to shared objects",
    "memo-number": "memo number",
    "os-system": "may be malicious",
    "shared-storage-views": "take more than",
    "numel-huge": "take more than",
    "huge-shape": "cannot be read as a safetensors file",
    "gz-bomb": "",
    "csv-gz-bomb": "more than 268,435,456 bytes",
    "idx-gz-bomb": "does not match its header",
    "npz-bomb": "claims",
    "extra-member-bomb": None,
    "param-bomb": "claims",
    "storage-bomb": "take more than",
    "image-truncated": "",
    "image-huge": "",
    "image-noise": "",
}


def expectation(name: str) -> str | None:
    """The most specific :data:`EXPECT` entry for a kind's name (longest fragment found in it)."""
    found = [k for k in EXPECT if k in name]
    return EXPECT[max(found, key=len)] if found else ""


# --------------------------------------------------------------------------- bytes
def npy(array=None, *, header: dict | None = None, data: bytes | None = None) -> bytes:
    """An .npy file: ``array``'s, or a crafted header dict with the bytes given."""
    if header is None:
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return buf.getvalue()
    text = repr(header).encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + (data or b"")


def zip_bytes(members: dict[str, bytes], compress=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=compress)
    return buf.getvalue()


def patch_zip(data: bytes, *, method: int | None = None, version: int | None = None) -> bytes:
    """Rewrite every local and central header's compression method and/or version needed."""
    out = bytearray(data)
    for sig, at_version, at_method in ((b"PK\x03\x04", 4, 8), (b"PK\x01\x02", 6, 10)):
        i = out.find(sig)
        while i >= 0:
            if version is not None:
                struct.pack_into("<H", out, i + at_version, version)
            if method is not None:
                struct.pack_into("<H", out, i + at_method, method)
            i = out.find(sig, i + 4)
    return bytes(out)


def deflated_zeros(nbytes: int, prefix: bytes = b"") -> tuple[bytes, int]:
    """Raw deflate of ``prefix`` + ``nbytes`` zeros (in whole MiB), without compressing them all.

    After a full flush a deflate block does not depend on what came before, so the block for
    1 MiB of zeros is computed once and repeated. The CRC-32 returned is the prefix's alone:
    a bounded reader stops long before the end, where the CRC would be checked.
    """
    block, count = bytes(1 << 20), nbytes >> 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    return head + one * count + c.flush(), zlib.crc32(prefix)


def gzip_zeros(nbytes: int, prefix: bytes = b"") -> bytes:
    body, crc = deflated_zeros(nbytes, prefix)
    size = (len(prefix) + (nbytes >> 20 << 20)) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, size)


def zip_with_bomb(members: dict[str, bytes], bomb_name: str, nbytes: int, prefix: bytes = b"") -> bytes:
    """A zip of ``members`` (stored) plus one deflated member of ``prefix`` + ``nbytes`` zeros."""
    body, crc = deflated_zeros(nbytes, prefix)
    size = len(prefix) + (nbytes >> 20 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    stored = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out, central = bytearray(), bytearray()
    entries = [(i.filename, stored.read(i), zlib.crc32(stored.read(i)), 0) for i in stored.infolist()]
    entries.append((bomb_name, body, crc, 8))
    for name, data, crc_, method in entries:
        raw = name.encode()
        usize = size if name == bomb_name else len(data)
        offset = len(out)
        out += struct.pack(
            "<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc_, len(data), usize, len(raw), 0
        )
        out += raw + data
        central += struct.pack(
            "<4s6H3I5H2I",
            b"PK\x01\x02",
            20,
            20,
            0,
            method,
            0,
            0,
            crc_,
            len(data),
            usize,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += raw
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def idx(dims, code=0x08, data: bytes | None = None) -> bytes:
    head = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return head + (bytes(int(np.prod(dims))) if data is None else data)


# --------------------------------------------------------------------------- valid seeds
def tiny_model_arrays(sizes=SIZES, seed=0) -> dict[str, np.ndarray]:
    """digitnet's parameter arrays of a ``sizes`` network, ``param/0.weight`` (in, out) ..."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        arrays[f"param/{2 * i}.weight"] = (rng.normal(0, 0.1, (a, b)) * (rng.random((a, b)) < 0.01)).astype(
            np.float32
        )
        arrays[f"param/{2 * i}.bias"] = np.zeros(b, np.float32)
    return arrays


def model_meta(sizes=SIZES, **changes) -> dict:
    meta = {
        "format": "digitnet-model",
        "format_version": 1,
        "architecture": {"sizes": list(sizes), "activation": "relu", "dropout": 0.0},
        "dtype": "float32",
        "normalization": {"kind": "scale"},
        "dataset": "mnist",
        "class_names": [str(i) for i in range(sizes[-1])],
        "config": {"seed": 0},
        "metrics": {},
        "digitnet_version": "0",
    }
    meta.update(changes)
    return meta


def model_npz(meta: dict | str | None = None, arrays=None, extra: dict | None = None) -> bytes:
    """A model.npz: ``meta`` (a dict, or raw JSON text) and the tiny network's parameters."""
    text = json.dumps(model_meta() if meta is None else meta) if not isinstance(meta, str) else meta
    members = {"meta.npy": npy(np.frombuffer(text.encode(), np.uint8))}
    for key, value in (tiny_model_arrays() if arrays is None else arrays).items():
        members[f"{key}.npy"] = value if isinstance(value, bytes) else npy(value)
    members.update(extra or {})
    return zip_bytes(members)


def data_npz(n_train=5, n_test=5, **members) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train.npy": npy(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        "y_train.npy": npy(rng.integers(0, 10, n_train).astype(np.uint8)),
        "x_test.npy": npy(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        "y_test.npy": npy(rng.integers(0, 10, n_test).astype(np.uint8)),
    }
    arrays.update(members)
    return zip_bytes(arrays)


# A protocol-2 pickle written opcode by opcode, as torch.save writes a state_dict.
def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if -(2**31) <= n < 2**31 else b"\x8a\x08" + struct.pack("<q", n)


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


ORDERED_DICT = b"ccollections\nOrderedDict\n)R"


def tensor_pickle(
    key: str, numel: int, size, storage=b"ctorch\nFloatStorage\n", size_ops: bytes | None = None
):
    persistent = _tuple([_str("storage"), storage, _str(key), _str("cpu"), _int(numel)]) + b"Q"
    stride = [int(np.prod(size[i + 1 :])) for i in range(len(size))] if size_ops is None else [1]
    size_ops = _tuple(_int(n) for n in size) if size_ops is None else size_ops
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n"
        + _tuple([persistent, _int(0), size_ops, _tuple(_int(s) for s in stride), b"\x89", ORDERED_DICT])
        + b"R"
    )


def state_dict_pickle(shapes: dict[str, tuple], meta: dict | None = None) -> bytes:
    """The pickle of ``{name: tensor}`` (storage i for the i-th), optionally in a checkpoint with metadata."""
    body = (
        ORDERED_DICT
        + b"("
        + b"".join(
            _str(name) + tensor_pickle(str(i), int(np.prod(shape)), shape)
            for i, (name, shape) in enumerate(shapes.items())
        )
        + b"u"
    )
    if meta is not None:
        body = b"}(" + _str("model_state_dict") + body + _str("digitnet") + pickle.dumps(meta, 2)[2:-1] + b"u"
    return b"\x80\x02" + body + b"."


def pth(
    shapes: dict[str, tuple], meta: dict | None = None, pickled: bytes | None = None, storages=None
) -> bytes:
    """A zip-layout .pth of float32 tensors (random values) with these PyTorch shapes."""
    rng = np.random.default_rng(0)
    members = {"archive/data.pkl": pickled or state_dict_pickle(shapes, meta), "archive/byteorder": b"little"}
    for i, shape in enumerate(shapes.values()):
        members[f"archive/data/{i}"] = (
            (rng.normal(0, 0.1, shape) * (rng.random(shape) < 0.01)).astype("<f4").tobytes()
        )
    members.update(storages or {})
    members["archive/version"] = b"3\n"
    return zip_bytes(members)


TINY = {"0.weight": (3, 784), "0.bias": (3,), "2.weight": (10, 3), "2.bias": (10,)}


def safetensors_file(meta_text: str | None, header_changes: dict | None = None) -> bytes:
    """A .safetensors of the tiny network; its ``digitnet`` metadata is ``meta_text``."""
    rng = np.random.default_rng(0)
    header, blobs, offset = {}, [], 0
    for name, shape in TINY.items():
        blob = (rng.normal(0, 0.1, shape) * (rng.random(shape) < 0.01)).astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt", **({"digitnet": meta_text} if meta_text is not None else {})}
    header.update(header_changes or {})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def shared_lists(depth: int) -> bytes:
    """Pickle opcodes for a list holding the one below twice, ``depth`` levels: 2**depth paths."""
    ops = b"]q\x00"
    for i in range(depth):
        ops += (
            b"0(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1])
        )  # pop the last, build the next
    return ops


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


# What a damaged or hand-edited JSON file (a run folder's, a model's metadata) may hold anywhere.
ODD_VALUES = [
    None,
    True,
    -1,
    0,
    2**64,
    1e308,
    -0.5,
    "",
    "x",
    "finished",
    [],
    [1.0],
    [None],
    {},
    {"a": 1},
    [[[]]],
]


def json_places(tree, first: int | None = None, path=()):
    """Every place in a JSON tree (in each list, its ``first`` items only), as the keys that lead to it."""
    yield path
    items = (
        tree.items() if isinstance(tree, dict) else enumerate(tree[:first]) if isinstance(tree, list) else ()
    )
    for key, value in items:
        yield from json_places(value, first, (*path, key))


def put_at(tree, path, value) -> None:
    """Set the value at ``path`` (keys from :func:`json_places`) in place, if an earlier change has left
    that place there."""
    *way, last = path
    for key in way:
        if not _has(tree, key):
            return
        tree = tree[key]
    if _has(tree, last):
        tree[last] = value


def _has(tree, key) -> bool:
    if isinstance(tree, list):
        return isinstance(key, int) and key < len(tree)
    return isinstance(tree, dict) and key in tree


def rewrite_meta(path, change) -> None:
    """Write an .npz of digitnet's (a model or a checkpoint) again after ``change(meta)`` has changed
    its JSON ``meta`` in place; its arrays stay as they are."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    change(meta)
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def fuzz_settings(examples: int):
    """Hypothesis's settings for a test that mutates input: ``examples`` draws, derandomised so that
    ``make test`` is repeatable; ``DIGITNET_FUZZ_EXAMPLES=N`` draws N with fresh randomness."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=int(os.environ.get("DIGITNET_FUZZ_EXAMPLES", "0")) or examples,
        deadline=None,
        database=None,
        derandomize="DIGITNET_FUZZ_EXAMPLES" not in os.environ,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


ADDRESS_SPACE = 3 << 30  # a cap far above the 1 GB target, so that a regression fails instead of swapping


def run_measured(args, cwd) -> tuple[SimpleNamespace, int]:
    """Run ``digitnet ARGS`` with its address space capped; return its result and peak RSS in bytes.

    ``os.wait4`` reaps the process and returns its own resource usage (not the children's so far).
    """

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    out, err = cwd / "stdout", cwd / "stderr"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(clitools.command(*args), stdout=fo, stderr=fe, cwd=cwd, preexec_fn=cap)
        timer = threading.Timer(60, proc.kill)  # a hang is a failure, whatever the machine's speed
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = SimpleNamespace(returncode=proc.returncode, stdout=out.read_text(), stderr=err.read_text())
    return result, usage.ru_maxrss * 1024


# --------------------------------------------------------------------------- the kinds
def _file(name, data):
    def build(folder: Path) -> Path:
        path = Path(folder) / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return build


def _idx_folder(name, images: bytes, labels: bytes, test_images=None, test_labels=None):
    def build(folder: Path) -> Path:
        root = Path(folder) / name
        root.mkdir(parents=True, exist_ok=True)
        files = {
            "train-images-idx3-ubyte": images,
            "train-labels-idx1-ubyte": labels,
            "t10k-images-idx3-ubyte": idx((5, 28, 28)) if test_images is None else test_images,
            "t10k-labels-idx1-ubyte": idx((5,)) if test_labels is None else test_labels,
        }
        for fname, data in files.items():
            gz = data[:2] == b"\x1f\x8b"
            (root / (fname + ".gz" * gz)).write_bytes(data)
        return root

    return build


def _metadata_kinds():
    bad = {
        "dtype-object": dict(dtype="object"),
        "dtype-int8": dict(dtype="int8"),
        "dtype-bool": dict(dtype="bool"),
        "dtype-str": dict(dtype="str"),
        "dtype-datetime": dict(dtype="datetime64[s]"),
        "sizes-1e9": dict(architecture={"sizes": [784, 1e9, 10], "activation": "relu", "dropout": 0.0}),
        "sizes-huge-int": dict(
            architecture={"sizes": [784, 10**9, 10], "activation": "relu", "dropout": 0.0}
        ),
        "activation-unknown": dict(architecture={"sizes": SIZES, "activation": "gelu!", "dropout": 0.0}),
        "activation-dict": dict(architecture={"sizes": SIZES, "activation": {"a": 1}, "dropout": 0.0}),
        "dtype-list": dict(dtype=["float32"]),
        "metrics-accuracy-text": dict(metrics={"test_accuracy": 0.9, "val_accuracy": "x"}),
        "metrics-epochs-list": dict(metrics={"epochs": [1], "final_epoch": 1}),
        "dropout-nan": dict(architecture={"sizes": SIZES, "activation": "relu", "dropout": float("nan")}),
        "class-names-10": dict(class_names=10),
        "class-names-none": dict(class_names=[None] * 10),
        "class-names-count": dict(class_names=["a", "b"]),
        "dataset-list": dict(dataset=["mnist"]),
        "config-list": dict(config=[1]),
        "config-text": dict(config="x"),
        "config-seed-text": dict(config={"seed": "abc"}),
        "normalization-inf": dict(normalization={"kind": "standardize", "mean": 0.1, "std": float("inf")}),
        "normalization-text": dict(normalization="standardize"),
        # finite, but the pixels' shift mean / std overflows float32 (a warning, then "outputs overflow")
        "normalization-shift-overflow": dict(
            normalization={"kind": "standardize", "mean": 1e30, "std": 1e-30}
        ),
        "normalization-std-400-digits": dict(
            normalization={"kind": "standardize", "mean": 0, "std": 10**400}
        ),
    }
    kinds = [
        Hostile(f"model-meta-{k}.npz", "model", _file(f"model-meta-{k}.npz", model_npz(model_meta(**v))))
        for k, v in bad.items()
    ]
    kinds.append(
        Hostile(
            "model-meta-nested.npz",
            "model",
            _file("model-meta-nested.npz", model_npz(nested_json(100_000))),
            large=True,
        )
    )
    nested = json.dumps(model_meta(config={"seed": 0, "deep": json.loads(nested_json(200))}))
    kinds.append(
        Hostile("model-meta-nested-200.npz", "model", _file("model-meta-nested-200.npz", model_npz(nested)))
    )
    for k in (
        "dtype-object",
        "sizes-1e9",
        "class-names-none",
        "class-names-count",
        "dataset-list",
        "config-seed-text",
    ):
        meta = {**model_meta(**bad[k]), "format": "digitnet-export"}
        kinds.append(Hostile(f"torch-meta-{k}.pth", "torch", _file(f"torch-meta-{k}.pth", pth(TINY, meta))))
        kinds.append(
            Hostile(
                f"torch-meta-{k}.safetensors",
                "torch",
                _file(f"torch-meta-{k}.safetensors", safetensors_file(json.dumps(meta))),
            )
        )
    kinds.append(
        Hostile(
            "torch-meta-nested.safetensors",
            "torch",
            _file("torch-meta-nested.safetensors", safetensors_file(nested_json(100_000))),
            large=True,
        )
    )
    return kinds


def _huge_npy_kinds():
    kinds = []
    for label, shape in (
        ("1e12", (10**12,)),
        ("1e9x784", (10**9, 784)),
        ("2e62", (2**62,)),
        ("2e64", (2**64,)),
    ):
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        member = npy(header=header, data=bytes(64))
        kinds.append(
            Hostile(
                f"data-npy-{label}.npz",
                "data",
                _file(f"data-npy-{label}.npz", data_npz(**{"x_train.npy": member})),
            )
        )
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        params = {**tiny_model_arrays(), "param/0.weight": npy(header=header, data=bytes(64))}
        kinds.append(
            Hostile(
                f"model-npy-{label}.npz", "model", _file(f"model-npy-{label}.npz", model_npz(arrays=params))
            )
        )
    return kinds


def _zero_of_huge_kinds():
    """A 0 among dimensions too large for any array: no values, so no byte count catches it, and NumPy
    refuses the shape (the fuzzer's first find was an IDX file of (2**32 - 1, 0, 2**32 - 1))."""
    zero_of_huge = (2**32 - 1, 0, 2**32 - 1)
    header = {"descr": "|u1", "fortran_order": False, "shape": zero_of_huge}
    weights = {"descr": "<f4", "fortran_order": False, "shape": zero_of_huge}
    params = {**tiny_model_arrays(), "param/0.weight": npy(header=weights, data=b"")}
    tensor = tensor_pickle("0", 0, zero_of_huge)
    return [
        Hostile(
            "data-idx-zero-of-huge",
            "data",
            _idx_folder("data-idx-zero-of-huge", idx(zero_of_huge, data=b""), idx((5,))),
        ),
        Hostile(
            "data-npy-zero-of-huge.npz",
            "data",
            _file("data-npy-zero-of-huge.npz", data_npz(**{"x_train.npy": npy(header=header, data=b"")})),
        ),
        Hostile(
            "model-npy-zero-of-huge.npz",
            "model",
            _file("model-npy-zero-of-huge.npz", model_npz(arrays=params)),
        ),
        Hostile(
            "torch-zero-of-huge.pth",
            "torch",
            _file(
                "torch-zero-of-huge.pth",
                pth(
                    {},
                    pickled=b"\x80\x02" + ORDERED_DICT + b"(" + _str("w") + tensor + b"u.",
                    storages={"archive/data/0": b""},
                ),
            ),
        ),
    ]


def _zip_kinds():
    kinds = []
    valid = {"data": data_npz(), "model": model_npz(), "torch": pth(TINY)}
    ext = {"data": "npz", "model": "npz", "torch": "pth"}
    for command, data in valid.items():
        for label, patched in (
            ("method-99", patch_zip(data, method=99)),
            ("version-16.5", patch_zip(data, version=165)),
            ("truncated", data[: len(data) * 2 // 3]),
            ("crc", _flip_crc(data)),
            ("lzma-junk", patch_zip(data, method=14)),
        ):
            name = f"{command}-zip-{label}.{ext[command]}"
            kinds.append(Hostile(name, command, _file(name, patched)))
    return kinds


def _flip_crc(data: bytes) -> bytes:
    """The same zip with every member's CRC-32 wrong (in the local and the central headers)."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        i = out.find(sig)
        while i >= 0:
            out[i + at] ^= 0xFF
            i = out.find(sig, i + 4)
    return bytes(out)


def _pickle_kinds():
    squares = {f"l{i}.weight": (16, 16) for i in range(20)} | {"odd.weight": (16, 5)}
    build_storage = b"\x80\x02ctorch\nFloatStorage\n}" + _str("dtype") + _str("x") + b"sb."
    shared_size = (
        b"\x80\x02"
        + ORDERED_DICT
        + b"("
        + _str("w")
        + tensor_pickle("0", 4, (4,), size_ops=shared_lists(30))
        + b"u."
    )
    shared_pid = b"\x80\x02" + _tuple([_str("storage"), b"ctorch\nFloatStorage\n", shared_lists(30)]) + b"Q."
    return [
        Hostile("torch-chain-20-squares.pth", "torch", _file("torch-chain-20-squares.pth", pth(squares))),
        Hostile(
            "torch-chain-20-squares-broken.pth",
            "torch",
            _file("torch-chain-20-squares-broken.pth", pth(squares | {"odd.weight": (7, 5)})),
        ),
        Hostile(
            "torch-build-storage.pth",
            "torch",
            _file("torch-build-storage.pth", pth(TINY, pickled=build_storage)),
        ),
        Hostile(
            "torch-build-function.pth",
            "torch",
            _file(
                "torch-build-function.pth",
                pth(
                    TINY,
                    pickled=b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}" + _str("x") + _int(1) + b"sb.",
                ),
            ),
        ),
        Hostile(
            "torch-shared-size.pth", "torch", _file("torch-shared-size.pth", pth(TINY, pickled=shared_size))
        ),
        Hostile(
            "torch-shared-pid.pth", "torch", _file("torch-shared-pid.pth", pth(TINY, pickled=shared_pid))
        ),
        Hostile(
            "torch-memo-refs.pth",
            "torch",
            _file("torch-memo-refs.pth", pth(TINY, pickled=b"\x80\x02]q\x00(" + b"h\x00" * 300_000 + b"l.")),
            large=True,
        ),
        Hostile(
            "torch-shared-storage-views.pth",
            "torch",
            _file(
                "torch-shared-storage-views.pth",
                pth(
                    {},
                    pickled=b"\x80\x02"
                    + ORDERED_DICT
                    + b"("
                    + b"".join(_str(f"t{i}") + tensor_pickle("0", 10**6, (1000, 1000)) for i in range(300))
                    + b"u.",
                    storages={"archive/data/0": bytes(4 * 10**6)},
                ),
            ),
        ),
        Hostile(
            "torch-os-system.pth",
            "torch",
            _file(
                "torch-os-system.pth",
                pth(TINY, pickled=b"\x80\x02cos\nsystem\n" + _str("echo pwned") + b"\x85R."),
            ),
        ),
        Hostile(  # the fuzzer's find: a legacy-layout .pth of 19 bytes that took 13 GB to refuse
            "torch-memo-number.pth",
            "torch",
            _file("torch-memo-number.pth", b"K\xd4r" + struct.pack("<I", 841_968_993) + b".bi.J.Q.J.Q"),
        ),
        Hostile(
            "torch-numel-huge.pth",
            "torch",
            _file(
                "torch-numel-huge.pth",
                pth(
                    TINY,
                    pickled=b"\x80\x02"
                    + ORDERED_DICT
                    + b"("
                    + _str("w")
                    + tensor_pickle("0", 2**62, (2**31, 2**31))
                    + b"u.",
                ),
            ),
        ),
    ]


def _bombs():
    """Kinds that inflate to gigabytes: built at test time."""
    mnist_head = idx((60000, 28, 28), data=b"")
    row = ("0," * 784 + "0\n").encode()
    csv_block = row * 640  # 1 MiB and a bit
    return [
        Hostile(
            "data-idx-gz-bomb",
            "data",
            _idx_folder("data-idx-gz-bomb", gzip_zeros(1 << 30, mnist_head), idx((60000,))),
            large=True,
        ),
        Hostile(
            "data-csv-gz-bomb.csv.gz",
            "data",
            _file("data-csv-gz-bomb.csv.gz", lambda: _csv_bomb(csv_block, 300)),
            large=True,
        ),
        Hostile(
            "data-npz-bomb.npz",
            "data",
            _file(
                "data-npz-bomb.npz",
                lambda: zip_with_bomb(
                    {k: v for k, v in _members(data_npz()).items() if k != "x_train.npy"},
                    "x_train.npy",
                    768 << 20,
                    npy(header={"descr": "|u1", "fortran_order": False, "shape": (768 << 20,)}),
                ),
            ),
            large=True,
        ),
        Hostile(
            "model-extra-member-bomb.npz",
            "model",
            _file(
                "model-extra-member-bomb.npz",
                lambda: zip_with_bomb(_members(model_npz()), "junk.npy", 2000 << 20),
            ),
            large=True,
        ),
        Hostile(
            "model-param-bomb.npz",
            "model",
            _file(
                "model-param-bomb.npz",
                lambda: zip_with_bomb(
                    {k: v for k, v in _members(model_npz()).items() if k != "param/0.weight.npy"},
                    "param/0.weight.npy",
                    1000 << 20,
                    npy(header={"descr": "<f4", "fortran_order": False, "shape": (250 << 20,)}),
                ),
            ),
            large=True,
        ),
        Hostile(
            "torch-storage-bomb.pth",
            "torch",
            _file("torch-storage-bomb.pth", lambda: _storage_bomb(600 << 20)),
            large=True,
        ),
    ]


def _members(zip_data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(zip_data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _csv_bomb(block: bytes, mib: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(block)  # of the first block only: the reader stops before the end
    body = head + one * (mib - 1) + c.flush()
    size = (len(block) * mib) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, size)


def _storage_bomb(nbytes: int) -> bytes:
    numel = nbytes // 4
    pickled = (
        b"\x80\x02"
        + ORDERED_DICT
        + b"("
        + _str("0.weight")
        + tensor_pickle("0", numel, (numel // 784, 784))
        + b"u."
    )
    members = {"archive/data.pkl": pickled, "archive/byteorder": b"little", "archive/version": b"3\n"}
    return zip_with_bomb(members, "archive/data/0", nbytes)


def kinds() -> list[Hostile]:
    empty_images = idx((0, 28, 28))
    return [
        Hostile("data-idx-65-dims", "data", _idx_folder("data-idx-65-dims", idx((1,) * 65), idx((1,)))),
        Hostile("data-idx-255-dims", "data", _idx_folder("data-idx-255-dims", idx((1,) * 255), idx((1,)))),
        Hostile(
            "data-idx-dims-overflow",
            "data",
            _idx_folder("data-idx-dims-overflow", idx((2**32 - 1,) * 3, data=b""), idx((5,))),
        ),
        Hostile("data-idx-empty-train", "data", _idx_folder("data-idx-empty-train", empty_images, idx((0,)))),
        Hostile(
            "data-idx-empty-test",
            "data",
            _idx_folder("data-idx-empty-test", idx((5, 28, 28)), idx((5,)), empty_images, idx((0,))),
        ),
        Hostile(
            "data-csv-long-line.csv.gz",
            "data",
            _file("data-csv-long-line.csv.gz", gzip.compress(b"1," * 400_000 + b"1\n", mtime=0)),
        ),
        Hostile(
            "data-npz-object.npz",
            "data",
            _file("data-npz-object.npz", data_npz(**{"x_train.npy": _object_npy()})),
        ),
        *_huge_npy_kinds(),
        *_zero_of_huge_kinds(),
        *_zip_kinds(),
        *_metadata_kinds(),
        *_pickle_kinds(),
        Hostile(
            "torch-safetensors-huge-shape.safetensors",
            "torch",
            _file(
                "torch-safetensors-huge-shape.safetensors",
                safetensors_file(
                    None, {"0.weight": {"dtype": "F32", "shape": [2**62, 784], "data_offsets": [0, 9408]}}
                ),
            ),
        ),
        *_image_kinds(),
        *_bombs(),
    ]


def png(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """A grey 8-bit PNG of this size; its pixel data (one filter byte a row) may be cut short."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = pixels if pixels is not None else b"".join(b"\0" + bytes(width) for _ in range(height))
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + head + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _image_kinds():
    whole = png(28, 28)
    return [
        Hostile("image-truncated.png", "image", _file("image-truncated.png", whole[: len(whole) // 2])),
        Hostile(
            "image-huge-dims.png", "image", _file("image-huge-dims.png", png(100_000, 100_000, b"\0" * 64))
        ),
        Hostile(
            "image-noise.png",
            "image",
            _file("image-noise.png", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(2000)),
        ),
    ]


def _object_npy() -> bytes:
    header = {"descr": "|O", "fortran_order": False, "shape": (1,)}
    return npy(header=header, data=pickle.dumps(["os.system would run here"]))


def write_corpus(folder: Path = CORPUS) -> list[Path]:
    """Write every small kind into ``folder`` (the committed corpus); bombs are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    return [kind.build(folder) for kind in kinds() if not kind.large]


# A fuzzer's crash file, crash-<sha1>.<reader>.<ext>: the reader that failed, and the command that uses it.
CRASH_COMMANDS = {
    "idx": "data",
    "csv": "data",
    "npz": "data",
    "model": "model",
    "torch": "torch",
    "image": "image",
}


def reader_of(path: Path) -> str | None:
    """The reader a crash file goes back to (``idx``, ``csv``, ``npz``, ...), None for the kinds above."""
    return path.name.split(".")[1] if path.name.startswith("crash-") else None


def command_of(path: Path) -> str:
    """Which command reads a corpus file: ``data-...``, ``model-...``, ``torch-...``, ``image-...``."""
    reader = reader_of(path)
    return CRASH_COMMANDS[reader] if reader else path.name.split("-", 1)[0]


def crash_input(path: Path, folder: Path) -> Path:
    """What the command line is given for a crash file: the file, or for IDX a dataset folder around it."""
    if reader_of(path) != "idx":
        return path
    return _idx_folder(f"{path.name}-set", path.read_bytes(), idx((1,)))(folder)


if __name__ == "__main__":
    for path in write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS):
        print(path)
