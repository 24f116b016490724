"""docs/tutorial.ipynb, executed top to bottom on real MNIST: its cells assert what they show."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def test_the_tutorial_is_stored_without_outputs():
    """Outputs belong to a run, not to the repository: the diff of a change shows only the code."""
    nb = nbformat.read(TUTORIAL, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 10
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_the_tutorial_runs_top_to_bottom(mnist, tmp_path):
    """Every cell runs without an error, each assertion in it holds, and every figure is drawn inline."""
    nb = nbformat.read(TUTORIAL, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as failure:
        pytest.fail(f"the tutorial failed:\n{failure}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 6, "a figure came out as text instead of an image"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "relative error" in text and "test accuracy" in text and "the network reads 7" in text
