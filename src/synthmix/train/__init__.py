"""Training a classifier on a mix's images.

- `fit`: the training loop (pure: images and settings in, a trained model and its curves out).
- `features`: the frozen-backbone feature cache (.cache/synthmix/features/).
- `augment`: the augmentation policy (augmented copies and on-the-fly augmentation).
- `tune/`: per-(model, mix) hyperparameter tuning with Optuna.

The train stage (plan, fingerprint, worker pool, MLflow) is synthmix.stages.train.
"""
