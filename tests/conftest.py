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
