"""Ground truth of every synthetic preset: Bayes AUC from the latent model, and achieved figures.

Usage: .venv/bin/python bench/bench_presets.py [--seeds 0 1 2] [--n-patients 120]
       [--presets dfu_like ...] [--mc 400000]

Per preset and modality it prints
* the Bayes one-vs-rest AUC per class (I, P, R) of the case-level latent, from the
  generator's own class-conditional distributions (Gaussians, or mixtures for classes with
  signal 0) by Monte Carlo on ``--mc`` draws: the best any model can do on that latent
  (the image figure ignores the per-image jitter and the rendering, so it is an upper
  bound); ``fused`` is the Bayes AUC of both latents together (it falls with shared_effect);
* the achieved one-vs-rest AUC per class and QWK, min-max over the cohort seeds, of a
  patient-grouped 5-fold Random Forest on the clinical table and of a logistic regression
  on wound-box colour means of the thermal maps (image probabilities averaged per case;
  cases without an image left out), as the docstring of fusionlib.synthetic.presets describes.

The module docstring's presets table records these figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fusionlib.truth import (clinical_matrix, image_features, out_of_fold_proba, reference_forest,
                             reference_logistic)  # noqa: E402

LABELS = ("I", "P", "R")


# --------------------------------------------------------------------------- Bayes, from the model


def _component_weights(signal, mix) -> np.ndarray:
    """(3 classes, 4 components) P(mean component | class); component 3 is the origin."""
    from fusionlib.synthetic import decoy_classes

    weights = np.zeros((3, 4))
    grid = (np.arange(20000) + 0.5) / 20000  # decoy picks are a deterministic map of u
    for c in range(3):
        picks = decoy_classes(signal, mix, np.full(len(grid), c), grid)
        weights[c] = np.bincount(picks % 4, minlength=4) / len(grid)  # -1 -> 3 (origin)
    return weights


def _log_pair_density(x, y, rho, sd):
    """log density of the axis pairs (x_k, y_k), each bivariate normal with sd ``sd`` and
    correlation ``rho`` (the shared visit effect), summed over the axes."""
    var = sd ** 2
    det = var ** 2 * (1 - rho ** 2)
    quad = (x ** 2 - 2 * rho * x * y + y ** 2) / (var * (1 - rho ** 2))
    return (-0.5 * quad - np.log(2 * np.pi) - 0.5 * np.log(det)).sum(axis=-1)


def bayes_aucs(knobs: dict, n: int, seed: int = 12345) -> dict[str, list[float]]:
    """Bayes one-vs-rest AUC per class for the clinical latent, the image latent and both."""
    from sklearn.metrics import roc_auc_score

    from fusionlib.synthetic import class_means
    from fusionlib.synthetic.latents import CASE_SD, case_means

    rng = np.random.default_rng(seed)
    mix = np.asarray(knobs["class_mix"], dtype=float)
    mix = mix / mix.sum()
    rho = knobs["shared_effect"]
    label = rng.choice(3, size=n, p=mix)
    common = rng.normal(0.0, CASE_SD, size=(n, 2))

    def draw(signal):
        own = rng.normal(0.0, CASE_SD, size=(n, 2))
        noise = np.sqrt(1 - rho) * own + np.sqrt(rho) * common
        return case_means(signal, mix, label, rng.random(n)) + noise

    clinical, image = draw(knobs["clinical_signal"]), draw(knobs["image_signal"])
    components = {}
    for name, signal in (("clinical", knobs["clinical_signal"]), ("image", knobs["image_signal"])):
        means = np.vstack([class_means(signal, mix), np.zeros((1, 2))])
        components[name] = (means, _component_weights(signal, mix))

    def class_log_density(name, z):
        means, weights = components[name]
        # log p(z | class) = log sum_k w[c, k] N(z; m_k, sd^2 I)
        comp = np.stack([(-0.5 * ((z - m) / CASE_SD) ** 2).sum(axis=1) for m in means],
                        axis=1)  # (n, 4), up to a constant shared by all components
        with np.errstate(divide="ignore"):
            return np.stack([np.logaddexp.reduce(comp + np.log(weights[c]), axis=1)
                             for c in range(3)], axis=1)

    def joint_log_density():
        (mc, wc), (mi, wi) = components["clinical"], components["image"]
        out = np.full((n, 3), -np.inf)
        for a in range(4):
            for b in range(4):
                comp = _log_pair_density(clinical - mc[a], image - mi[b], rho, CASE_SD)
                with np.errstate(divide="ignore"):
                    for c in range(3):
                        out[:, c] = np.logaddexp(out[:, c],
                                                 comp + np.log(wc[c, a]) + np.log(wi[c, b]))
        return out

    result = {}
    for name, logp in (("clinical", class_log_density("clinical", clinical)),
                       ("image", class_log_density("image", image)),
                       ("fused", joint_log_density())):
        aucs = []
        for c in range(3):
            rest = [k for k in range(3) if k != c]
            log_rest = np.logaddexp.reduce(logp[:, rest] + np.log(mix[rest] / mix[rest].sum()), axis=1)
            score = logp[:, c] - log_rest
            aucs.append(float(roc_auc_score(label == c, np.nan_to_num(score, nan=0.0))))
        result[name] = aucs
    return result


# --------------------------------------------------------------------------- achieved, on cohorts


def _scores(y, proba) -> list[float]:
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    aucs = [float(roc_auc_score(y == c, proba[:, c])) for c in range(3)]
    return aucs + [float(cohen_kappa_score(y, proba.argmax(1), weights="quadratic"))]


def achieved(preset: str, seed: int, n_patients: int, work: Path) -> dict[str, list[float]]:
    from fusionlib.synthetic import generate_cohort
    from fusionlib.data import load_cohort

    cohort = load_cohort(generate_cohort(work / f"{preset}_seed{seed}", preset, random_state=seed,
                                         n_patients=n_patients))
    y, groups = cohort.y, cohort.groups
    clinical = out_of_fold_proba(reference_forest, clinical_matrix(cohort), y, groups, seed)
    X, position = image_features(cohort)
    proba = out_of_fold_proba(reference_logistic, X, y[position], groups[position], seed)
    per_case = pd.DataFrame(proba).groupby(position).mean()
    return {"clinical": _scores(y, clinical),
            "image": _scores(y[per_case.index.to_numpy()], per_case.to_numpy()),
            "n_cases": cohort.n_cases}


# --------------------------------------------------------------------------- table


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}"


def main() -> int:
    from fusionlib.synthetic import PRESETS, resolve_knobs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-patients", type=int, default=120)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--mc", type=int, default=400_000, help="Monte Carlo draws for Bayes AUC")
    args = parser.parse_args()

    print(f"# presets at {args.n_patients} patients, cohort seeds {args.seeds}; Bayes by Monte "
          f"Carlo ({args.mc} draws); achieved: min-max over seeds")
    print(f"{'preset':<23}{'modality':<9}{'Bayes AUC I / P / R':<21}"
          f"{'ach. AUC I':<11}{'P':<11}{'R':<11}{'QWK'}")
    with tempfile.TemporaryDirectory(prefix="fusionlib-presets-") as tmp:
        for preset in args.presets:
            knobs = resolve_knobs(preset, n_patients=args.n_patients)
            bayes = bayes_aucs(knobs, args.mc)
            runs = [achieved(preset, seed, args.n_patients, Path(tmp)) for seed in args.seeds]
            for modality in ("clinical", "image", "fused"):
                # The fused ceiling is near 1: three decimals show what shared_effect costs.
                digits = 3 if modality == "fused" else 2
                b = " / ".join(f"{v:.{digits}f}" for v in bayes[modality])
                if modality == "fused":
                    print(f"{preset:<23}{modality:<9}{b}")
                    continue
                cols = "".join(f"{_span([r[modality][k] for r in runs]):<11}" for k in range(3))
                print(f"{preset:<23}{modality:<9}{b:<21}{cols}"
                      f"{_span([r[modality][3] for r in runs])}", flush=True)
            print(f"{'':<23}({', '.join(str(r['n_cases']) for r in runs)} cases)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
