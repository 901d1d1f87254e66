"""docs/results.md, regenerated: every study's runs, then every table in the file.

``python -m fusionlib.study`` (``make results``) runs each study of :data:`STUDIES` -- a set
of committed parameter files, every one with seeds 0, 1, 2 inside -- through the runner
(``fusionlib run --jobs N``; finished, unchanged runs under ``runs-study/<study>/`` are kept,
branches come from the shared cache), then rewrites the generated sections of
``docs/results.md``: the text between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``. The prose around them is hand-written and cites no figure.
A study that needs the real clinical table is skipped, its sections left as they are, when
the table is absent.

Each comparison is variant minus the ``fixed`` run of the same data (and data percentage),
both decided by the same rule, over every seed: the difference averaged over seeds, each
seed's, and the verdict's interval (:func:`fusionlib.report.verdict.compare_over_seeds`).
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .decision import DEFAULT_DECISION
from .paths import project_root
from .results import headline_metrics
from .report.study_tables import (branch_gap_table, clinical_models_table, comparison_table,
                                  fold_table, rule_qwk_table, runs_overview,
                                  weights_table)


@dataclass(frozen=True)
class Study:
    """One section of docs/results.md: its parameter files (globs under the project root)."""

    name: str
    files: tuple[str, ...]
    needs_real: bool = False
    image_branch_gap: bool = True       # the thermal-map branch's train/test table


STUDIES = {s.name: s for s in (
    Study("default", ("params/*.yaml", "params/variants/trainable_classweight_100.yaml")),
    Study("fixed_mix_wrong", ("params/fixed_mix_wrong/*.yaml",)),
    Study("complementary", ("params/complementary/*.yaml",)),
    Study("seed_study", ("params/seed_study/*.yaml",)),
    Study("real", ("params/real/*.yaml",), needs_real=True, image_branch_gap=False),
    # Sized by `fusionlib plan` on the default sweep: 999 patients x 8 seeds detect a ΔQWK
    # of about 0.017 at 80 % power, below the 0.02 margin (docs/results.md).
    Study("conclusive", ("params/conclusive/*.yaml",)),
)}
"""Study name -> its parameter files, in the order docs/results.md shows them."""


def study_files(study: Study, root: Path | None = None) -> list[Path]:
    root = Path(root or project_root())
    files = sorted({Path(p) for pattern in study.files for p in glob.glob(str(root / pattern))})
    if not files:
        raise FileNotFoundError(f"study {study.name!r}: no parameter file matches {study.files}")
    return files


def real_data_available() -> bool:
    """True when the real clinical table's folder ($FUSIONLIB_DFU_DIR, else ../shared/data/dfu)
    exists."""
    from .datasets import DataSettings

    folder = DataSettings(dataset="real").resolved_data_dir()
    return folder is not None and folder.is_dir()


def run_study(study: Study, runs_root: Path, cache_dir: Path, jobs: int) -> int:
    """Execute the study's missing or stale runs (the runner's exit code)."""
    from .running.runner import run_all

    return run_all(study_files(study), runs_dir=runs_root / study.name, cache_dir=cache_dir,
                   jobs=jobs)


def load_study(study: Study, runs_root: Path) -> list:
    """The finished runs of a study's parameter files, in file order."""
    from .report import load_runs
    from .running.runner import load_all

    names = [params.name for _, params in load_all(study_files(study))]
    runs = {run.name: run for run in load_runs(runs_root / study.name)}
    missing = [n for n in names if n not in runs or runs[n].predictions is None]
    if missing:
        raise FileNotFoundError(f"study {study.name!r}: no finished run for {', '.join(missing)} "
                                f"under {runs_root / study.name}")
    order = {n: i for i, n in enumerate(names)}
    # Largest data percentage first, fixed first within it, then file order.
    return sorted((runs[n] for n in names),
                  key=lambda r: (-r.data_percentage, r.fusion != "fixed", order[r.name]))


# --------------------------------------------------------------------------- markdown


def _signed(v, digits: int = 2) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:+.{digits}f}"


def _ci(pair, digits: int = 2) -> str:
    return f"[{_signed(pair[0], digits)}, {_signed(pair[1], digits)}]"


def markdown_comparison(table: pd.DataFrame) -> str:
    """:func:`comparison_table` as markdown: the first headline metric with its per-seed
    differences, detectable difference and the decision agreement, then every other one."""
    lead, *others = table.attrs.get("metrics") or headline_metrics()
    header = (f"| data | variant (run) − fixed | decision | Δ{lead.label} [95 % interval] | "
              f"per seed | detectable at 80 % | agree | {lead.label} verdict |"
              + "".join(f" Δ{m.label} [95 % interval] | {m.label} verdict |" for m in others))
    lines = [header, "|" + " --- |" * (8 + 2 * len(others))]
    for _, r in table.iterrows():
        d = f"Δ{lead.label}"
        per_seed = r[f"{d} per seed"]
        seeds = (", ".join(_signed(v) for v in per_seed) if len(per_seed) <= 4 else
                 f"{min(per_seed):+.2f} to {max(per_seed):+.2f} ({len(per_seed)} seeds)")
        lines.append(
            f"| {r['data %']:g} % | {r['variant']} ({r['run']}) | {r['decision']} | "
            f"{_signed(r[d])} {_ci(r[f'{d} interval'])} | {seeds} | "
            f"{r[f'detectable {d}']:.2f} | {100 * r['agreement']:.0f} % | {r[f'{lead.label} verdict']} |"
            + "".join(f" {_signed(r[f'Δ{m.label}'])} {_ci(r[f'Δ{m.label} interval'])} | "
                      f"{r[f'{m.label} verdict']} |" for m in others))
    return "\n".join(lines)


def markdown_frame(frame: pd.DataFrame, digits: int = 3) -> str:
    if frame.empty:
        return "(no such run in this study)"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in frame.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answers(table: pd.DataFrame, weights: pd.DataFrame, rule: str = DEFAULT_DECISION) -> str:
    """The study's questions answered in words from its own tables, keyed by what each row is
    (its fusion variant and data percentage), never by a run's name: does each variant beat
    fixed under ``rule`` (four-way, with the detectable difference and the decision
    agreement), and what clinical influence share each learns against the fixed mix's own on
    the same cases."""
    from .report.conclusions import verdict_words

    lines = []
    rows = table[(table["decision"] == rule) & ~table["variant"].str.endswith("(baseline)")]
    # The question first: the trainable family, then the other learned weightings.
    rows = rows.assign(_q=~rows["variant"].str.startswith("trainable")).sort_values(
        ["_q", "data %"], ascending=[True, False], kind="stable")
    lead, *others = table.attrs.get("metrics") or headline_metrics()
    d, verdict = f"Δ{lead.label}", f"{lead.label} verdict"
    for _, r in rows.iterrows():
        q = r["compare"][lead.name]
        words = verdict_words(r[verdict], q["margin"], q["detectable"]).replace(
            f"{q['detectable']:.3f}", f"{q['detectable']:.2f}")
        power = ("" if r[verdict] == "inconclusive" else
                  f"detectable at 80 % power: {r[f'detectable {d}']:.2f}; ")
        lines.append(f"- {r['variant']} at {r['data %']:g} % ({r['run']}) − {r['vs']} ({rule}): "
                     f"{d} {_signed(r[d])} {_ci(r[f'{d} interval'])} over {r['seeds']} "
                     f"seeds, **{words}** ({power}"
                     f"the two decide alike on {100 * r['agreement']:.0f} % of cases)"
                     + "".join(f"; Δ{m.label} {_signed(r[f'Δ{m.label}'])} "
                               f"{_ci(r[f'Δ{m.label} interval'])}, {r[f'{m.label} verdict']}"
                               for m in others) + ".")
    if len(weights):
        weights = weights.assign(_q=~weights["variant"].str.startswith("trainable"),
                                 _pct=weights["data %"].astype(float)).sort_values(
            ["_q", "_pct"], ascending=[True, False], kind="stable")
    models = weights.attrs.get("clinical") or {}
    for _, r in weights.iterrows():
        fixed_share = r.get("fixed mix's influence, same cases", "–")
        # A clinical model other than the default is named: "clinical (gradient boosting) ...".
        named = models[r["run"]].named if r.get("run") in models else ""
        if "influence (mean ± SD over seeds)" in r and fixed_share != "–":
            lines.append(f"- Weighting learned by {r['variant']} at {r['data %']} % ({r['run']}): "
                         f"clinical{named} influence share (overall, I / P / R) "
                         f"{r['influence (mean ± SD over seeds)']}, against "
                         f"{fixed_share} for the fixed mix on the "
                         f"same cases.")
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``body`` (appended if absent)."""
    start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def sections(study: Study, runs: list, n_boot: int) -> dict:
    """The generated sections of one study, by name."""
    name = study.name
    table = comparison_table(runs, n_boot)
    weights = weights_table(runs)
    out = {f"{name}-runs": markdown_frame(runs_overview(runs)),
           f"{name}-answers": answers(table, weights),
           f"{name}-comparison": markdown_comparison(table),
           f"{name}-weights": markdown_frame(weights, 2),
           f"{name}-rules": markdown_frame(rule_qwk_table(runs)),
           f"{name}-trainable-folds": markdown_frame(fold_table(runs))}
    if study.image_branch_gap:
        gap = branch_gap_table(runs)
        text = markdown_frame(gap)
        if "head_log_loss" in gap.attrs:
            before, after = gap.attrs["head_log_loss"]
            text += (f"\n\nTrainable head, test log-loss (mean over seeds and folds): {before:.3f} "
                     f"on the mean of the inner CNNs' probabilities, {after:.3f} fusing each "
                     f"CNN's probabilities and averaging the fused outputs.")
        out[f"{name}-branch-gap"] = text
    if study.needs_real:
        from .datasets import DataSettings

        out[f"{name}-clinical-models"] = markdown_frame(
            clinical_models_table(DataSettings(dataset="real").resolved_data_dir()))
    return out


def provenance_line(all_runs: list, n_boot: int) -> str:
    provs = [run.provenance for run in all_runs]
    commits = sorted({(p.get("git_commit") or "?")[:12] for p in provs})
    locks = sorted({((p.get("lock") or {}).get("sha256") or "?")[:12] for p in provs})
    codes = sorted({str(run.done.get("code_version") or "?") for run in all_runs})
    versions = provs[0].get("versions", {})
    seeds = sorted({s for run in all_runs for s in run.seeds})
    return (f"{len(all_runs)} runs, each over seeds {', '.join(map(str, seeds))}; {n_boot} "
            f"bootstrap resamples; "
            f"experiment code {', '.join(f'`{c}`' for c in codes)} (the runner's hash of the "
            f"package and notebook) at commit{'s' if len(commits) > 1 else ''} "
            f"{', '.join(f'`{c}`' for c in commits)}; "
            f"requirements.lock sha256 {', '.join(f'`{c}`' for c in locks)}; versions "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f"; Python {provs[0].get('python')}.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionlib.study",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    parser.add_argument("--root", default="runs-study", help="runs folder (one subfolder per study)")
    parser.add_argument("--cache", default=".cache")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes")
    parser.add_argument("--no-run", action="store_true", help="only re-render from finished runs")
    args = parser.parse_args(argv)
    from ._io import atomic_write_text
    from .errors import FusionlibError

    root, out = Path(args.root), Path(args.out)
    studies = [STUDIES[s] for s in args.studies]
    skipped = [s for s in studies if s.needs_real and not real_data_available()]
    for s in skipped:
        print(f"study {s.name}: the real clinical table is not here (../shared/data/dfu or "
              f"$FUSIONLIB_DFU_DIR); its sections are left as they are", file=sys.stderr)
    studies = [s for s in studies if s not in skipped]
    started = time.time()
    if not args.no_run:
        for study in studies:
            print(f"study {study.name}: running {len(study_files(study))} parameter files",
                  file=sys.stderr, flush=True)
            if run_study(study, root, Path(args.cache), args.jobs) != 0:
                print(f"fusionlib: error: study {study.name}: a run failed; {out} is unchanged",
                      file=sys.stderr)
                return 1
    try:
        text = out.read_text(encoding="utf-8") if out.is_file() else "# Results\n"
        all_runs = []
        for study in studies:
            runs = load_study(study, root)
            all_runs += runs
            for name, body in sections(study, runs, args.n_boot).items():
                text = replace_section(text, name, body)
        # The provenance line speaks for every table, so only a full regeneration rewrites it.
        if all_runs and len(studies) == len(STUDIES):
            text = replace_section(text, "provenance", provenance_line(all_runs, args.n_boot))
        elif all_runs:
            print(f"the provenance line of {out} is left as it is: not every study was "
                  f"tabulated", file=sys.stderr)
    except (FileNotFoundError, FusionlibError) as err:
        print(f"fusionlib: error: {err}; {out} is unchanged", file=sys.stderr)
        return 1
    atomic_write_text(out, text)
    print(f"wrote {out} ({len(studies)} studies, {time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
