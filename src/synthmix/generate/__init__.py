"""The generate stage as a package: one job per module, data flowing one way.

- `manifest`: the one owner of synthetic/ (its layout, each PNG's embedded record, manifest.csv);
  light, so training and the report read the manifest without importing torch or diffusers.
- `ddpm`, `text2image`: the two generators' model code; `text2image_fast` its fast path on CUDA.
- `sources`: both generators behind one interface, and `SOURCES`, the registry naming them.
- `samples`: the real-vs-synthetic sample grids in samples/.
The stage itself, `generate_stage(params)` (planning, sharding, resuming and MLflow logging), is
synthmix.stages.generate.

Imports run `sources -> ddpm, text2image, text2image_fast, lora -> checkpoints` and `samples -> manifest`, never back.
This file imports nothing, so importing `synthmix.generate.manifest` stays cheap.
"""
