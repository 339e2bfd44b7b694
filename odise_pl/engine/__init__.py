"""The engine: everything between a validated config and a finished run.

One job per module:

* :mod:`~odise_pl.engine.run_dirs`: where a run directory is chosen and claimed
  (``ROOT/NAME/version_N``, one choice for every rank of a launch) and where a run resumes;
* :mod:`~odise_pl.engine.run_files`: what a run directory holds (config, categories, weights)
  and how it is read back;
* :mod:`~odise_pl.engine.checkpoints`: checkpoint files (safe reads, config checks, safetensors);
* :mod:`~odise_pl.engine.weights`: loading trained weights into a model (evaluate, fine-tune);
* :mod:`~odise_pl.engine.components`: the data module and the model of a config;
* :mod:`~odise_pl.engine.scale_out`: global batch and the multi-GPU strategy;
* :mod:`~odise_pl.engine.trainer`: the Lightning Trainer and its callbacks;
* :mod:`~odise_pl.engine.fit`: ``odise-pl fit``;
* :mod:`~odise_pl.engine.evaluate`: ``odise-pl validate`` / ``test`` and ``test --sets``;
* :mod:`~odise_pl.engine.predictor`: a trained run on new images with a new vocabulary (``odise-pl predict``);
* :mod:`~odise_pl.engine.retrieval`: image <-> caption retrieval accuracy of a caption-grounding model;
* :mod:`~odise_pl.engine.results`: metric dicts, ``metrics.json`` / ``metrics.md`` tables;
* :mod:`~odise_pl.engine.quiet`: the framework messages filtered out of every run's output.

Every file is written through :mod:`odise_pl.atomic_files`, a leaf module below every layer.
Nothing is imported here, so ``import odise_pl.engine.run_dirs`` pulls in only what it needs.
"""
