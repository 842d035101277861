"""The real image set and what a mix trains on.

- `real`: scan, validate and decode the real folder, prepared/*.csv (its owner).
- `copies`: near-copies: each image's fingerprint, the search, the aligned comparison.
- `importing`: the embedded default data (scikit-learn's digits) and a user's own folder.
- `split`: the seeded train / test / extra / pool split and prepared/split.json.
- `images`: the decoded-image cache (.cache/synthmix/images/).
- `mixes`: the mix notation (`30r15s-sd15@filtered+aug`) and a mix's training images.
- `vetting`: vetting/decisions.csv and quality/filters.csv, what a vetted mix leaves out.
"""
