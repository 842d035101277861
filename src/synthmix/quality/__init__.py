"""How good a synthetic image set is, measured on feature arrays (numpy, shape (n, d)): pure functions.

- `kernel`: KID, the unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets.
- `manifold`: precision, recall, density and coverage (Naeem et al. 2020) on k-NN balls.
- `diversity`: the Vendi score with a cosine-similarity kernel.
- `nearest`: each synthetic image's nearest real image (cosine distance), the memorisation check.
- `resample`: percentile bootstrap intervals over two sets, and Spearman's rho with an interval.
- `per_class`: all of the above per class and pooled, with intervals, tolerating small classes.

These are pure: no files, no torch; a stage computes the features and hands the arrays in. Beside
them, importing none of them but `files`:

- `files`: quality/quality.json, its one owner.
- `filters/`: the automatic filters of synthetic images (the reference classifier, CLIP score, blanks).
- `review/`: the local page where a person accepts or rejects synthetic images.

The quality stage that runs them is synthmix.stages.quality.
"""

from synthmix.quality.diversity import vendi
from synthmix.quality.kernel import KernelDistance, kid, kid_interval, mmd2_unbiased
from synthmix.quality.manifold import PRDC, coverage_interval, prdc
from synthmix.quality.nearest import NearestReal, closest_pairs, nearest_real
from synthmix.quality.per_class import NearestSummary, Quality, QualityByClass, per_class_quality
from synthmix.quality.resample import BootstrapInterval, RankCorrelation, bootstrap_interval, rank_correlation

__all__ = [
    "PRDC",
    "BootstrapInterval",
    "KernelDistance",
    "NearestReal",
    "NearestSummary",
    "Quality",
    "QualityByClass",
    "RankCorrelation",
    "bootstrap_interval",
    "closest_pairs",
    "coverage_interval",
    "kid",
    "kid_interval",
    "mmd2_unbiased",
    "nearest_real",
    "per_class_quality",
    "prdc",
    "rank_correlation",
    "vendi",
]
