"""The automatic filters of synthetic images, each a named, parameterised test (params.yaml quality.*):

- `reference`: a reference classifier trained on the real training images only (the study's CNN)
  rejects an image it assigns to another class or to its own with low confidence; its penultimate
  features are also the quality measures' feature space when no pretrained encoder is on the machine.
- `clip_score`: CLIP's image-text similarity to a per-class prompt, when a CLIP model is available.
- `blank`: an image with (nearly) no variation in its grey levels: blacked out or collapsed.

Near-copies of test images and images a safety checker blocked are flagged when generated
(generate.manifest) and left out of every mix; the quality stage reports them beside these.
"""
