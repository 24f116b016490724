"""Write a digitnet model for other tools: safetensors, PyTorch ``.pth``, ONNX.

All three use PyTorch's names and layout: the network is the ``nn.Sequential``
``Linear(784, 128), ReLU(), Linear(128, 10)`` whose state_dict holds
``0.weight`` of shape ``(128, 784)``, ``0.bias``, ``2.weight`` ... Each file
also carries a small JSON description (architecture, normalisation, class
names) that :func:`~digitnet.interop.import_torch` reads back, so a round trip
needs no flags. Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from digitnet import nn
from digitnet.data.formats import atomic_path
from digitnet.errors import DigitnetError
from digitnet.interop.statedict import METADATA_KEY, describe, torch_state_dict
from digitnet.modelfile import Classifier

FORMATS = ("safetensors", "pth", "onnx")
SUFFIXES = {".safetensors": "safetensors", ".pth": "pth", ".pt": "pth", ".onnx": "onnx"}
ONNX_OPSET = 17


def export(clf: Classifier, path, format: str | None = None, state_dict_only: bool = False) -> Path:
    """Write ``clf`` to ``path`` as ``format`` (default: from the suffix); return the path."""
    path = Path(path)
    format = format or SUFFIXES.get(path.suffix.lower())
    if format not in FORMATS:
        raise DigitnetError(f"cannot tell the format from '{path.name}': give --format {'|'.join(FORMATS)}")
    writer = {"safetensors": export_safetensors, "pth": export_pth, "onnx": export_onnx}[format]
    try:
        if format == "pth":
            return writer(clf, path, state_dict_only=state_dict_only)
        return writer(clf, path)
    except OSError as exc:
        raise DigitnetError(f"cannot write {path}: {exc.strerror or exc}") from None


def export_safetensors(clf: Classifier, path) -> Path:
    """safetensors file of the state_dict (``(out, in)`` weights), via the package's NumPy API."""
    safetensors_numpy = require("safetensors.numpy", "safetensors", "exporting to safetensors")
    tensors = torch_state_dict(clf.model)
    metadata = {"format": "pt", METADATA_KEY: json.dumps(describe(clf))}
    with atomic_path(path) as tmp:
        safetensors_numpy.save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def export_pth(clf: Classifier, path, state_dict_only: bool = False) -> Path:
    """A ``torch.save`` file that ``torch.load(path, weights_only=True)`` opens. Needs PyTorch.

    By default a checkpoint ``{"model_state_dict": ..., "digitnet": {description}}``; with
    ``state_dict_only`` the bare state_dict, for ``net.load_state_dict(torch.load(path))``.
    """
    torch = require("torch", "torch", "exporting to .pth")
    state = {name: torch.from_numpy(array) for name, array in torch_state_dict(clf.model).items()}
    obj = state if state_dict_only else {"model_state_dict": state, METADATA_KEY: describe(clf)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def export_onnx(clf: Classifier, path) -> Path:
    """An ONNX graph ``input (batch, inputs) -> logits, probabilities`` built with the ``onnx`` package.

    ``input`` is the normalised pixels, as the network itself takes them; the normalisation is
    in the model's ``digitnet`` metadata. Each Linear is a ``Gemm`` with PyTorch-layout weights.
    """
    onnx = require("onnx", "onnx", "exporting to ONNX")
    from onnx import TensorProto, helper, numpy_helper

    dtype = clf.dtype
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    weights = torch_state_dict(clf.model)
    nodes, initializers, x = [], [], "input"
    for i, layer in enumerate(clf.model.layers):
        out = f"h{i}"
        if isinstance(layer, nn.Linear):
            initializers += [
                numpy_helper.from_array(weights[f"{i}.weight"], f"{i}.weight"),
                numpy_helper.from_array(weights[f"{i}.bias"], f"{i}.bias"),
            ]
            nodes.append(
                helper.make_node("Gemm", [x, f"{i}.weight", f"{i}.bias"], [out], transB=1, name=f"linear{i}")
            )
        elif isinstance(layer, nn.Dropout):
            continue  # identity at inference
        elif isinstance(layer, nn.LeakyReLU) and dtype == np.float64:
            # LeakyRelu's alpha is a float32 attribute; max(x, slope * x) keeps float64's slope exact.
            initializers.append(numpy_helper.from_array(np.array(layer.slope, dtype), f"slope{i}"))
            nodes += [
                helper.make_node("Mul", [x, f"slope{i}"], [f"scaled{i}"], name=f"scale{i}"),
                helper.make_node("Max", [x, f"scaled{i}"], [out], name=f"act{i}"),
            ]
        elif isinstance(layer, nn.LeakyReLU):
            nodes.append(helper.make_node("LeakyRelu", [x], [out], alpha=float(layer.slope), name=f"act{i}"))
        else:
            op = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}[type(layer)]
            nodes.append(helper.make_node(op, [x], [out], name=f"act{i}"))
        x = out
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"))
    n_in, n_out = clf.architecture["sizes"][0], clf.architecture["sizes"][-1]
    graph = helper.make_graph(
        nodes,
        "digitnet",
        [helper.make_tensor_value_info("input", elem, ["batch", n_in])],
        [
            helper.make_tensor_value_info("logits", elem, ["batch", n_out]),
            helper.make_tensor_value_info("probabilities", elem, ["batch", n_out]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="digitnet", ir_version=8
    )
    helper.set_model_props(model, {METADATA_KEY: json.dumps(describe(clf))})
    onnx.checker.check_model(model)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


def torch_sequential_code(clf: Classifier) -> str:
    """The Python expression that builds the ``torch.nn.Sequential`` equivalent to ``clf``'s network.

    Its layers have the same indices as digitnet's, so the state_dict of :func:`export_pth`
    (``0.weight`` ...) loads into it as it is. Needs no PyTorch to write; the expression
    needs ``import torch`` to run.

    Parameters
    ----------
    clf : Classifier
        A network of Linear layers ``(in, out)``, activations and Dropout.

    Returns
    -------
    str
        e.g. ``"torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))"``;
        float64 networks get ``dtype=torch.float64`` in each Linear.
    """
    dtype = ", dtype=torch.float64" if str(clf.dtype) == "float64" else ""
    parts = []
    for layer in clf.model.layers:
        if isinstance(layer, nn.Linear):
            parts.append(f"torch.nn.Linear({layer.in_features}, {layer.out_features}{dtype})")
        elif isinstance(layer, nn.Dropout):
            parts.append(f"torch.nn.Dropout({layer.p:g})")
        elif isinstance(layer, nn.LeakyReLU):
            parts.append(f"torch.nn.LeakyReLU({layer.slope:g})")
        else:
            parts.append(f"torch.nn.{type(layer).__name__}()")
    return "torch.nn.Sequential(" + ", ".join(parts) + ")"


def require(module: str, package: str, purpose: str):
    """Import an optional dependency, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = (
            "pip install 'digitnet[torch]' (the CPU build is enough)"
            if package == "torch"
            else "pip install 'digitnet[export]'"
        )
        raise DigitnetError(f"{purpose} needs the '{package}' package: {hint}") from None
