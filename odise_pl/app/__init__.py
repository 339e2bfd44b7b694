"""The web demo (``odise-pl app``): a Gradio page and a ``/segment`` API over a trained run.

* :mod:`~odise_pl.app.session`: the model side, without Gradio: one
  :class:`~odise_pl.engine.predictor.Predictor` loaded once, a request's vocabulary and
  classifier, the files ``odise-pl predict`` writes;
* :mod:`~odise_pl.app.page`: the page and its named endpoint (imports Gradio);
* ``examples/``: the two COCO photos the page offers as examples.

Nothing is imported here, so the command line stays light.
"""
