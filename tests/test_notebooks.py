"""The notebooks in notebooks/ run top to bottom with the real model on ../shared/data, and show pictures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

nbclient = pytest.importorskip(
    "nbclient", reason="the notebook extra is not installed: pip install -e '.[notebook]'"
)
nbformat = pytest.importorskip(
    "nbformat", reason="the notebook extra is not installed: pip install -e '.[notebook]'"
)


def test_notebooks_are_committed_without_outputs():
    assert NOTEBOOKS, "notebooks/ has notebooks"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_pictures(path, data, model_installed, monkeypatch):
    # the kernel and its Dask workers import this checkout's geosam, and run where the notebook lives
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # the kernel's own inline backend turns plots into PNG outputs
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 2, f"{path.name} shows pictures, not just tables"
