"""params.yaml as typed, validated settings, read once at the edge (the CLI) and handed down by section.

- `params`: `Params` and its sections (data, study, train, tune, quality, report), `load_params`.
- `generate`: the generate.* sections (one per generator); `models`: the train.<model> sections.
- `compute`: compute.* (device and precision) and `Compute`, that setting resolved against this machine.
- `types`: the value types and the base `Section`; `messages`: pydantic errors in the user's words.
- `hparams`: a run's hyperparameters, fixed (train.<model>) or tuned (tuned/best_params.yaml, its owner).
"""
