"""The ``fusionlib`` command line.

Subcommands: ``cohort`` (generate and summarise the embedded synthetic cohort),
``metadata-cv`` (metadata-only patient-grouped CV on a clinical table),
``validate`` / ``run`` (parameter files -> executed experiment notebooks) and
``report`` (the HTML comparison report) and ``plan`` (the detectable difference and
equivalence for other numbers of patients and seeds, from a finished sweep).

User errors print one line, ``fusionlib: error: <file>: <problem>``, and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import textwrap
from pathlib import Path

from . import _tf  # noqa: F401  (quiet TensorFlow before anything imports it)
from .errors import FusionlibError


def _cmd_cohort(args) -> int:
    from .synthetic import ensure_default_cohort, generate_cohort
    from .data import load_cohort

    if args.out:
        root = generate_cohort(args.out, preset=args.preset, random_state=args.seed)
    else:
        root = ensure_default_cohort(preset=args.preset, random_state=args.seed)
    cohort = load_cohort(root)
    print(f"data folder: {root}")
    print(cohort.summary())
    return 0


def _cmd_metadata_cv(args) -> int:
    import numpy as np

    from .data import CLINICAL_FILENAME, read_clinical_table
    from .metrics import mean_ci
    from .report.study_tables import clinical_cv_scores
    from .results import metrics_in

    from .splits import check_folds, check_phases, patient_folds

    # Bad numbers are user errors (one line, exit 2), not tracebacks from scikit-learn.
    if args.folds < 2:
        raise FusionlibError(f"--folds must be at least 2, got {args.folds}")
    bad_seeds = [s for s in args.seeds if s < 0]
    if bad_seeds:
        raise FusionlibError(f"--seeds must be integers >= 0, got {bad_seeds[0]}")
    if args.jobs == 0:
        raise FusionlibError("--jobs must be a positive number of processes (or -1 for all cores), got 0")
    path = Path(args.data)
    table = path / CLINICAL_FILENAME if path.is_dir() else path
    cohort = read_clinical_table(table)
    check_folds(cohort.y, cohort.groups, args.folds, source=table, option="--folds")
    for seed in args.seeds:
        for fold in patient_folds(cohort.y, cohort.groups, args.folds, seed):
            check_phases(cohort.y[fold.train], f"seed {seed}: the training rows of fold "
                         f"{fold.index + 1}", table)
    print(f"metadata-only {args.model}, {args.folds}-fold patient-grouped CV on {cohort.name} "
          f"({cohort.n_cases} cases, {cohort.cases['patient'].nunique()} patients, "
          f"{cohort.features.shape[1]} features)")
    rows = []
    shown = metrics_in("metadata_cv")      # the list of metrics decides what is printed
    for seed in args.seeds:
        # The same computation as docs/results.md's table of tabular models.
        s = clinical_cv_scores(cohort, args.model, seed, args.folds, args.jobs)
        rows.append(s)
        print(f"  seed {seed}: pooled out-of-fold "
              + "  ".join(f"{m.label} {s[m.name]:.3f}" for m in shown))
    if len(rows) > 1:
        for m in shown:
            mean, sd, lo, hi = mean_ci(np.array([r[m.name] for r in rows]))
            print(f"  {m.name} over {len(rows)} seeds: {mean:.3f} +/- {sd:.3f} (95% CI {lo:.3f}..{hi:.3f})")
    return 0


def _cmd_validate(args) -> int:
    from .params import load_params

    for path in args.params:
        params = load_params(path)
        protocol = params.protocol
        print(f"ok  {path}  ({params.name}: {params.fusion.variant}, clinical "
              f"{params.clinical.model}, {protocol.data_percentage:g}% data, "
              f"{protocol.folds} folds x {protocol.repeats} repeat(s), seeds "
              f"{', '.join(map(str, protocol.seed_list()))})")
    return 0


def _cmd_run(args) -> int:
    from .running.runner import run_all

    return run_all(args.params, runs_dir=args.runs_dir, cache_dir=args.cache_dir, force=args.force,
                   jobs=args.jobs, scheduler=args.scheduler, engine=args.engine)


def _cmd_report(args) -> int:
    from .report import write_report

    built = write_report(runs_dir=args.runs_dir, out_dir=args.out,
                         settings=_conclusion_settings(args))
    # The answers first, as the page's first screen has them; then where the page is.
    for answer in built.answers:
        print(textwrap.fill(answer, width=100, subsequent_indent="  ", break_on_hyphens=False))
    print(f"report: {built.path}")
    return 0


def _conclusion_settings(args):
    from pydantic import ValidationError

    from .report.conclusions import ConclusionSettings

    try:
        return ConclusionSettings(qwk_margin=args.qwk_margin, log_loss_margin=args.log_loss_margin)
    except ValidationError as err:
        first = err.errors()[0]
        raise FusionlibError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}, got "
                             f"{first.get('input')!r}") from None


def _cmd_plan(args) -> int:
    from .report import load_runs
    from .report.planner import plan_grid, plan_table
    from .report.verdict import verdict_table

    settings = _conclusion_settings(args)
    if any(n < 2 for n in args.patients) or any(s < 2 for s in args.seeds):
        raise FusionlibError(f"--patients must be at least 2 and --seeds at least 2, got "
                             f"{args.patients} and {args.seeds}")
    runs = load_runs(args.runs_dir)
    if not runs:
        raise FusionlibError(f"no finished runs in {args.runs_dir}; run `fusionlib run` first")
    verdict = verdict_table(runs, n_boot=args.n_boot, settings=settings)
    if not len(verdict):
        raise FusionlibError(f"{args.runs_dir}: no variant with a fixed run at its data "
                             f"percentage: nothing to plan")
    table = plan_table(verdict, args.patients, args.seeds, settings)
    print(f"Planner: {len(verdict)} comparison(s) under {args.runs_dir}; margins ±"
          f"{settings.qwk_margin:g} QWK, ±{settings.log_loss_margin:g} log-loss; detectable "
          f"difference at {settings.power:.0%} power (docs/protocol.md)\n")
    with _wide_pandas():
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for (_, row), c in zip(verdict.iterrows(), verdict.attrs["compare"]):
        comp = c["qwk"]["components"]
        print(f"\n{row['variant']} at {row['data %']:g} % (run {row['run']}) vs {row['vs']}: "
              f"detectable ΔQWK at {settings.power:.0%} power by patients x seeds "
              f"(* = equivalence within ±{settings.qwk_margin:g} shown with {settings.power:.0%} "
              f"power when the true difference is 0)"
              + ("" if comp.shift_measured else "; ONE seed: the seeds' shift is not measured "
                 "and taken as 0"))
        with _wide_pandas():
            print(plan_grid(comp, settings.qwk_margin, args.patients, args.seeds,
                            settings).to_string(index=False))
    return 0


def _wide_pandas():
    import pandas as pd

    return pd.option_context("display.width", 250, "display.max_columns", 50,
                             "display.max_colwidth", 60)


def _margin_arguments(p) -> None:
    p.add_argument("--qwk-margin", type=float, default=0.02,
                   help="equivalence margin of ΔQWK (default 0.02; docs/protocol.md)")
    p.add_argument("--log-loss-margin", type=float, default=0.02,
                   help="equivalence margin of Δlog-loss (default 0.02)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fusionlib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fusionlib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every training step")
    sub = parser.add_subparsers(dest="command", required=True)
    from .branches.clinical import CLINICAL_MODELS

    p = sub.add_parser("cohort", help="generate (if needed) and summarise a synthetic cohort")
    p.add_argument("--preset", default="dfu_like", help="synthetic preset (default dfu_like)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--out", help="write the cohort to this folder instead of data/generated/")
    p.set_defaults(func=_cmd_cohort)

    p = sub.add_parser("metadata-cv", help="clinical-table model alone, patient-grouped K-fold, "
                                           "pooled OOF scores")
    p.add_argument("--data", required=True, help="clinical CSV or a folder holding it")
    p.add_argument("--model", default="random_forest", choices=list(CLINICAL_MODELS),
                   help="clinical model (default random_forest, 300 trees)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=2, help="parallel tree building (results do not change)")
    p.set_defaults(func=_cmd_metadata_cv)

    p = sub.add_parser("validate", help="validate parameter files only")
    p.add_argument("params", nargs="+")
    p.set_defaults(func=_cmd_validate)

    from .running.tasks import ENGINES

    p = sub.add_parser("run", help="validate, then execute each experiment notebook with papermill")
    p.add_argument("params", nargs="+")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--cache-dir", default=".cache")
    p.add_argument("--force", action="store_true", help="re-run even if nothing changed")
    p.add_argument("--jobs", type=int, default=1, help="experiments run in parallel processes")
    p.add_argument("--scheduler", help="address of a Dask distributed scheduler to run on")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="how each notebook executes: in the worker process (inprocess: no kernel "
                        "start, imports paid once per process), in a Jupyter kernel of its own "
                        "(kernel), or in-process where possible (auto, the default; Dask "
                        "workers use kernels)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="render reports/index.html from the runs")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", default="reports")
    _margin_arguments(p)
    p.set_defaults(func=_cmd_report)

    from .report.planner import DEFAULT_PATIENTS, DEFAULT_SEEDS

    p = sub.add_parser("plan", help="from a finished sweep's measured variance: the detectable "
                                    "difference and equivalence for other patients x seeds")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--patients", type=int, nargs="+", default=list(DEFAULT_PATIENTS),
                   help=f"numbers of patients to plan for (default {' '.join(map(str, DEFAULT_PATIENTS))})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help=f"numbers of seeds (default {' '.join(map(str, DEFAULT_SEEDS))})")
    _margin_arguments(p)
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (2000)")
    p.set_defaults(func=_cmd_plan)
    return parser


INTERRUPTED = "fusionlib: interrupted; finished runs are kept, rerun to continue"


def main(argv=None) -> int:
    """The command line; returns the exit status.

    Ctrl-C at any moment, while the heavy modules (NumPy, scikit-learn, papermill, TensorFlow)
    are still being imported included, ends with one line and exit status 130: every import is
    done inside the ``try`` below (this module and ``fusionlib/__init__.py`` import nothing
    heavy at module level, so the console script and ``python -m fusionlib`` reach it within
    milliseconds of the interpreter's start). A full disk is one line naming the file, exit
    status 1.
    """
    interrupted: list[int] = []
    previous = _note_sigint(interrupted)
    try:
        return _main(argv)
    except SystemExit:
        raise
    except BaseException as err:
        # A C extension interrupted while it initialises can turn the KeyboardInterrupt into
        # another error (NumPy: "ImportError: ... PyCapsule_Import could not import module"):
        # after a Ctrl-C, any error is the interrupt.
        if isinstance(err, KeyboardInterrupt) or interrupted:
            print(INTERRUPTED, file=sys.stderr)
            _forget_unhandled_interrupt()
            # The kernel got the Ctrl-C too: nbclient's cell task ends in DeadKernelError, and
            # asyncio logs it with a traceback ("Task exception was never retrieved") when the
            # task is collected, after the line above. Nothing more is worth saying.
            logging.getLogger("asyncio").disabled = True
            return 130
        from ._io import DISK_FULL_ERRNOS, os_error_text

        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            print(f"fusionlib: error: {os_error_text(err)}", file=sys.stderr)
            return 1
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _note_sigint(interrupted: list):
    """Record each SIGINT in ``interrupted``, then raise KeyboardInterrupt as Python's own
    handler does. Returns the handler to restore (None when left alone: not the main thread,
    or SIGINT is ignored, as for a command started in the background)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return None

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    return previous


def _forget_unhandled_interrupt() -> None:
    """Keep the exit status 130 once the interrupt is handled.

    CPython remembers a KeyboardInterrupt that ended code run through its ``PyRun_*`` C API
    (some extension modules run code so while they are imported) and then ends the process by
    SIGINT (status -2, which a shell shows as 130 too) whatever status it was to exit with.
    Running an empty string through that API clears the mark.
    """
    try:
        import ctypes

        ctypes.pythonapi.PyRun_SimpleStringFlags(b"", None)
    except Exception:  # noqa: BLE001 - not CPython, or no C API: the status is only -2 then
        pass


def _main(argv) -> int:
    from ._imports import quick_exit, skip_slow_optional_imports

    skip_slow_optional_imports()
    quick_exit()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FusionlibError as err:
        print(f"fusionlib: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
