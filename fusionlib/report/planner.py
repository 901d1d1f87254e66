"""The study planner: from one finished comparison's measured variance, the detectable
difference and the chance of showing equivalence for other numbers of patients and seeds.

The verdict's interval (:func:`fusionlib.metrics.patients_and_seeds_interval`) adds two
measured variances of the seed-averaged difference: the patient bootstrap's ``SE_p²`` (the
trained models held fixed) and the seeds' spread ``s²/S``. Three sources feed them, each of
which scales in its own way:

* **patients** ``σ²_pat``: which patients were sampled; shrinks as ``1/n``;
* **per-visit training noise** ``σ²_visit``: retraining moves each case's prediction
  differently; shrinks as ``1/n`` (averaged over cases) and as ``1/S`` (over seeds). A single
  seed's patient bootstrap sees it in full, the seed-averaged one divided by ``S``, and the
  seeds' spread sees it too;
* **per-seed shift** ``σ²_shift``: retraining moves a seed's models for every case alike;
  shrinks as ``1/S`` only.

Measured at ``n0`` patients and ``S0`` seeds (:meth:`VarianceComponents.measure`):
``σ²_visit = (mean_k SE_k² - SE_p²) / (1 - 1/S0)`` from each seed's own bootstrap ``SE_k``,
``σ²_pat = SE_p² - σ²_visit / S0``, ``σ²_shift = s² - σ²_visit``. A part can come out negative
by chance: the per-visit noise is then kept between 0 and the seeds' spread
(:meth:`VarianceComponents.from_raw`), so every part is at least 0 and the measured design is
predicted back exactly. (Averaging many studies' parts, as bench/bench_power.py does, averages
the raw ones first: clipping each would bias the shift upwards.) At ``n``
patients and ``S`` seeds, with ``r = n0 / n``, the interval a new study would compute has

    SE_p²(n, S) = (σ²_pat + σ²_visit / S) r,    s²(n, S) / S = (σ²_shift + σ²_visit r) / S,

its variance their sum and its degrees of freedom Welch-Satterthwaite's (``n - 1`` and
``S - 1``), exactly as the verdict computes them. The detectable difference at 80 % power and
the chance of showing equivalence when the true difference is 0 come from drawing that
study's verdict many times (:func:`verdict_draws`): with few seeds the measured spread of the
seeds, and with it the interval's width and degrees of freedom, varies from study to study,
which a formula with one fixed SE and df does not see. Checked by simulation:
bench/bench_power.py, docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import special

from ..results import headline_metrics
from .conclusions import DEFAULT_SETTINGS, ConclusionSettings

DEFAULT_PATIENTS = (120, 250, 500, 1000, 2000, 4000)
DEFAULT_SEEDS = (3, 5, 8, 12, 20)


@dataclass(frozen=True)
class VarianceComponents:
    """One comparison's variance parts, each as the variance it adds at ``n0`` patients
    (module docstring), and the observed difference."""

    delta: float
    n0: float
    s0: int
    patients: float
    visit: float
    shift: float
    shift_measured: bool = True      # False with one seed: no spread between seeds to read

    @classmethod
    def measure(cls, delta: float, se_patients: float, se_per_seed, per_seed,
                n_patients: float) -> "VarianceComponents":
        """From the seed-averaged bootstrap SE, each seed's own bootstrap SE and the per-seed
        differences of one comparison at ``n_patients`` patients (per seed)."""
        return cls.from_raw(*cls.raw_parts(se_patients, se_per_seed, per_seed), delta=delta,
                            n0=n_patients, s0=len(np.atleast_1d(per_seed)))

    @staticmethod
    def raw_parts(se_patients: float, se_per_seed, per_seed) -> tuple[float, float, float]:
        """(patients, visit, shift) as measured, negative values included: averaged over many
        studies they are unbiased (bench/bench_power.py averages these, then
        :meth:`from_raw`)."""
        per_seed = np.asarray(per_seed, dtype=float)
        s0, v_avg = len(per_seed), float(se_patients) ** 2
        if s0 < 2:
            return v_avg, 0.0, 0.0
        mean_single = float(np.mean(np.square(np.asarray(se_per_seed, dtype=float))))
        visit = (mean_single - v_avg) / (1 - 1 / s0)
        return v_avg - visit / s0, visit, float(per_seed.var(ddof=1)) - visit

    @classmethod
    def from_raw(cls, patients: float, visit: float, shift: float, delta: float, n0: float,
                 s0: int) -> "VarianceComponents":
        """Parts that are never negative and give back the measured design's interval: a
        negative shift means the seeds spread less than the per-visit noise measured by the
        bootstraps implies, so that noise is lowered to the seeds' spread (shift 0); a
        negative per-visit noise is 0. The patient part absorbs what moves (its SE_p² is
        kept)."""
        v_avg = patients + visit / s0 if s0 > 1 else patients
        spread = shift + visit
        visit = min(max(0.0, visit), max(0.0, spread)) if s0 > 1 else 0.0
        return cls(float(delta), float(n0), int(s0), max(0.0, v_avg - visit / s0), visit,
                   max(0.0, spread - visit) if s0 > 1 else 0.0, s0 > 1)

    def parts(self, n_patients: float, n_seeds: int) -> tuple[float, float, float]:
        """At ``n_patients`` x ``n_seeds``: the patient bootstrap's variance ``SE_p²``, the
        expected spread of one seed's difference ``σ²_shift + σ²_visit r``, and the true
        variance of the seed-averaged estimate ``SE_p² + σ²_shift / S``."""
        r = self.n0 / float(n_patients)
        v_pat = (self.patients + self.visit / n_seeds) * r
        return v_pat, self.shift + self.visit * r, v_pat + self.shift / n_seeds

    def interval(self, n_patients: float, n_seeds: int) -> tuple[float, float]:
        """(SE, df) of the verdict's interval at ``n_patients`` patients and ``n_seeds`` seeds."""
        if n_patients < 2 or n_seeds < 1:
            raise ValueError(f"need at least 2 patients and 1 seed, got {n_patients} and {n_seeds}")
        v_pat, sigma_seed, _ = self.parts(n_patients, n_seeds)
        se, df = _interval_se_df(v_pat, sigma_seed / n_seeds, n_patients, n_seeds)
        return float(se), float(df)


def _interval_se_df(v_pat, v_seed, n_patients: float, n_seeds: int):
    """SE and Welch-Satterthwaite df of the verdict's interval from its patient part ``SE_p²``
    and its seed part ``s²/S`` (arrays allowed), as
    :func:`fusionlib.metrics.patients_and_seeds_interval` computes them; one seed: the patient
    part alone."""
    if n_seeds < 2:
        v_seed = np.zeros_like(np.asarray(v_seed, dtype=float))
    var = v_pat + v_seed
    parts = v_pat ** 2 / (n_patients - 1) + (v_seed ** 2 / (n_seeds - 1) if n_seeds > 1 else 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(parts > 0, var ** 2 / parts, float(n_patients - 1))
    return np.sqrt(var), df


DRAWS = 20_000
"""Monte Carlo draws of a future study's verdict (:func:`verdict_draws`)."""

_T_GRID = np.linspace(0.0, 1.0, 8193)     # 1 / df from df = infinity down to df = 1


@lru_cache(maxsize=16)
def _t_quantile_table(q: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return special.stdtrit(1.0 / _T_GRID, q)


def t_quantile(q: float, df) -> np.ndarray:
    """Student's t quantile ``q`` at each of many degrees of freedom: interpolated in ``1/df``
    on a fixed table (within 2e-7 of :func:`scipy.stats.t.ppf` for every ``df >= 1``, and exact
    below), because an exact quantile per draw made the report's planner take 11 s."""
    df = np.asarray(df, dtype=float)
    out = np.interp(1.0 / df, _T_GRID, _t_quantile_table(float(q)))
    low = df < 1
    if np.any(low):
        out = np.where(low, special.stdtrit(np.where(low, df, 1.0), q), out)
    return out


@lru_cache(maxsize=64)
def _standard_draws(n_seeds: int, draws: int, random_state) -> tuple[np.ndarray, np.ndarray]:
    """The standard normal and chi-square(S - 1) draws behind :func:`verdict_draws`, the same
    for every design with ``n_seeds`` seeds (common random numbers), so drawn once."""
    rng = np.random.default_rng(random_state)
    normal = rng.standard_normal(draws)
    chi2 = rng.chisquare(n_seeds - 1, draws) if n_seeds > 1 else np.zeros(draws)
    normal.flags.writeable = chi2.flags.writeable = False
    return normal, chi2


def verdict_draws(components: VarianceComponents, n_patients: float, n_seeds: int,
                  settings: ConclusionSettings = DEFAULT_SETTINGS, draws: int = DRAWS,
                  random_state: int = 0) -> dict:
    """What a new study of ``n_patients`` x ``n_seeds`` would compute, drawn ``draws`` times.

    Its estimate misses the truth by ``N(0, SE_p² + σ²_shift / S)`` (the per-visit noise is in
    the patient part); its interval's seed part is ``s² / S`` with ``s²`` the spread of ``S``
    seeds, ``(σ²_shift + σ²_visit r) χ²(S - 1) / (S - 1)``, so with few seeds the interval's
    width and degrees of freedom vary from study to study as the verdict's own do, which a
    formula with one fixed SE and df misses (bench/bench_power.py). Returns per draw the
    estimate's deviation ``dev`` and the half-widths of the two-sided ``level`` interval
    (``half``) and of the two one-sided tests' interval (``half_equivalence``)."""
    if n_patients < 2 or n_seeds < 1:
        raise ValueError(f"need at least 2 patients and 1 seed, got {n_patients} and {n_seeds}")
    v_pat, sigma_seed, v_true = components.parts(n_patients, n_seeds)
    normal, chi2 = _standard_draws(int(n_seeds), int(draws), random_state)
    dev = normal * np.sqrt(v_true)
    spread = sigma_seed * chi2 / (n_seeds - 1) if n_seeds > 1 else np.zeros(draws)
    se, df = _interval_se_df(v_pat, spread / n_seeds, n_patients, n_seeds)
    return {"dev": dev, "half": t_quantile(0.5 + settings.level / 2, df) * se,
            "half_equivalence": t_quantile(settings.level, df) * se}


def predict(components: VarianceComponents, n_patients: float, n_seeds: int, margin: float,
            settings: ConclusionSettings = DEFAULT_SETTINGS, delta: float | None = None) -> dict:
    """At ``n_patients`` x ``n_seeds``: the interval's expected SE and df, the detectable
    difference at the settings' power, the power to find ``delta`` (default: the observed
    difference) were it true, and the chance of showing equivalence within ±``margin`` when
    the true difference is 0 -- each the share of :func:`verdict_draws` whose verdict says so
    (common random numbers: the same draws for every difference, so the figures are exact
    functions of the components and reproduce)."""
    se, df = components.interval(n_patients, n_seeds)
    d = verdict_draws(components, n_patients, n_seeds, settings)
    # A true difference D is found (on its side) when D + dev > half: D > half - dev.
    needed = d["half"] - d["dev"]
    delta = components.delta if delta is None else delta
    return {"patients": n_patients, "seeds": n_seeds, "se": se, "df": df,
            "detectable": float(np.quantile(needed, settings.power)),
            "power_observed": float(np.mean(needed < abs(delta))),
            "equivalence_power": float(np.mean(np.abs(d["dev"]) + d["half_equivalence"] < margin))}


def conclusive(prediction: dict, components: VarianceComponents, margin: float,
               settings: ConclusionSettings = DEFAULT_SETTINGS) -> bool:
    """A design is conclusive for this comparison when it detects, at the settings' power, a
    true difference as large as the margin or as the observed one (whichever is larger),
    so that a difference that matters is found and a null result shows equivalence."""
    return prediction["detectable"] <= max(margin, abs(components.delta))


def what_it_takes(components: VarianceComponents, margin: float,
                  patients=DEFAULT_PATIENTS, seeds=DEFAULT_SEEDS,
                  settings: ConclusionSettings = DEFAULT_SETTINGS) -> dict | None:
    """The cheapest design of the grid (patients x seeds: each seed trains every branch on
    every patient) that is :func:`conclusive`; None when none is."""
    best = None
    for n in patients:
        for s in seeds:
            p = predict(components, n, s, margin, settings)
            if conclusive(p, components, margin, settings):
                key = (n * s, s)
                if best is None or key < best[0]:
                    best = (key, p)
    return best[1] if best else None


def plan_grid(components: VarianceComponents, margin: float, patients=DEFAULT_PATIENTS,
              seeds=DEFAULT_SEEDS, settings: ConclusionSettings = DEFAULT_SETTINGS) -> pd.DataFrame:
    """Rows: patients; columns: seeds; cells: the detectable difference at the settings'
    power, with ``*`` where equivalence within the margin would be shown at that power too
    when the true difference is 0."""
    rows = []
    for n in patients:
        row = {"patients": n}
        for s in seeds:
            p = predict(components, n, s, margin, settings)
            mark = "*" if p["equivalence_power"] >= settings.power else ""
            row[f"{s} seeds"] = f"{p['detectable']:.3f}{mark}"
        rows.append(row)
    return pd.DataFrame(rows)



def plan_table(verdict: pd.DataFrame, patients=DEFAULT_PATIENTS, seeds=DEFAULT_SEEDS,
               settings: ConclusionSettings | None = None) -> pd.DataFrame:
    """One row per comparison of a verdict table (:func:`.verdict.verdict_table`) and metric:
    the measured difference, the variance parts (as shares of the measured interval's
    variance), the verdict, the detectable difference now, and the cheapest design of the grid
    that would make the answer conclusive (:func:`what_it_takes`)."""
    settings = settings or verdict.attrs.get("settings") or DEFAULT_SETTINGS
    rows = []
    labels = {m.name: f"Δ{m.label}" for m in verdict.attrs.get("metrics") or headline_metrics()}
    for (_, row), c in zip(verdict.iterrows(), verdict.attrs.get("compare", [])):
        for metric, label in labels.items():
            comp: VarianceComponents = c[metric]["components"]
            margin = settings.margin(metric)
            now = predict(comp, comp.n0, comp.s0, margin, settings)
            need = what_it_takes(comp, margin, patients, seeds, settings)
            var = now["se"] ** 2
            # The interval's variance at the measured design, by source: per-visit noise
            # enters both the patient bootstrap and the seeds' spread (module docstring).
            parts = {"patients": comp.patients, "visit noise": 2 * comp.visit / comp.s0,
                     "seed shift": comp.shift / comp.s0}
            rows.append({
                "data %": f"{row['data %']:g}", "variant": row["variant"], "run": row["run"],
                "metric": label, "Δ": c[metric]["delta"], "margin": margin,
                "patients": round(comp.n0), "seeds": comp.s0, "SE": now["se"],
                "share patients / visit noise / seed shift": " / ".join(
                    f"{v / var:.2f}" if var > 0 else "–" for v in parts.values()),
                "verdict": c[metric]["verdict"],
                f"detectable now ({settings.power:.0%} power)": now["detectable"],
                "conclusive at": (f"{need['patients']:,} patients x {need['seeds']} seeds"
                                  if need else "beyond the grid"),
                "its detectable": need["detectable"] if need else np.nan,
                "its equivalence power": need["equivalence_power"] if need else np.nan,
            })
    return pd.DataFrame(rows)
