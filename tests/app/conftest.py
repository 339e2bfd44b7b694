"""A tiny run directory and the demo serving it in this process (shared by the app's tests).

The run directory is written the way ``convert-reference`` writes one (config.yaml, categories.json,
weights.safetensors: :func:`~odise_pl.engine.run_files.write_run_directory`) from the quick-start
model at 64 px, so the app is tested on the files every run directory has, without a training run.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
PHOTOS = sorted((REPO / "odise_pl" / "app" / "examples").glob("*.jpg"))
#: the hosts a local app may reach; anything else is Gradio phoning home
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", None}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory of the (untrained) quick-start model at 64 px."""
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_all
    from odise_pl.engine.run_files import write_run_directory

    root = tmp_path_factory.mktemp("app_run")
    # transformers' init: the untrained model labels something (Mask2Former's initialisation predicts void)
    overrides = [
        f"data.root={root / 'data'}",
        f"run.root={root / 'runs'}",
        "model.mask_generator.init=transformers",
        "data.eval_short_side=64",
        "data.eval_max_long_side=96",
        "model.mask_generator.dec_layers=1",
    ]
    cfg = load_config(str(QUICKSTART), overrides)
    dm, model = build_all(cfg)
    return write_run_directory(root / "run", config=cfg, categories=dm.categories, model=model, ignore_index=dm.ignore_index)


@pytest.fixture(scope="module")
def outbound() -> list:
    """Every non-local host a socket looked up or connected to while the app ran (filled by ``served``)."""
    return []


@pytest.fixture(scope="module")
def served(tiny_run, outbound):
    """The demo of ``tiny_run``, launched in this process on a free port: ``(page, session)``."""
    from odise_pl.app.page import launch
    from odise_pl.app.session import DemoSession

    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            outbound.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOCAL_HOSTS:
            outbound.append(address[0])
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        mp.setattr(socket.socket, "connect", connect)
        session = DemoSession.open(tiny_run, device="cpu")
        page = launch(session, port=None, block=False)
        try:
            yield page, session
        finally:
            page.close()
            session.close()
