"""Hardening II (issue 20), parameter files: a duplicated key, an anchor bomb, ``1e-3`` and a
params path that is no file each get the right answer: one line naming the file and the
problem (or, for ``1e-3``, a float), never a silently dropped setting, a hang or a traceback."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fusionlib.errors import ParamsError
from fusionlib.params import load_params
from helpers import CLI_ENV, REPO, cli, cli_here, one_error_line



def _error(path) -> str:
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


# --------------------------------------------------------------------------- duplicated keys

DUPLICATES = {
    "section": ("protocol: {folds: 2}\nfusion: {variant: fixed}\nprotocol: {seeds: [0]}\n",
                ["key 'protocol'", "twice", "lines 1 and 3"]),
    "nested": ("protocol:\n  folds: 2\n  seeds: [0]\n  folds: 3\n",
               ["key 'protocol.folds'", "twice", "lines 2 and 4"]),
    "top_level_scalar": ("name: a\ndescription: one\ndescription: two\n",
                         ["key 'description'", "twice", "lines 2 and 3"]),
    "in_options_one_line": ("fusion: {variant: fixed, options: {weights: [0.5, 0.5], weights: [1, 0]}}\n",
                            ["key 'fusion.options.weights'", "twice", "line 1"]),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_duplicated_key_is_refused_with_both_lines(case, tmp_path):
    text, expected = DUPLICATES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    message = _error(path)
    for part in expected:
        assert part in message, message


def test_duplicated_key_one_line_from_thecli(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATES["section"][0])
    line = one_error_line(cli_here(capsys, "validate", path), path)
    assert "key 'protocol'" in line and "lines 1 and 3" in line


def test_merge_key_override_is_no_duplicate(tmp_path):
    """``<<: *base`` then a key of base overrides it: ordinary YAML, not a repeated key."""
    path = tmp_path / "merge.yaml"
    path.write_text("protocol: &p {folds: 3, seeds: [0]}\n"
                    "stage2:\n  <<: {enabled: false}\n  enabled: true\n")
    params = load_params(path)
    assert params.protocol.folds == 3 and params.stage2.enabled is True


# --------------------------------------------------------------------------- anchor bombs


def _bomb(levels=9, width=9) -> list[str]:
    """``9 levels of 9`` aliases: a few hundred bytes standing for 9**9 strings."""
    items = ['&a0 "lol"']
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return items


BOMBS = {
    "description": "description: [" + ", ".join(_bomb()) + "]\n",
    "fusion_options": "fusion: {variant: fixed, options: {"
                      + ", ".join(f"x{i}: {item}" for i, item in enumerate(_bomb())) + "}}\n",
    "clinical_options": "clinical: {options: {"
                        + ", ".join(f"x{i}: {item}" for i, item in enumerate(_bomb())) + "}}\n",
    "recursive_alias": "fusion: {variant: fixed, options: &x {a: [*x]}}\n",
}

MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from fusionlib.errors import ParamsError
    from fusionlib.params import load_params
    load_params(sys.argv[1])                  # imports done, a good file read: the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    try:
        load_params(sys.argv[2])
        outcome = "accepted"
    except ParamsError as err:
        outcome = str(err)
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - start,
                      "grew_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
""")


def _limit_memory():
    import resource

    limit = 1536 * 1024 * 1024           # 1.5 GB of address space: the bomb hits it, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_anchor_bomb_fails_fast_with_bounded_memory(case, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("fusion: {variant: fixed}\n")
    bomb = tmp_path / f"{case}.yaml"
    bomb.write_text(BOMBS[case])
    try:
        proc = subprocess.run([sys.executable, "-c", MEASURE, str(good), str(bomb)],
                              capture_output=True, text=True, cwd=REPO, env=CLI_ENV, timeout=60,
                              preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: reading the parameter file did not finish in 60 s")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outcome"].startswith(f"{bomb}: "), result
    assert "\n" not in result["outcome"] and len(result["outcome"]) < 1000, result
    assert result["seconds"] < 5, result
    assert result["grew_mb"] < 200, result


def test_anchor_bomb_one_line_from_thecli(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMBS["description"])
    try:
        proc = cli("validate", bomb, timeout=60, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail("fusionlib validate on an anchor bomb did not finish in 60 s")
    line = one_error_line(proc, bomb)
    assert "key 'description" in line and "too many values" in line, line


def test_shared_aliases_within_bounds_still_load(tmp_path):
    """Aliases are ordinary YAML: a small shared value is fine."""
    path = tmp_path / "alias.yaml"
    path.write_text("fusion: {variant: fixed, options: {weights: &w [0.5, 0.5]}}\n"
                    "description: &d shared\nname: alias\n")
    params = load_params(path)
    assert params.fusion.options["weights"] == [0.5, 0.5] and params.description == "shared"


def test_huge_value_in_a_message_is_cut(tmp_path):
    """Without aliases a value is bounded by the file; the message still shows only its start."""
    path = tmp_path / "long.yaml"
    path.write_text("description: [" + ", ".join(["x" * 1000] * 500) + "]\n")
    message = _error(path)
    assert "key 'description': expected str, got list" in message and len(message) < 600, message


def test_oversized_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("description: " + "x" * (2 << 20) + "\n")
    message = _error(path)
    assert "bytes" in message and "at most" in message, message


def test_deep_nesting_isone_error_line(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than" in _error(path)
    line = one_error_line(cli_here(capsys, "validate", path), path)
    assert "nested more than" in line


# --------------------------------------------------------------------------- YAML 1.2 floats


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1E-4", 1e-4), ("2.5e-3", 0.0025),
                                         ("1.5e-2", 0.015), ("5e-1", 0.5)])
def test_exponent_floats_are_floats(text, value, tmp_path):
    path = tmp_path / "rate.yaml"
    path.write_text(f"head: {{learning_rate: {text}}}\nstage2: {{learning_rate: {text}}}\n")
    params = load_params(path)
    assert params.head.learning_rate == pytest.approx(value)
    assert params.stage2.learning_rate == pytest.approx(value)


def test_every_yaml12_float_form_is_read_as_float(tmp_path):
    from fusionlib.params import read_params_yaml

    path = tmp_path / "floats.yaml"
    path.write_text("a: [1e-3, 1E5, -2.5e+3, 1.5e3, +1e3, -.5, 1.0, .5]\n"
                    "ints: [100, 0x1f, 1_000]\n"
                    "text: [e5, 1e, 1.2.3, '1e-3', v1e3, 1e-3x]\n")
    raw = read_params_yaml(path)
    assert raw["a"] == [0.001, 100000.0, -2500.0, 1500.0, 1000.0, -0.5, 1.0, 0.5]
    assert all(type(v) is float for v in raw["a"])
    assert raw["ints"] == [100, 31, 1000] and all(type(v) is int for v in raw["ints"])
    assert raw["text"] == ["e5", "1e", "1.2.3", "1e-3", "v1e3", "1e-3x"]


def test_quoted_number_stays_text(tmp_path):
    path = tmp_path / "quoted.yaml"
    path.write_text("name: '1e5'\ndescription: '2e-3'\n")
    params = load_params(path)
    assert params.name == "1e5" and params.description == "2e-3"


# --------------------------------------------------------------------------- params paths


def test_folder_as_params_path(tmp_path):
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    assert "is a folder, expected a YAML parameter file" in _error(folder)


def test_symlink_loop_as_params_path(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.symlink_to(two)
    two.symlink_to(one)
    message = _error(one)
    assert "symlink loop" in message and "not found" not in message, message


def test_dangling_symlink_says_where_it_points(tmp_path):
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "gone.yaml")
    message = _error(link)
    assert "symlink" in message and "gone.yaml" in message and "does not exist" in message, message


def test_fifo_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in _error(fifo)


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "secret.yaml"
    path.write_text("fusion: {variant: fixed}\n")
    if os.geteuid() != 0:
        path.chmod(0)
    else:                                   # root reads anything: make the open fail as it would
        import builtins

        real_open = builtins.open

        def deny(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", deny)
    try:
        message = _error(path)
    finally:
        path.chmod(0o644)
    assert "permission denied" in message and "not found" not in message, message


def test_missing_file_still_says_not_found(tmp_path):
    assert "parameter file not found" in _error(tmp_path / "missing.yaml")


def test_bad_paths_one_line_each_from_thecli(tmp_path, capsys):
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    assert "is a folder" in one_error_line(cli_here(capsys, "validate", folder), folder)
    assert "symlink loop" in one_error_line(cli_here(capsys, "validate", loop), loop)
