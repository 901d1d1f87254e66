"""Compare the result files of two runs folders, run by run.

    python scripts/diff_runs.py OLD_RUNS NEW_RUNS [--only RUN ...] [--legacy-keys]

For every run folder in either tree, ``metrics.json``, ``predictions.csv`` and
``weights.json`` are compared: byte for byte first; where the bytes differ, the
JSON values (or CSV columns) that differ are listed with the largest absolute
difference, so a refactoring that changes a number, a key or a column shows
where. ``provenance.json`` (timings, dates, commit) is not compared. Exits 1 when
any file differs or a run is missing on one side, 0 when all are identical.

``--legacy-keys``: OLD_RUNS were written before a rename of result keys
(``rf_share`` -> ``clinical_share``). The OLD side's JSON files are first upgraded by
the library's own reader (:func:`fusionlib.results.upgrade_legacy_keys`) and written
back as the writer writes them, so a file that differs only by the rename reads
"identical after upgrading legacy keys" and any other difference is listed as usual.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionlib.results import upgrade_legacy_keys

FILES = ("metrics.json", "predictions.csv", "weights.json")


def _walk(old, new, path="$"):
    """Yield (path, old, new) for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                yield f"{path}.{key}", old.get(key, "<absent>"), new.get(key, "<absent>")
            else:
                yield from _walk(old[key], new[key], f"{path}.{key}")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from _walk(a, b, f"{path}[{i}]")
    elif old != new:
        yield path, old, new


def _upgraded(old: Path) -> bytes:
    """``old``'s JSON with legacy keys renamed, in the writer's layout (``indent=2``)."""
    return json.dumps(upgrade_legacy_keys(json.loads(old.read_text())), indent=2).encode()


def _json_diff(old: Path, new: Path, legacy_keys: bool = False) -> list[str]:
    before = json.loads(old.read_text())
    diffs = list(_walk(upgrade_legacy_keys(before) if legacy_keys else before,
                       json.loads(new.read_text())))
    return [f"{p}: {a!r} -> {b!r}" for p, a, b in diffs[:10]] + \
        ([f"... {len(diffs) - 10} more"] if len(diffs) > 10 else [])


def _csv_diff(old: Path, new: Path) -> list[str]:
    import pandas as pd

    a, b = pd.read_csv(old), pd.read_csv(new)
    lines = []
    if list(a.columns) != list(b.columns):
        lines.append(f"columns only old: {sorted(set(a.columns) - set(b.columns))}, "
                     f"only new: {sorted(set(b.columns) - set(a.columns))}")
    if len(a) != len(b):
        return lines + [f"rows: {len(a)} -> {len(b)}"]
    for column in [c for c in a.columns if c in b.columns]:
        x, y = a[column], b[column]
        if x.equals(y):
            continue
        try:
            gap = float((x.astype(float) - y.astype(float)).abs().max())
            lines.append(f"column {column}: max |difference| {gap:.3g}")
        except (TypeError, ValueError):
            lines.append(f"column {column}: {int((x != y).sum())} values differ")
    return lines or ["bytes differ (formatting only)"]


def compare(old_root: Path, new_root: Path, only: list[str] | None = None,
            legacy_keys: bool = False) -> int:
    old_runs = {p.name for p in old_root.iterdir() if (p / "metrics.json").exists()}
    new_runs = {p.name for p in new_root.iterdir() if (p / "metrics.json").exists()}
    if only:
        old_runs, new_runs = old_runs & set(only), new_runs & set(only)
    differing = 0
    for run in sorted(old_runs | new_runs):
        if run not in old_runs or run not in new_runs:
            print(f"{run}: only in {'new' if run in new_runs else 'old'}")
            differing += 1
            continue
        for name in FILES:
            old, new = old_root / run / name, new_root / run / name
            if old.read_bytes() == new.read_bytes():
                print(f"{run}/{name}: identical ({len(old.read_bytes()):,} bytes)")
                continue
            json_file = name.endswith(".json")
            if legacy_keys and json_file and _upgraded(old) == new.read_bytes():
                print(f"{run}/{name}: identical after upgrading legacy keys "
                      f"({len(new.read_bytes()):,} bytes)")
                continue
            differing += 1
            details = (_json_diff(old, new, legacy_keys) if json_file else _csv_diff(old, new))
            print(f"{run}/{name}: DIFFERS")
            for line in details:
                print(f"    {line}")
    print(f"{len(old_runs | new_runs)} runs, {differing} differing file(s)")
    return 1 if differing else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--only", nargs="+", metavar="RUN", help="compare these runs only")
    parser.add_argument("--legacy-keys", action="store_true",
                        help="upgrade the old side's legacy keys (rf_share -> clinical_share) "
                             "before comparing, as the report's reader does")
    args = parser.parse_args(argv)
    for root in (args.old, args.new):
        if not root.is_dir():
            print(f"{root}: not a folder", file=sys.stderr)
            return 2
    if args.legacy_keys:
        print(f"{args.old}: legacy keys upgraded before comparing (rf_share -> clinical_share)")
    return compare(args.old, args.new, args.only, args.legacy_keys)


if __name__ == "__main__":
    sys.exit(main())
