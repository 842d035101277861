"""Actual coverage of the per-class quality intervals at nominal 90%, on simulated Gaussian features.

The report shows, per class, an interval for coverage (Naeem et al. 2020; `quality.coverage_interval`)
and for KID (`quality.kid_interval`). Each setting draws `n_real` real rows from N(0, I_d) and `n_fake`
synthetic rows from N(0, I_d) ("same") or from N(3 e_1, I_d) ("shifted": a mean shift of 3 standard
deviations along one axis, which brings expected coverage to 0.28-0.92), in d = 2, 8 and 32. The estimand of an interval is
the expected value of its statistic at the same (n_real, n_fake, k): coverage is not an unbiased
estimate of any population quantity free of n, so that expectation is what a per-class interval can
claim. It is estimated by the mean of the statistic over `--truth` fresh draws of both sets (KID's
estimator is unbiased, so its mean is the population MMD^2).

Every replication draws fresh sets, computes the bootstrap resamples once (each set resampled with
replacement, a row's copies not its own neighbours, the draws `resample.bootstrap_interval` makes for
the same seed) and the two-sample jackknife (leave one real row out, leave one synthetic row out), and
builds from them, at 90%:
- percentile: the bootstrap percentile interval (the method before this bench);
- basic: the reverse percentile interval, 2 * estimate - the percentiles;
- BC / BCa: the bias-corrected percentile interval (z0 from the share of resamples below the estimate,
  ties counted half), and with the jackknife acceleration;
- normal (boot SE): estimate +- z * the bootstrap standard deviation, clipped to [0, 1];
- Wilson (n): the Wilson score interval treating coverage as a proportion of n_real independent rows;
- Wilson (deff, boot) / (deff, jack): the Wilson interval with n_real / deff rows, deff = the bootstrap
  (or jackknife) variance over the binomial one p (1 - p) / n_real, at least 1;
- Wilson (deff, boot, shrunk p): the same with the binomial variance at the Agresti-Coull proportion
  (x + z^2 / 2) / (n + z^2), which gives a design effect at an estimate of 0 or 1 too;
- Clopper-Pearson (deff, boot) / (..., shrunk p): the exact binomial interval (beta quantiles at
  estimate * n_eff successes) with the effective size of the two Wilson rows above;
- normal (jack SE): estimate +- z * the jackknife standard error, clipped to [0, 1];
- percentile (fake only): the percentile interval resampling only the synthetic rows, real balls fixed;
plus `quality.coverage_interval` as installed (timed, and checked against the row it should equal) and
`quality.kid_interval` (percentile) for reference.

Run from the repository root:  .venv/bin/python bench/bench_quality_intervals.py [--reps 200]
[--samples 200] [--truth 4000] [--no-append]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from common import append_results, command_line, describe_machine, markdown_table, set_threads, stopwatch
from scipy import stats
from sklearn.metrics.pairwise import euclidean_distances

from synthmix import quality as q

CONFIDENCE, K, N_REAL, SHIFT = 0.9, 5, 30, 3.0
SETTINGS = [(dist, d, m) for dist in ("same", "shifted") for d in (2, 8, 32) for m in (30, 90)]


def draw(rng: np.random.Generator, dist: str, d: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    real = rng.standard_normal((N_REAL, d))
    fake = rng.standard_normal((m, d))
    if dist == "shifted":
        fake[:, 0] += SHIFT
    return real, fake


def coverages(d_rr: np.ndarray, d_rf: np.ndarray, i: np.ndarray, j: np.ndarray, k: int = K) -> np.ndarray:
    """Coverage of each row of index sets i (B, n') of real rows and j (B, m') of synthetic rows, a real
    row's copies left out of its own neighbours (as `manifold._radii`)."""
    rr = d_rr[i[:, :, None], i[:, None, :]]
    rr[i[:, :, None] == i[:, None, :]] = np.inf
    radii = np.partition(rr, k - 1, axis=2)[:, :, k - 1]
    return (d_rf[i[:, :, None], j[:, None, :]].min(axis=2) < radii).mean(axis=1)


def without_each(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Jackknife index sets: each real row left out once (all synthetic rows), then each synthetic row."""
    drop = lambda size: np.array([np.delete(np.arange(size), x) for x in range(size)])  # noqa: E731
    return drop(n), np.tile(np.arange(m), (n, 1)), np.tile(np.arange(n), (m, 1)), drop(m)


def wilson(p: float, n_eff: float, z: float) -> tuple[float, float]:
    denom = 1 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff))
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson(p: float, n_eff: float, alpha: float) -> tuple[float, float]:
    x = p * n_eff
    low = stats.beta.ppf(alpha, x, n_eff - x + 1) if x > 0 else 0.0
    high = stats.beta.ppf(1 - alpha, x + 1, n_eff - x) if x < n_eff else 1.0
    return float(low), float(high)


def intervals(
    real: np.ndarray, fake: np.ndarray, samples: int, seed: int
) -> tuple[dict[str, tuple[float, float]], float]:
    """Every candidate interval of coverage for one pair of sets."""
    n, m = len(real), len(fake)
    d_rr, d_rf = euclidean_distances(real), euclidean_distances(real, fake)
    est = float(coverages(d_rr, d_rf, np.arange(n)[None], np.arange(m)[None])[0])
    rng = np.random.default_rng(seed)  # the draws of resample.bootstrap_interval, in its order
    draws = [(rng.integers(0, n, n), rng.integers(0, m, m)) for _ in range(samples)]
    boot = coverages(d_rr, d_rf, np.array([a for a, _ in draws]), np.array([b for _, b in draws]))
    fixed = np.tile(np.arange(n), (samples, 1))
    fake_only = coverages(d_rr, d_rf, fixed, np.random.default_rng(seed).integers(0, m, (samples, m)))
    ri, rj, fi, fj = without_each(n, m)
    jr, jf = coverages(d_rr, d_rf, ri, rj), coverages(d_rr, d_rf, fi, fj)
    jack_var = (n - 1) / n * ((jr - jr.mean()) ** 2).sum() + (m - 1) / m * ((jf - jf.mean()) ** 2).sum()

    alpha = (1 - CONFIDENCE) / 2
    z = stats.norm.ppf(1 - alpha)
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    out = {"percentile": (lo, hi), "basic": (2 * est - hi, 2 * est - lo)}
    below = (np.mean(boot < est) + 0.5 * np.mean(boot == est)).clip(0.5 / samples, 1 - 0.5 / samples)
    z0 = stats.norm.ppf(below)
    influence = np.concatenate([(n - 1) * (jr.mean() - jr), (m - 1) * (jf.mean() - jf)])
    accel = (influence**3).sum() / (6 * (influence**2).sum() ** 1.5) if influence.any() else 0.0
    for name, a in (("BC", 0.0), ("BCa", accel)):
        levels = [stats.norm.cdf(z0 + (z0 + zz) / (1 - a * (z0 + zz))) for zz in (-z, z)]
        out[name] = tuple(np.quantile(boot, levels))
    boot_sd = float(boot.std(ddof=1))
    out["normal (boot SE)"] = (max(0.0, est - z * boot_sd), min(1.0, est + z * boot_sd))
    out["normal (jack SE)"] = (
        max(0.0, est - z * math.sqrt(jack_var)),
        min(1.0, est + z * math.sqrt(jack_var)),
    )
    binomial = est * (1 - est) / n
    out["Wilson (n)"] = wilson(est, n, z)
    for name, var in (("Wilson (deff, boot)", boot_sd**2), ("Wilson (deff, jack)", jack_var)):
        deff = max(1.0, var / binomial) if binomial > 0 else 1.0
        out[name] = wilson(est, n / deff, z)
    shrunk = (est * n + z * z / 2) / (n + z * z)  # Agresti-Coull: defined at 0 and 1
    n_eff = n / max(1.0, boot_sd**2 / (shrunk * (1 - shrunk) / n))
    out["Wilson (deff, boot, shrunk p)"] = wilson(est, n_eff, z)
    out["Clopper-Pearson (deff, boot)"] = clopper_pearson(
        est, n / (max(1.0, boot_sd**2 / binomial) if binomial > 0 else 1.0), alpha
    )
    out["Clopper-Pearson (deff, boot, shrunk p)"] = clopper_pearson(est, n_eff, alpha)
    out["percentile (fake only)"] = tuple(np.quantile(fake_only, [alpha, 1 - alpha]))
    return {name: (float(a), float(b)) for name, (a, b) in out.items()}, est


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=200, help="Replications per setting.")
    parser.add_argument("--samples", type=int, default=200, help="Bootstrap resamples per interval.")
    parser.add_argument("--truth", type=int, default=4000, help="Fresh draws estimating each estimand.")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()
    machine = describe_machine(set_threads(1))
    command = command_line()

    rows, width_rows, time_rows, methods = [], [], [], None
    with stopwatch() as elapsed:
        for s, (dist, d, m) in enumerate(SETTINGS):
            rng = np.random.default_rng(1000 + s)
            truth_sets = [draw(rng, dist, d, m) for _ in range(args.truth)]
            cov_truth = float(np.mean([q.prdc(r, f, K).coverage for r, f in truth_sets]))
            kid_truth = float(np.mean([q.mmd2_unbiased(r, f) for r, f in truth_sets]))
            hits, widths, lib_hits, lib_width, kid_hits = {}, {}, 0, 0.0, 0
            t_bench = t_lib = t_kid = 0.0
            for rep in range(args.reps):
                real, fake = draw(rng, dist, d, m)
                t0 = time.perf_counter()
                found, est = intervals(real, fake, args.samples, seed=rep)
                t1 = time.perf_counter()
                lib = q.coverage_interval(real, fake, K, args.samples, CONFIDENCE, seed=rep)
                t2 = time.perf_counter()
                kid = q.kid_interval(real, fake, args.samples, CONFIDENCE, seed=rep)
                t3 = time.perf_counter()
                t_bench, t_lib, t_kid = t_bench + t1 - t0, t_lib + t2 - t1, t_kid + t3 - t2
                assert lib.estimate == est
                for name, (lo, hi) in found.items():
                    hits[name] = hits.get(name, 0) + (lo <= cov_truth <= hi)
                    widths[name] = widths.get(name, 0.0) + hi - lo
                lib_hits += lib.covers(cov_truth)
                lib_width += lib.high - lib.low
                kid_hits += kid.covers(kid_truth)
            methods = [*hits, "coverage_interval (installed)", "kid_interval (percentile)"]
            label = [dist, d, m, f"{cov_truth:.3f}"]
            rows.append([*label, *(f"{hits[x] / args.reps:.2f}" for x in hits),
                         f"{lib_hits / args.reps:.2f}", f"{kid_hits / args.reps:.2f}"])  # fmt: skip
            width_rows.append([*label, *(f"{widths[x] / args.reps:.3f}" for x in widths),
                               f"{lib_width / args.reps:.3f}", ""])  # fmt: skip
            time_rows.append([*label, f"{1000 * t_lib / args.reps:.1f}", f"{1000 * t_bench / args.reps:.1f}",
                              f"{1000 * t_kid / args.reps:.1f}"])  # fmt: skip
            print(f"[{s + 1}/{len(SETTINGS)} {elapsed():.0f} s] " + " ".join(map(str, rows[-1])), flush=True)
    header = ["fake", "d", "n_fake", "E[coverage]", *methods]
    old, new = methods.index("percentile") + 4, methods.index("coverage_interval (installed)") + 4
    span = lambda col: f"{min(float(r[col]) for r in rows):.2f}-{max(float(r[col]) for r in rows):.2f}"  # noqa: E731
    ratios = [float(w[new]) / float(w[old]) for w in width_rows]
    summary = f"""Actual coverage of the percentile interval (the method before this bench): {span(old)}; of
`coverage_interval` as installed (the Clopper-Pearson interval with effective size n_real / deff, deff
the bootstrap variance over the binomial one, at least 1; the "Clopper-Pearson (deff, boot)" column):
{span(new)}, {min(ratios):.2f}-{max(ratios):.2f} times the percentile interval's mean width."""
    se = math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / args.reps)
    body = f"""Actual coverage of nominal {CONFIDENCE:.0%} intervals: n_real = {N_REAL}, k = {K}, real N(0, I_d),
synthetic N(0, I_d) ("same") or N({SHIFT:g} e_1, I_d) ("shifted"); {args.reps} replications per setting,
{args.samples} bootstrap resamples each; estimand E[coverage] (and E[KID]) at the same sizes from
{args.truth} fresh draws. Binomial standard error of a 90% rate: {se:.3f}. Methods in the bench's
docstring; {elapsed():.0f} s in all.

{markdown_table(header, rows)}

{summary}

Mean width:

{markdown_table(header[:-1], [r[:-1] for r in width_rows])}

Milliseconds per interval ({args.samples} resamples): `coverage_interval` as installed, every candidate
of the bench together (vectorised, one bootstrap shared), `kid_interval`:

{markdown_table(["fake", "d", "n_fake", "E[coverage]", "coverage_interval", "all candidates", "kid_interval"], time_rows)}
"""
    print(body)
    if not args.no_append:
        append_results("Quality intervals: actual coverage at nominal 90%", command, machine, body)


if __name__ == "__main__":
    main()
