import subprocess
import sys

from odise_pl import _torchvision_compat as compat


def test_torchvision_and_dependents_import():
    # a fresh interpreter: importing odise_pl first makes torchvision, open_clip and lightning importable
    code = "import odise_pl, torchvision, open_clip, lightning, timm; print(torchvision.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_install_is_a_no_op_when_ops_load_or_already_installed(monkeypatch):
    monkeypatch.setattr(compat, "torchvision_ops_load", lambda: True)
    monkeypatch.setattr(compat, "_LIBRARY", None)
    assert compat.install() is False  # ops load: nothing declared


def test_install_declares_only_missing_schemas(monkeypatch):
    monkeypatch.setattr(compat, "torchvision_ops_load", lambda: False)
    monkeypatch.setattr(compat, "_LIBRARY", None)
    # the schemas exist already in this process (declared at import, or by the real ops): nothing to add
    assert compat._op_exists("nms") and compat._op_exists("qnms")
    assert compat.install() is False
