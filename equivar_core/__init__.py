"""equivar's science: which units of a vision model are transformed copies of one another.

One module per stage, in the order of the pipeline:

- :mod:`.models` (architectures, loading, layer names), :mod:`.images` (natural images),
- :mod:`.transforms` (rotation, flip, hue, scale: on images, points and kernels),
- :mod:`.stimuli` (every synthetic stimulus), :mod:`.capture` (hooks, receptive fields),
- :mod:`.activations` (streamed samples of natural images and their transforms),
- :mod:`.tuning` (tuning curves and profiles), :mod:`.scores` (transform scores, linear maps),
- :mod:`.families` (family estimators), :mod:`.sweeps` (the paper's rotation test),
- :mod:`.circuits` (expanded weights, circuit equivariance),
- :mod:`.storage` (atomic Parquet and the DuckDB catalog), :mod:`.report`, :mod:`.featurevis`,
- :mod:`.stages` (one function per pipeline asset), :mod:`.settings`, :mod:`.validate`,
  :mod:`.planted` (networks with known structure, for the tests).

Nothing here imports Dagster.
"""
