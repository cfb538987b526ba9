"""Measurement scenarios beside the offline one: how load reaches the engine during the measured window.

- **offline** (the default): every prompt handed to the backend at once, the measured window around
  it. It is the protocol of `measure/experiment.py`, which predates this package and stays there.
- **serving** (`scenario: serving`): the engine runs as a server in the experiment's process and an
  open-loop load generator sends requests at a seeded arrival process for `serving.duration_s`
  (`serving.py` the protocol, `arrivals.py` the schedule, `loadgen.py` the client,
  `serving_metrics.py` the steady window, SLO and energy per request).

`measure.experiment.run` dispatches on `ExperimentConfig.scenario`, so a Ray worker and
`llem run` run either without knowing which.
"""
