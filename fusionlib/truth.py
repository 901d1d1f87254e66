"""Reference features that measure how much class signal a cohort's modalities carry.

Simple, fixed models read them (a Random Forest on the table, a logistic regression on wound-box
colour statistics), so the presets' ground-truth table (``bench/bench_presets.py``) and the
cohort tests measure the signal the same way, independent of the CNN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def clinical_matrix(cohort) -> np.ndarray:
    """The clinical features as floats: categories as their codes, missing values as NaN."""
    frame = cohort.features.copy()
    for col in cohort.categorical_features:
        codes = frame[col].astype("category").cat.codes.astype(float)
        frame[col] = codes.where(frame[col].notna())
    return frame.to_numpy(dtype=float)


def image_features(cohort, modality: str = "thermal_map") -> tuple[np.ndarray, np.ndarray]:
    """Per image: mean colour of the wound box, of the box's surroundings and of the foot
    centre, their differences and the box area; with each image's case position."""
    from PIL import Image

    rows = cohort.images_of(modality)
    feats = []
    for path, x0, y0, x1, y1 in zip(rows["path"], rows["xmin"], rows["ymin"], rows["xmax"],
                                    rows["ymax"]):
        with Image.open(path) as image:
            a = np.asarray(image.convert("RGB"), dtype=float) / 255.0
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        h, w = a.shape[:2]
        box = a[y0:y1, x0:x1].reshape(-1, 3).mean(0)
        around = a[max(0, y0 - 4):min(h, y1 + 4), max(0, x0 - 4):min(w, x1 + 4)].reshape(-1, 3).mean(0)
        centre = a[h // 2 - 10:h // 2 + 10, w // 2 - 8:w // 2 + 8].reshape(-1, 3).mean(0)
        feats.append(np.r_[box, around, centre, box - centre, around - box, (x1 - x0) * (y1 - y0)])
    position = pd.Series(np.arange(cohort.n_cases), index=cohort.cases["case_id"])
    return np.array(feats), position[rows["case_id"]].to_numpy()


def out_of_fold_proba(make_model, X, y, groups, seed: int = 0) -> np.ndarray:
    """Patient-grouped 5-fold out-of-fold probabilities of ``make_model()`` on ``X``."""
    from .splits import stratified_group_folds

    proba = np.zeros((len(y), 3))
    fold_of = stratified_group_folds(y, groups, 5, random_state=seed)
    for i in range(5):
        train, test = fold_of != i, fold_of == i
        proba[test] = make_model().fit(X[train], y[train]).predict_proba(X[test])
    return proba


def reference_forest(n_jobs: int = 1):
    """The table's reference model (NaN-tolerant Random Forest)."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(200, min_samples_leaf=2, random_state=0, n_jobs=n_jobs)


def reference_logistic():
    """The images' reference model, on :func:`image_features`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
