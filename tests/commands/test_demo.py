"""`odise-pl demo`: an untrained evaluation, then training with in-fit validations, then the table."""

from pathlib import Path

from odise_pl.cli import main
from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[2]
TINY = micro_run(None, steps=4, val_every=2, num_val=4)  # demo --out places the data and the runs


def test_demo_evaluates_untrained_then_trains_and_prints_both(tmp_path, capsys, monkeypatch, caplog, recwarn):
    monkeypatch.chdir(REPO)
    assert main(["demo", "--out", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    # the framework noise is gone (odise_pl.engine.quiet), while odise-pl's own output stays
    said = out + "\n".join(r.getMessage() for r in caplog.records) + "\n".join(str(w.message) for w in recwarn)
    for noise in ("litlogger", "module(s) in eval mode", "LeafSpec", "was configured so 100%"):
        assert noise not in said, noise
    assert "| untrained |" in out and "| final |" in out
    run = tmp_path / "runs" / "quickstart_diffusion" / "version_0"
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    resolved = (run / "config.yaml").read_text()
    assert "name: diffusion_unet" in resolved and "tiny_unet:" in resolved  # the quick start is ODISE's backbone
