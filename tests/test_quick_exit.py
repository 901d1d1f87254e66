"""fusionlib's own processes end without the collector's passes at exit (fusionlib._imports)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Registered before fusionlib runs, so it runs after fusionlib's exit handler (LIFO).
PROBE = ("import atexit, gc\n"
         "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n")


def ends(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE + code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_command_line_and_its_workers_freeze_their_objects_at_exit():
    assert ends("from fusionlib import cli\n"
                "assert cli.main(['validate', 'params/fixed_100.yaml']) == 0") == "frozen at exit: True"
    assert ends("from fusionlib.running import scheduling\n"
                "scheduling.worker_init()") == "frozen at exit: True"


def test_importing_the_library_leaves_a_users_exit_alone():
    assert ends("import fusionlib, fusionlib.running.runner, fusionlib.cli") == "frozen at exit: False"
