"""What one comparison lets a reader conclude: power, equivalence and decision agreement.

A 95 % interval that holds 0 says "no detectable difference", which alone concludes nothing:
the variants may be equivalent, or the study too small to tell. Three figures say which:

* **the minimal detectable difference at 80 % power** (:func:`detectable_difference`): the
  true difference this study finds (its 95 % interval excludes 0) four times in five, from
  the verdict interval's own standard error and Welch-Satterthwaite degrees of freedom
  (noncentral t; about ``(t(0.975, df) + t(0.80, df)) x SE``, 2.8 SE with many degrees of
  freedom). The interval's half-width ``t(0.975, df) x SE`` is
  only the size an *observed* difference must reach to count: a *true* difference of that
  size is found half the time.
* **equivalence** within a margin by two one-sided tests (:func:`four_way_verdict`): the
  90 % interval ``delta ± t(0.95, df) x SE`` inside ``(-margin, +margin)``;
* **decision agreement** (:func:`decision_agreement`): the share of cases where the variant
  and ``fixed`` decide alike. QWK, accuracy and F1 move only through the cases where they
  disagree, so a high agreement caps how far any of them can move, while a proper score
  (log-loss) still reads every probability.

The margins are :class:`ConclusionSettings` (defaults and their reasons: docs/protocol.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..results import METRICS, headline_metrics

BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
VERDICTS = (BETTER, WORSE, EQUIVALENT, INCONCLUSIVE)


class ConclusionSettings(BaseModel):
    """The equivalence margins and the power the report and ``fusionlib plan`` use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qwk_margin: float = Field(0.02, gt=0, lt=1, description=(
        "ΔQWK within ±this counts as equivalent (docs/protocol.md: why 0.02)"))
    log_loss_margin: float = Field(0.02, gt=0, lt=1, description=(
        "Δlog-loss (nats per case) within ±this counts as equivalent"))
    power: float = Field(0.80, gt=0.5, lt=1, description=(
        "the power at which the detectable difference is quoted"))
    level: float = Field(0.95, gt=0.5, lt=1, description="two-sided level of the verdict's interval")

    def margin(self, metric: str) -> float:
        """The margin of ``qwk`` or ``log_loss`` (these settings), or of another headline metric
        of :data:`fusionlib.results.METRICS` (its own ``margin``)."""
        margins = {"qwk": self.qwk_margin, "log_loss": self.log_loss_margin}
        if metric in margins:
            return margins[metric]
        if metric in METRICS and METRICS[metric].margin is not None:
            return float(METRICS[metric].margin)
        known = sorted({*margins, *(m.name for m in headline_metrics() if m.margin is not None)})
        raise ValueError(f"metric must be one of {known} (a metric with an equivalence margin), "
                         f"got {metric!r}")


DEFAULT_SETTINGS = ConclusionSettings()


def _t(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df)) if np.isfinite(df) and df > 0 else float(stats.norm.ppf(q))


def power_at(delta: float, se: float, df: float, level: float = 0.95) -> float:
    """Probability that the two-sided ``level`` interval excludes 0 on ``delta``'s side, when
    the true difference is ``delta``: ``P(T > t(1 - alpha/2, df))`` for ``T`` noncentral t
    with ``df`` degrees of freedom and noncentrality ``|delta| / se`` (the estimate over its
    estimated SE; few seeds give few degrees of freedom, where the shifted-t shortcut
    overstates power)."""
    from scipy import stats

    if not (np.isfinite(se) and se > 0 and np.isfinite(delta)):
        return float("nan")
    crit = _t(0.5 + level / 2, df)
    nc = abs(delta) / se
    if not (np.isfinite(df) and df > 0):
        return float(stats.norm.sf(crit - nc))
    return float(stats.nct.sf(crit, df, nc))


def detectable_difference(se: float, df: float, power: float = 0.80, level: float = 0.95) -> float:
    """The minimal detectable difference: the true difference that the two-sided ``level``
    test finds with probability ``power`` (:func:`power_at` solved for ``delta``). With many
    degrees of freedom it is ``(z(1 - alpha/2) + z(power)) x se`` = 2.80 SE at 95 % and 80 %;
    with few (few seeds) it is larger (2.95 SE at 20 df, 3.76 at 4, 5.65 at 2)."""
    from scipy import optimize

    if not (np.isfinite(se) and se >= 0):
        return float("nan")
    if se == 0:
        return 0.0
    crit = _t(0.5 + level / 2, df)
    # The noncentrality lies between crit (power 0.5) and crit + a generous bound.
    nc = optimize.brentq(lambda x: power_at(x, 1.0, df, level) - power, 0.0, crit + 50.0,
                         xtol=1e-10)
    return float(nc * se)


def equivalence_interval(delta: float, se: float, df: float, level: float = 0.95) -> tuple:
    """The ``1 - 2 alpha`` interval (90 % for ``level`` 0.95) whose inclusion in the margin is
    the two one-sided tests' verdict of equivalence, each test at ``alpha = (1 - level) / 2``."""
    half = _t(level, df) * float(se) if np.isfinite(se) else float("nan")
    return delta - half, delta + half


def four_way_verdict(delta: float, se: float, df: float, margin: float,
                     lower_is_better: bool = False, level: float = 0.95) -> str:
    """``better`` / ``worse`` when the two-sided ``level`` interval excludes 0 (a difference is
    found, whatever its size); else ``equivalent`` when the two one-sided tests put it inside
    ±``margin``; else ``inconclusive``. ``"?"`` when the figures are not finite."""
    if not all(np.isfinite(v) for v in (delta, se, df)):
        return "?"
    half = _t(0.5 + level / 2, df) * se
    low, high = delta - half, delta + half
    if lower_is_better:
        low, high = -high, -low
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    eq_low, eq_high = equivalence_interval(delta, se, df, level)
    return EQUIVALENT if -margin < eq_low and eq_high < margin else INCONCLUSIVE


def verdict_words(verdict: str, margin: float, detectable: float) -> str:
    """The verdict in words, with the margin or the detectable difference that makes it."""
    if verdict == EQUIVALENT:
        return f"equivalent within ±{margin:.2f}"
    if verdict == INCONCLUSIVE:
        return (f"inconclusive: this study could detect {detectable:.3f} at 80 % power, "
                f"and cannot show equivalence within ±{margin:.2f}")
    return verdict


def decision_agreement(joined: pd.DataFrame, pred_a: str = "pred", pred_b: str = "pred_b",
                       label: str = "label") -> dict:
    """How often the variant and the baseline make the same decision on the same cases.

    ``joined`` holds one row per (seed, repeat, case) with both decisions and the label.
    Returns the share of rows where they agree (mean over seeds, and its range), the mean
    number of disagreeing cases per seed, and among those the share the variant gets right
    and the share the baseline gets right (the rest: both wrong).
    """
    per_seed = []
    for _, rows in joined.groupby("seed", sort=True):
        a, b = rows[pred_a].to_numpy(), rows[pred_b].to_numpy()
        y = rows[label].to_numpy()
        differ = a != b
        n = int(differ.sum())
        per_seed.append({"agreement": float(1 - differ.mean()) if len(rows) else np.nan,
                         "disagree": n,
                         "variant_right": float((a[differ] == y[differ]).mean()) if n else np.nan,
                         "fixed_right": float((b[differ] == y[differ]).mean()) if n else np.nan})
    if not per_seed:
        return {"agreement": np.nan, "agreement_range": (np.nan, np.nan), "disagree": np.nan,
                "variant_right": np.nan, "fixed_right": np.nan, "seeds": 0}
    frame = pd.DataFrame(per_seed)
    return {"agreement": float(frame["agreement"].mean()),
            "agreement_range": (float(frame["agreement"].min()), float(frame["agreement"].max())),
            "disagree": float(frame["disagree"].mean()),
            "variant_right": float(frame["variant_right"].mean()),
            "fixed_right": float(frame["fixed_right"].mean()), "seeds": len(frame)}


AGREEMENT_NOTE = (
    "Decision agreement is the share of test cases where the variant and fixed make the same "
    "decision. QWK, accuracy and F1 can move only through the cases where they disagree: when "
    "agreement is high, two quite different weightings can score the same QWK, and a "
    "clear change in log-loss (which reads every probability) with no change in QWK means the "
    "weighting changed the probabilities much more than the decisions.")
