"""One module per pipeline stage, each named as dvc.yaml names the stage (docs/layout.md maps them).

Every stage has one shape: `<stage>_stage(...)` takes the typed settings the CLI read, reads its
inputs, calls the pieces below it, writes its outputs through their owners and logs its MLflow run,
and returns what the CLI prints. No stage imports another.
"""
