"""The training layer: a run's hyper-parameters (:class:`~gradgeo.training.config.TrainConfig`), the engine
(:mod:`gradgeo.training.engine`: one resumable loop for any model and objective) and data-parallel support
(:mod:`gradgeo.training.ddp`). It builds on the channel-metric layer (optimizers from spec strings), models and
data; the tasks above it supply models and objectives."""
