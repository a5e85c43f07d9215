"""The shared Online Retail export, for the tests that read real order history.

It sits beside the checkout (`<project root>/../shared/data/online_retail.csv.gz`) and is never
copied into the repository. Where it is absent a test skips and says why -- except in CI (the
`CI` variable is set), where a missing data set is a failure, not a pass.
"""

import os
from pathlib import Path

import pytest

from velocity_platform.connectors.files import FileExport, preset, read_export

PROJECT = Path(__file__).resolve().parents[2]
ONLINE_RETAIL = PROJECT.parent / "shared" / "data" / "online_retail.csv.gz"


def _require(path: Path) -> Path:
    if path.exists():
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing; CI runs the real-data tests and needs ../shared/data beside the checkout")
    pytest.skip(f"{path} is absent (../shared/data is not beside this checkout); CI runs these tests")


@pytest.fixture(scope="session")
def online_retail_path() -> Path:
    return _require(ONLINE_RETAIL)


@pytest.fixture(scope="session")
def online_retail(online_retail_path: Path) -> FileExport:
    return read_export(online_retail_path, preset("online-retail"))
