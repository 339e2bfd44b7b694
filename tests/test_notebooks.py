"""The notebooks in notebooks/ (issue #7): stored without outputs, and each one executes end to end.

They run with nbclient in a fresh kernel, from notebooks/ as a user opens them, writing into a
temporary folder (``ODISE_NOTEBOOK_WORK``).  Each is small by design (tiny models, a few steps).
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="install the test extras: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NAMES = ["compare_backbones.ipynb", "open_vocab_demo.ipynb", "quickstart.ipynb"]


def test_the_notebooks_are_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == NAMES
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name} cell {index} has outputs: clear them before committing (Kernel > Restart & Clear)"
                )
        assert "../shared" not in path.read_text(), f"{path.name} reads the shared folder outside the repository"


def _execute(name: str, tmp_path: Path, monkeypatch) -> list[str]:
    from nbclient import NotebookClient

    monkeypatch.setenv("ODISE_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    images = sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))
    assert images >= 1, f"{name} drew no figure"
    return texts


@pytest.mark.slow  # ~30 s: a kernel, a 30-step tiny training, predictions
def test_quickstart_notebook(tmp_path, monkeypatch):
    out = "\n".join(_execute("quickstart.ipynb", tmp_path, monkeypatch))
    assert "| final |" in out and "train/loss" in out
    assert (tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow  # ~20 s: a kernel, a tiny random-weight model, two photos
def test_open_vocab_demo_notebook(tmp_path, monkeypatch):
    out = "\n".join(_execute("open_vocab_demo.ipynb", tmp_path, monkeypatch))
    assert "2 images: ['000000142238.jpg', '000000439180.jpg']" in out
    assert "9 classes: ['person', 'dog', 'frisbee', 'bicycle', 'bus', 'grass', 'tree', 'sky', 'road']" in out
    assert "000000142238.jpg (640x427)" in out and "000000439180.jpg (640x360)" in out
    assert "['animal', 'person', 'plant', 'ground', 'sky'] ->" in out


@pytest.mark.slow  # ~60 s: a kernel and four runs of the tiny backbone sweep (2 backbones x 2 seeds), 2 steps each
def test_compare_backbones_notebook(tmp_path, monkeypatch):
    out = "\n".join(_execute("compare_backbones.ipynb", tmp_path, monkeypatch))
    assert "4 of 4 runs have final metrics" in out and "highest PQ: backbone=" in out
    assert (tmp_path / "sweeps" / "backbones_tiny" / "summary.csv").is_file()
    assert (tmp_path / "sweeps" / "backbones_tiny" / "summary_points.csv").is_file()  # two seeds per backbone
    assert (tmp_path / "plots" / "final_metrics.png").is_file() and (tmp_path / "plots" / "validation_curves.png").is_file()
