"""Sweeps as a library: what ``odise-pl sweep`` and its launchers share.

* :mod:`.plan`: a sweep file's runs, each with its overrides, config and directory (:class:`PlannedRun`);
* :mod:`.plan_file`: ``sweep.json``, the planned runs written before any starts;
* :mod:`.run_state`: what a run's directory says (pending, running, done, failed); whether a run is
  finished and where it resumes is the engine's rule (:mod:`odise_pl.engine.run_dirs`);
* :mod:`.summary`, :mod:`.hparams_view`, :mod:`.collect`, :mod:`.plot`: the summary tables, the
  TensorBoard HPARAMS view and the figures, rebuilt from the run directories at any time.

Where the runs execute is :mod:`odise_pl.launchers`; the command line is :mod:`odise_pl.commands.sweep`.
"""
