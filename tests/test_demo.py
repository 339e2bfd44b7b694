"""`odise-pl demo`: an untrained evaluation, then training with in-fit validations, then the table."""

from pathlib import Path

from odise_pl.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.num_train=8", "data.num_val=4", "data.image_size=64", "data.crop_size=64",
        "data.eval_short_side=64", "data.eval_max_long_side=64", "data.batch_size=2", "data.eval_batch_size=2",
        "data.num_workers=0", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "model.mask_generator.dec_layers=1", "model.mask_generator.train_num_points=256",
        "trainer.enable_progress_bar=false"]


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
