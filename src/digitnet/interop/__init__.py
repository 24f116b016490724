"""PyTorch in and out: import state_dicts without PyTorch, export to safetensors / .pth / ONNX.

Read these in order:

- ``torchfile.py``: read ``torch.save`` files (zip and legacy) with a restricted unpickler that runs
  no code and needs no PyTorch;
- ``statedict.py``: find the Linear layers in a state_dict, chain them input -> output, transpose
  ``(out, in)`` to ``(in, out)``, build a digitnet network;
- ``export.py``: write safetensors, ``.pth`` and ONNX with PyTorch's names and layout, and the
  ``torch.nn.Sequential`` code the ``.pth`` loads into;
- ``torchnet.py`` and ``torch_train.py`` (need PyTorch): live modules both ways, and the same
  training run done by ``torch.optim``.

Nothing here imports PyTorch at import time; the functions that need it import it when called.
"""

from digitnet.interop.export import (
    FORMATS,
    export,
    export_onnx,
    export_pth,
    export_safetensors,
    torch_sequential_code,
)
from digitnet.interop.statedict import (
    chain_layers,
    find_state_dict,
    from_state_dict,
    import_torch,
    linear_layers,
    load_any,
    load_torch_state_dict,
    torch_state_dict,
)
from digitnet.interop.torchfile import read_torch_file
from digitnet.interop.torchnet import from_torch_module, to_torch_module

__all__ = [
    "FORMATS",
    "chain_layers",
    "export",
    "export_onnx",
    "export_pth",
    "export_safetensors",
    "find_state_dict",
    "from_state_dict",
    "from_torch_module",
    "import_torch",
    "linear_layers",
    "load_any",
    "load_torch_state_dict",
    "read_torch_file",
    "to_torch_module",
    "torch_sequential_code",
    "torch_state_dict",
]
