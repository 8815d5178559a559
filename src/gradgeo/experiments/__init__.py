"""Experiments over many runs: tuning (:mod:`gradgeo.experiments.tune`) and comparison grids shared by several
worker processes (:mod:`gradgeo.experiments.queue`), both on Optuna studies (the optional extra
``gradgeo[tune]``). Import the submodules directly; this package imports nothing."""
