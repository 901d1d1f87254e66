"""Set-up promises: one dependency list, mirrored by environment.yml; the CLI entry point."""

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_mirrors_pyproject_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = {d for d in pip_section if not d.startswith("-e")}
    assert mirrored == declared, (f"only in pyproject: {sorted(declared - mirrored)}; "
                                  f"only in environment.yml: {sorted(mirrored - declared)}")
    assert "python=3.11" in env["dependencies"]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    first_block = readme.split("```")[1].strip().splitlines()[1:]  # after the language tag
    commands = [line.split("#")[0].strip() for line in first_block if not line.startswith("#")]
    commands = [c for c in commands if c]
    assert commands == ["make run", "make test"]
    assert ci.strip().splitlines()[-1] == "make test"


def test_cli_entry_point_prints_help_without_tensorflow_noise():
    out = subprocess.run([sys.executable, "-m", "fusionlib.cli", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0
    assert "validate" in out.stdout and "run" in out.stdout and "report" in out.stdout
    assert "tensorflow" not in out.stderr.lower() and "onednn" not in out.stderr.lower()


def test_license_is_an_spdx_string_for_a_setuptools_that_reads_it():
    """A ``license = {text = ...}`` table makes setuptools >= 77 print a deprecation warning on
    every install; the SPDX string form needs setuptools >= 77 to build."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["project"]["license"] == "Apache-2.0"
    requires = [r.replace(" ", "") for r in config["build-system"]["requires"]]
    setuptools = [r for r in requires if r.startswith("setuptools")]
    assert setuptools and setuptools[0].startswith("setuptools>=")
    assert int(setuptools[0].split(">=")[1].split(".")[0].split(",")[0]) >= 77
