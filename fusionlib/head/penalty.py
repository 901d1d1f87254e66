"""Choosing the head's penalty: one fit per candidate, the one-standard-error rule."""

from __future__ import annotations

import numpy as np

from ..models import fusion_parameter_count
from .objective import set_head_theta
from .optimisers import fit_head, fit_penalty_candidates
from .settings import HeadSettings


def one_standard_error_choice(strengths, val_row_loss, groups, rule: str = "one_se") -> tuple:
    """The penalty strength chosen from validation losses of several candidates.

    ``val_row_loss[k]`` holds candidate ``k``'s per-row validation losses, all on the
    same rows, whose patients are ``groups``. ``rule="min"`` takes the lowest mean loss.
    ``rule="one_se"`` takes the strongest penalty whose mean loss exceeds the best one by
    at most one standard error *of that difference*: the rows are shared, so the noise
    that matters is that of the paired per-row difference, and visits of one patient are
    not independent, so the SE is clustered by patient::

        d_p = sum over rows of patient p of (loss_k - loss_best)
        mean = sum_p d_p / n_rows
        SE = sqrt(P / (P - 1) * sum_p (d_p - n_p * mean)^2) / n_rows

    Returns ``(chosen strength, {strength: (mean difference to the best, its SE)})``.
    """
    strengths = [float(s) for s in strengths]
    losses = [np.asarray(v, dtype=float) for v in val_row_loss]
    if len(strengths) != len(losses) or not strengths:
        raise ValueError(f"need one loss vector per strength, got {len(strengths)} strengths "
                         f"and {len(losses)} loss vectors")
    means = [v.mean() for v in losses]
    best = int(np.argmin(means))
    if rule == "min":
        return strengths[best], {s: (float(m - means[best]), 0.0) for s, m in zip(strengths, means)}
    if rule != "one_se":
        raise ValueError(f"rule must be 'one_se' or 'min', got {rule!r}")
    patients, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_rows, n_pat = len(inverse), len(patients)
    per_patient_rows = np.bincount(inverse, minlength=n_pat).astype(float)
    table = {}
    for s, v in zip(strengths, losses):
        if len(v) != n_rows:
            raise ValueError(f"loss vector of strength {s} has {len(v)} rows, groups has {n_rows}")
        diff = v - losses[best]
        mean = diff.sum() / n_rows
        d_p = np.bincount(inverse, weights=diff, minlength=n_pat)
        se = (np.sqrt(n_pat / (n_pat - 1) * np.sum((d_p - per_patient_rows * mean) ** 2)) / n_rows
              if n_pat > 1 else 0.0)
        table[s] = (float(mean), float(se))
    chosen = max(s for s in strengths if table[s][0] <= table[s][1] + 1e-12)
    return chosen, table


def fit_head_with_penalty_search(settings: HeadSettings, data, new_head, seed: int):
    """Fit one head per candidate penalty; keep the one the penalty rule chooses.

    The penalty is chosen on the inner-validation patients (with ``sgd``/``adam`` like the
    stopping epoch; with ``lbfgs`` each candidate is fitted to its penalised optimum first).
    ``one_se`` takes the strongest penalty whose validation loss is within one standard
    error of the best (the SE of the paired, patient-clustered difference,
    :func:`one_standard_error_choice`): smaller differences are noise,
    and the stronger penalty is the one that does not fit noise in an uninformative branch.
    ``min`` takes the best. Returns ``(head, history)``; ``history['penalty_table']`` holds
    each candidate's validation-loss difference to the best and its SE.
    """
    head = new_head()
    candidates = sorted(set(settings.penalty)) if fusion_parameter_count(head) else [0.0]
    fitted = []
    if settings.optimizer == "lbfgs" and head.trainable_weights:
        # All candidates together on one head: each starts from the same seeded weights (what
        # a new head would hold); the chosen optimum is written back into it.
        fitted = fit_penalty_candidates(head, data.x_fit, data.y_fit, data.x_val, data.y_val,
                                        settings, candidates, random_state=seed)
    else:
        for strength in candidates:
            candidate = new_head() if fitted else head
            history = fit_head(candidate, data.x_fit, data.y_fit, data.x_val, data.y_val,
                               settings, strength, random_state=seed)
            fitted.append((strength, candidate, history))
    losses = [h.get("val_row_loss") for _, _, h in fitted]
    if settings.monitor == "val_loss" and all(v is not None for v in losses):
        chosen, table = one_standard_error_choice(candidates, losses, data.groups_val,
                                                  settings.penalty_rule)
    else:  # no validation losses to compare (monitor none or val_qwk): the selection score
        scores = [_selection_score(h, settings.monitor) for _, _, h in fitted]
        chosen, table = candidates[int(np.argmin(scores))], {}
    _, kept, history = next(f for f in fitted if f[0] == chosen)
    if settings.optimizer == "lbfgs" and head.trainable_weights:
        set_head_theta(head, kept)
    else:
        head = kept
    history["penalty"] = chosen
    history["penalty_table"] = {str(k): list(v) for k, v in table.items()}
    return head, history


def _selection_score(history: dict, monitor: str) -> float:
    """Lower is better: the restored epoch's validation loss (or minus its QWK)."""
    if monitor == "none" or not history["val_loss"]:
        return 0.0
    i = history["epoch"].index(history["best_epoch"])
    return history["val_loss"][i] if monitor == "val_loss" else -history["val_qwk"][i]
