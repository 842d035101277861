"""Coverage and power of the report's inference, on simulated studies, through the report's own code.

Each simulated study has two mixes, a and b, with S replicates each, scored on the same test images
(10 classes x 30 images, as the embedded digits' test split). Whether a prediction is right is drawn
from a logit made of: the image's difficulty (shared by every run), an image x mix interaction (how
much easier the image happens to be for b than for a: the part of the test-image draw every replicate
shares), a replicate shift shared by both mixes (it cancels in the pair), a shift per run (training
randomness) and, for b, the true effect. A wrong prediction is a random other class. Each batch of
studies goes through `stats.bootstrap_differences` (the paired bootstrap over test images and the
replicate + image standard error, Student t) on macro F1, the report's primary metric.

Reported per regime (which noise dominates) and replicate count:
- coverage: the share of 95% intervals holding the true change (0 with no effect), and the
  false-positive rate (p < 0.05 with no true change);
- power: the share of studies with p < 0.05 at a few true effects, with the true change in macro F1
  (the mean estimate over the studies) and the median smallest detectable change the report would state
  (80% power at alpha 0.05, `stats.minimum_detectable`) for comparison.

Run from the repository root:  .venv/bin/python bench/bench_stats.py [--studies 1000] [--samples 1000]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from common import append_results, command_line, describe_machine, markdown_table, set_threads, stopwatch

from synthmix.report import stats

CLASSES, PER_CLASS = 10, 30
# (sd of each run's replicate-level shift, sd of the image x mix interaction), logit scale
REGIMES = {"replicate noise dominates": (0.35, 0.0), "image noise dominates": (0.0, 1.5), "both": (0.2, 1.0)}
EFFECTS = (0.0, 0.25, 0.5, 1.0)  # true logit shift of b


def simulate(rng: np.random.Generator, studies: int, replicates: int, regime: str, effect: float):
    """y (images,) and predictions of a and b per study, each (studies, replicates, images)."""
    replicate_sd, image_sd = REGIMES[regime]
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    n = y.size
    difficulty = 1.0 + 1.5 * rng.standard_normal((studies, 1, n))
    interaction = image_sd * rng.standard_normal((studies, 1, n))
    shared = rng.standard_normal((studies, replicates, 1))

    def predict(sign: float, shift: float) -> np.ndarray:
        run = replicate_sd * rng.standard_normal((studies, replicates, 1))
        logit = difficulty + shared + run + sign * interaction / 2 + shift
        right = rng.random((studies, replicates, n)) < 1 / (1 + np.exp(-logit))
        wrong_class = (y + rng.integers(1, CLASSES, (studies, replicates, n))) % CLASSES
        return np.where(right, y, wrong_class)

    return y, predict(-1.0, 0.0), predict(1.0, effect)


def run_cell(seed: int, studies: int, replicates: int, regime: str, effect: float, samples: int, batch: int):
    """Estimates, interval bounds, p-values and detectable changes of `studies` simulated studies."""
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("estimate", "low", "high", "p", "mde")}
    for start in range(0, studies, batch):
        q = min(batch, studies - start)
        y, a, b = simulate(rng, q, replicates, regime, effect)
        sets = {**{f"a{i}": a[i] for i in range(q)}, **{f"b{i}": b[i] for i in range(q)}}
        result = stats.bootstrap_differences(
            y, sets, [(f"a{i}", f"b{i}") for i in range(q)], CLASSES, samples=samples, confidence=0.95,
            seed=seed + start,
        )  # fmt: skip
        for changes in result.values():
            d = changes.metrics["f1_macro"]
            out["estimate"].append(d.estimate)
            out["low"].append(d.low)
            out["high"].append(d.high)
            out["p"].append(d.p_value)
            out["mde"].append(stats.minimum_detectable(d, 0.05, 0.8))
    return {k: np.array(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=1000, help="Simulated studies per cell.")
    parser.add_argument("--samples", type=int, default=1000, help="Bootstrap resamples per study.")
    parser.add_argument("--replicates", type=int, nargs="+", default=[3, 5, 10])
    parser.add_argument("--batch", type=int, default=50, help="Studies bootstrapped together in one call.")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    machine = describe_machine(set_threads(None))
    command = command_line()
    se = math.sqrt(0.05 * 0.95 / args.studies)
    coverage_rows, power_rows = [], []
    with stopwatch() as elapsed:
        for regime in REGIMES:
            for s in args.replicates:
                powers, truths, mdes = [], [], []
                for e, effect in enumerate(EFFECTS):
                    r = run_cell(1000 * s + 10 * e + list(REGIMES).index(regime), args.studies, s, regime,
                                 effect, args.samples, args.batch)  # fmt: skip
                    truth = 0.0 if effect == 0 else float(np.mean(r["estimate"]))
                    rejected = float(np.mean(r["p"] < 0.05))
                    if effect == 0:
                        covered = float(np.mean((r["low"] <= truth) & (truth <= r["high"])))
                        coverage_rows.append([regime, s, f"{covered:.3f}", f"{rejected:.3f}"])
                        print(markdown_table(COVERAGE_HEADER, coverage_rows[-1:]), flush=True)
                    else:
                        powers.append(f"{rejected:.2f}")
                        truths.append(f"{truth:+.3f}")
                    mdes.append(float(np.nanmedian(r["mde"])))
                power_rows.append([regime, s, *(f"{p} ({t})" for p, t in zip(powers, truths, strict=True)),
                                   f"{np.median(mdes):.3f}"])  # fmt: skip
                print(markdown_table(power_header(), power_rows[-1:]), flush=True)
    body = f"""{args.studies} simulated studies per cell, each two mixes x S replicates scored on the same
{CLASSES * PER_CLASS} test images ({CLASSES} classes), macro F1, {args.samples} bootstrap resamples, through
`stats.bootstrap_differences` (spread over replicates + shared test-image covariance, Student t with S - 1
df when the spread dominates, else Welch-Satterthwaite). Binomial standard error of a 5% rate: {se:.3f}.
Simulation in bench/bench_stats.py's docstring; {elapsed():.0f} s in all.

Coverage of the 95% interval and false-positive rate (p < 0.05) with no true change:

{markdown_table(COVERAGE_HEADER, coverage_rows)}

Power (share of studies with p < 0.05, unadjusted) at true logit effects
{", ".join(map(str, EFFECTS[1:]))}, with the true change in macro F1 in brackets, and the median smallest detectable change (80% power, alpha
0.05) the report would state:

{markdown_table(power_header(), power_rows)}
"""
    print(body)
    if not args.no_append:
        append_results("Report inference: coverage and power", command, machine, body)


COVERAGE_HEADER = ["regime", "replicates", "95% interval coverage", "false-positive rate"]


def power_header() -> list[str]:
    return [
        "regime",
        "replicates",
        *(f"power at effect {e} (true change)" for e in EFFECTS[1:]),
        "median detectable change",
    ]


if __name__ == "__main__":
    main()
