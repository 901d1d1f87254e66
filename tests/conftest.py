"""Shared fixtures. TensorFlow's noise is silenced before anything imports it."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests must be reproducible in CI: the same examples every run (derandomize), no
# example database carried between runs, no timing-based failures on a loaded machine.
settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, database=None,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
REAL_DIR = Path(os.environ.get("FUSIONLIB_DFU_DIR", REPO.parent / "shared" / "data" / "dfu"))
REAL_TABLE = REAL_DIR / "DataMaster_Processed_V12_WithMissing.csv"


@pytest.fixture(scope="session")
def real_dir():
    """The real DFU folder (../shared/data/dfu); tests using it skip when it is absent."""
    if not REAL_TABLE.is_file():
        pytest.skip(f"real DFU data not found at {REAL_DIR} (set FUSIONLIB_DFU_DIR or "
                    "place ../shared/data/dfu beside the checkout)")
    return REAL_DIR


@pytest.fixture(scope="session")
def real_cohort(real_dir):
    from fusionlib.data import read_clinical_table

    return read_clinical_table(real_dir / "DataMaster_Processed_V12_WithMissing.csv")


@pytest.fixture
def other_user():
    """``(folder, prefix, env)``: a fresh folder under /tmp and the command prefix and
    environment to run a command as a user who does not own it.

    Root ignores file permissions, so read-only folders are tested as "nobody" (setpriv)
    when the tests run as root; the folder is world-readable so that user can read it.
    """
    import shutil
    import stat
    import tempfile

    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot test a read-only folder")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        # A checkout inside a folder only root may enter (`mktemp -d` makes them 0700) is out of
        # that user's reach: nothing about read-only folders could be tested then.
        import subprocess
        import sys

        probe = subprocess.run([*prefix, sys.executable, "-c", "import fusionlib"], cwd="/",
                               capture_output=True, text=True, timeout=60)
        if probe.returncode:
            pytest.skip(f"user nobody cannot import fusionlib from {REPO} (a parent folder "
                        f"closed to other users?): {probe.stderr.strip().splitlines()[-1]}")
    else:
        prefix = []
    folder = Path(tempfile.mkdtemp(prefix="fusionlib-other-user-", dir="/tmp"))
    folder.chmod(0o755)
    home = folder / "home"                      # HOME and matplotlib's cache for that user
    home.mkdir()
    home.chmod(0o777)
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl")}
    try:
        yield folder, prefix, env
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def default_cohort_in_place():
    """The default synthetic cohort (``data/generated/...`` or ``$FUSIONLIB_DATA_DIR``), generated
    once before any test uses it.

    Runs, notebooks and the report read the default cohort and generate it when absent. Under
    pytest-xdist (``make test`` runs ``-n 2``) several workers would otherwise generate it at
    the same moment and swap their copies into place one after the other, so a worker could
    find the folder renamed aside while it reads it. One worker generates it under a lock
    file; the others wait for it and find it current.
    """
    import hashlib
    import tempfile

    from fusionlib._io import file_lock
    from fusionlib.synthetic import default_cohort_dir, ensure_default_cohort

    where = hashlib.sha256(str(default_cohort_dir().resolve()).encode()).hexdigest()[:16]
    with file_lock(Path(tempfile.gettempdir()) / f"fusionlib-tests-cohort-{where}.lock"):
        ensure_default_cohort()
