"""PyTorch state_dicts <-> digitnet networks: find the layers, chain them, transpose.

A state_dict names tensors, e.g. ``{"fc1.weight": (128, 784), "fc1.bias": (128,), "out.weight": (10, 128),
...}``. Every ``<layer>.weight`` of shape ``(out, in)`` with an optional ``<layer>.bias`` of shape
``(out,)`` is a Linear layer; :func:`chain_layers` orders them input -> output by their shapes (the
saved order breaks ties), so any naming works: ``0.weight`` from ``nn.Sequential``, ``fc1.weight``
from a custom Module, ``module.`` prefixes from DataParallel. PyTorch stores a weight as
``(out, in)`` and digitnet as ``(in, out)``: this is the one place that transposes.

The activation between the layers is code, not data, so a state_dict cannot tell it:
it is given (``activation=``), or read from the metadata digitnet writes beside its own exports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet import modelfile, nn
from digitnet.data.datasets import DATASETS
from digitnet.data.formats import MAX_ARRAY_BYTES, SHORT, first_line, float_sized_int
from digitnet.data.loader import Normalizer
from digitnet.errors import ModelFileError
from digitnet.interop.torchfile import read_torch_file
from digitnet.modelfile import MAX_LAYERS, Classifier, architecture_of

CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model")
METADATA_KEY = "digitnet"  # where digitnet's own .pth checkpoints keep their description


@dataclass
class LinearLayer:
    """One Linear layer found in a state_dict: its name and PyTorch-layout arrays."""

    name: str
    weight: np.ndarray  # (out, in)
    bias: np.ndarray | None  # (out,) or None for bias=False

    @property
    def shape(self) -> tuple[int, int]:
        return self.weight.shape[1], self.weight.shape[0]  # (in, out)


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """The state_dict in a ``torch.save`` file (or a ``.safetensors`` file), as NumPy arrays.

    Never imports PyTorch and never runs code from the file. A checkpoint dict is searched for
    its state_dict under ``model_state_dict``, ``state_dict`` or ``model``.

    Returns
    -------
    dict of str -> ndarray
        PyTorch's names and layout, e.g. ``"0.weight"`` of shape ``(out, in)``.
    """
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[dict, dict]:
    """``(state_dict, digitnet metadata or {})`` from a .pth or .safetensors file."""
    if _is_safetensors(path):
        return _read_safetensors(path)
    obj = read_torch_file(path)
    meta = obj.get(METADATA_KEY) if isinstance(obj, dict) and isinstance(obj.get(METADATA_KEY), dict) else {}
    return find_state_dict(obj, path), modelfile.check_metadata(meta, path, complete=False)


def find_state_dict(obj, where="the file") -> dict[str, np.ndarray]:
    """Return ``obj`` if it is a state_dict (a dict of arrays), else the one a checkpoint holds."""
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
        keys = ", ".join(SHORT.repr(k) if not isinstance(k, str) else k[:60] for k in list(obj)[:12])
        raise ModelFileError(
            f"{where} holds a dict ({keys}) that is neither a state_dict of tensors nor a "
            f"checkpoint with one under {', '.join(CHECKPOINT_KEYS)}"
        )
    raise ModelFileError(f"{where} holds a {type(obj).__name__}, not a state_dict (a dict of tensors)")


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, np.ndarray) for v in obj.values())
    )


def linear_layers(state: dict[str, np.ndarray], where="the state_dict") -> list[LinearLayer]:
    """Group ``<name>.weight`` / ``<name>.bias`` pairs into Linear layers, in saved order.

    Raises :class:`ModelFileError` naming every key that is not part of a Linear layer
    (convolutions, batch norm, embeddings without a matching chain ...).
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        layer, _, kind = key.rpartition(".")
        groups.setdefault(layer, {})[kind] = value
    layers, unplaced = [], []
    for name, parts in groups.items():
        prefix = f"{name}." if name else ""
        w, b = parts.get("weight"), parts.get("bias")
        if (
            w is None
            or w.ndim != 2
            or set(parts) - {"weight", "bias"}
            or (b is not None and b.shape != (w.shape[0],))
        ):
            unplaced += [f"{prefix}{kind} {tuple(v.shape)}" for kind, v in parts.items()]
            continue
        for kind, v in parts.items():
            if not np.issubdtype(v.dtype, np.floating):
                raise ModelFileError(
                    f"{where}: {prefix}{kind} holds {v.dtype}, not floating-point numbers "
                    "(quantised weights are not supported)"
                )
            if not np.all(np.isfinite(v)):
                raise ModelFileError(f"{where}: {prefix}{kind} holds NaN or infinite values")
        layers.append(LinearLayer(name, w, b))
    if unplaced:
        shown = ", ".join(unplaced[:12]) + (f" and {len(unplaced) - 12} more" if len(unplaced) > 12 else "")
        raise ModelFileError(
            f"{where} is not a chain of Linear layers: could not place {shown}. digitnet imports "
            "fully connected networks (nn.Linear layers with activations between them)"
        )
    if not layers:
        raise ModelFileError(f"{where} holds no Linear layer weights")
    return layers


def chain_layers(layers: list[LinearLayer], where="the state_dict") -> list[LinearLayer]:
    """Order the layers so each one's outputs feed the next one's inputs.

    The widths are a graph's nodes and each layer an edge ``in -> out``; a chain uses every edge
    once (an Eulerian trail). At each position the first layer in saved order is taken whose
    choice still leaves a chain of the rest (:func:`_can_chain`), so a state_dict saved in
    forward order stays as it is, a Module that registered ``out`` before ``fc1`` is still
    chained right, and the work is polynomial: at most ``n**3`` steps for ``n`` layers, never
    a search through orderings.
    """
    chain, rest, end = [], list(range(len(layers))), None
    while len(layers) <= MAX_LAYERS and rest:
        for i in rest:
            n_in, n_out = layers[i].shape
            if (end is None or n_in == end) and _can_chain([layers[j] for j in rest if j != i], n_out):
                chain.append(layers[i])
                rest.remove(i)
                end = n_out
                break
        else:
            break
    if rest or len(layers) > MAX_LAYERS:
        shapes = ", ".join(
            f"{layer.name or '(root)'} {layer.shape[0]}->{layer.shape[1]}" for layer in layers[:MAX_LAYERS]
        )
        more = f" and {len(layers) - MAX_LAYERS} more" if len(layers) > MAX_LAYERS else ""
        raise ModelFileError(
            f"{where}: its Linear layers do not form one chain from input to output ({shapes}{more})"
            + (f"; digitnet reads at most {MAX_LAYERS}" if more else "")
        )
    return chain


def _can_chain(layers: list[LinearLayer], start: int) -> bool:
    """Whether ``layers`` can be chained starting from a layer that takes ``start`` inputs.

    Euler's condition: every width is fed as often as it is read, except that ``start`` may be
    read once more and the final width fed once more; and the layers are connected with ``start``.
    """
    if not layers:
        return True
    balance, parent = {}, {}

    def root(node):
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for layer in layers:
        a, b = layer.shape
        balance[a] = balance.get(a, 0) + 1
        balance[b] = balance.get(b, 0) - 1
        parent[root(a)] = root(b)
    odd = {node: v for node, v in balance.items() if v}
    if odd and (len(odd) != 2 or odd.get(start) != 1):
        return False
    if not odd and start not in balance:
        return False
    return len({root(node) for node in balance} | {root(start)}) == 1


def to_model(chain: list[LinearLayer], activation: str = "relu") -> nn.Sequential:
    """A digitnet network with these layers' weights (transposed to ``(in, out)``), bit for bit.

    float64 if any weight is float64, else float32 (float16 and bfloat16 widen exactly).
    """
    dtype = (
        np.float64
        if any(a.dtype == np.float64 for layer in chain for a in (layer.weight, layer.bias) if a is not None)
        else np.float32
    )
    sizes = [chain[0].shape[0]] + [layer.shape[1] for layer in chain]
    model = nn.mlp(sizes, activation=activation, init="he", rng=0, dtype=dtype)
    linears = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
    for mine, theirs in zip(linears, chain, strict=True):
        mine.weight.data[...] = theirs.weight.T
        mine.bias.data[...] = 0 if theirs.bias is None else theirs.bias
    return model.eval()


def from_state_dict(
    state: dict[str, np.ndarray],
    activation: str = "relu",
    normalizer: Normalizer | None = None,
    class_names=None,
    dataset: str = "mnist",
    where="the state_dict",
    meta: dict | None = None,
) -> Classifier:
    """Build a :class:`~digitnet.modelfile.Classifier` from a PyTorch state_dict of an MLP.

    Parameters
    ----------
    state : dict of str -> ndarray
        PyTorch layout: weights ``(out, in)``, biases ``(out,)``.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh"}
        What the network applies between its Linear layers (a state_dict cannot say).
    normalizer : Normalizer, optional
        How pixels 0-255 became the network's inputs; default ``scale`` (``ToTensor()``: divide by 255).
        ``Normalize((0.1307,), (0.3081,))`` is ``Normalizer("standardize", 0.1307, 0.3081)``.
    class_names : list of str, optional
        Default: the dataset's, when the network has as many outputs.
    """
    chain = chain_layers(linear_layers(state, where), where)
    model = to_model(chain, activation)
    arch = architecture_of(model)
    if not class_names:
        known = DATASETS[dataset].class_names if dataset in DATASETS else ()
        class_names = (
            list(known) if len(known) == arch["sizes"][-1] else [str(i) for i in range(arch["sizes"][-1])]
        )
    modelfile.check_metadata(
        {
            "architecture": arch,
            "dtype": str(model.layers[0].weight.data.dtype),
            "class_names": list(class_names),
        },
        where,
        complete=False,
    )
    names = {str(i): layer.name for i, layer in zip(range(0, 2 * len(chain), 2), chain, strict=True)}
    info = {"dataset": dataset, "torch_layers": names, **(meta or {})}
    return Classifier(model, normalizer or Normalizer("scale"), list(class_names), arch, info)


def import_torch(
    path, activation: str | None = None, normalizer: Normalizer | None = None, dataset: str | None = None
) -> Classifier:
    """Read a ``.pth`` (or ``.safetensors``) file into a Classifier, without PyTorch.

    ``activation``, ``normalizer`` and ``dataset`` default to what a digitnet-written file records,
    else to ``"relu"``, ``scale`` and ``"mnist"``; ``meta["activation_from"]`` says which
    (``"argument"``, ``"file"`` or ``"default"``).
    """
    path = Path(path)
    state, saved = _read(path)
    arch = saved.get("architecture") or {}
    try:
        normalizer = normalizer or Normalizer.from_dict(saved.get("normalization") or {"kind": "scale"})
    except Exception as exc:
        raise ModelFileError(f"{path}: its normalisation metadata is not usable ({exc})") from None
    said = "argument" if activation else "file" if arch.get("activation") else "default"
    activation = activation or arch.get("activation") or "relu"
    if activation not in nn.ACTIVATIONS:
        raise ModelFileError(f"unknown activation '{activation}'; choose one of {', '.join(nn.ACTIVATIONS)}")
    dataset = dataset or saved.get("dataset") or "mnist"
    class_names = saved.get("class_names")
    meta = {
        "path": str(path),
        "imported_from": str(path),
        "activation_from": said,
        **{k: saved[k] for k in ("config", "metrics", "trained_with", "test_time_shift") if k in saved},
    }
    clf = from_state_dict(state, activation, normalizer, class_names, dataset, where=str(path), meta=meta)
    if arch.get("sizes") and list(arch["sizes"]) != clf.architecture["sizes"]:
        raise ModelFileError(
            f"{path}: its metadata describes {arch['sizes']} but its weights make {clf.architecture['sizes']}"
        )
    return clf


def load_any(path, activation: str | None = None, normalizer: Normalizer | None = None) -> Classifier:
    """A digitnet model file (``.npz`` or its run folder), or a ``.pth`` / ``.safetensors`` file imported.

    ``activation`` and ``normalizer`` apply to the imported kinds only (see :func:`import_torch`).
    """
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".npz":
        return modelfile.load(path)
    return import_torch(path, activation=activation, normalizer=normalizer)


def torch_state_dict(model: nn.Sequential) -> dict[str, np.ndarray]:
    """The state_dict PyTorch's equivalent ``nn.Sequential`` would have: same names, ``(out, in)`` weights.

    Arrays are fresh C-contiguous copies holding the same bits.
    """
    out = {}
    for name, p in model.named_parameters():
        out[name] = np.ascontiguousarray(p.data.T if name.endswith("weight") else p.data)
    return out


def describe(clf: Classifier, normalizer: Normalizer | None = None) -> dict:
    """The JSON-friendly description digitnet stores beside exported weights."""
    return {
        "format": "digitnet-export",
        "architecture": clf.architecture,
        "normalization": (normalizer or clf.normalizer).to_dict(),
        "class_names": list(clf.class_names),
        "dataset": clf.meta.get("dataset", ""),
        **({"test_time_shift": clf.test_time_shift} if clf.test_time_shift else {}),
    }


def _is_safetensors(path: Path) -> bool:
    """A .safetensors file starts with an 8-byte header length, then a JSON header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (100 << 20)


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise ModelFileError(
            f"{path} is a .safetensors file: reading it needs the safetensors package "
            "(pip install 'digitnet[export]')"
        ) from None
    if path.stat().st_size > MAX_ARRAY_BYTES + (100 << 20):  # the tensors, and a header of 100 MB at most
        raise ModelFileError(
            f"{path} holds {path.stat().st_size:,} bytes, more than the {MAX_ARRAY_BYTES:,} of tensors "
            "digitnet reads from one file"
        )
    try:
        with safe_open(str(path), framework="numpy") as fh:
            state = {key: fh.get_tensor(key) for key in fh.keys()}
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path} cannot be read as a safetensors file ({first_line(exc)})") from None
    try:
        described = json.loads(meta.get(METADATA_KEY, "{}"), parse_int=float_sized_int)
    except ValueError:  # not JSON, or a number too large for a float
        described = {}
    except RecursionError:
        raise ModelFileError(f"{path}: its digitnet metadata nests too deeply to be read") from None
    return state, modelfile.check_metadata(
        described if isinstance(described, dict) else {}, path, complete=False
    )
