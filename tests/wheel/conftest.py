# SPDX-License-Identifier: MIT
"""Fixtures for the wheel suite (tests/wheel): the ringstore wheel as a user
gets it, installed into a fresh venv.

scripts/test (step 8) builds the wheel with scripts/wheel, installs it into
a new venv (with --system-site-packages, for torch and pytest) and runs this
suite with that venv's python and ``RS_WHEEL_VENV`` set to the venv. The
suite checks what the wheel installs: the three commands, what they link,
the package's way to its server, ``python -m ringstore``, the rendezvous
entry point and the .pth hook. Run by hand:

    scripts/wheel /tmp/w && python3 -m venv --system-site-packages /tmp/v &&
    /tmp/v/bin/pip install --no-deps --ignore-installed /tmp/w/*.whl &&
    RS_WHEEL_VENV=/tmp/v /tmp/v/bin/python -m pytest tests/wheel -q
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from procs import watchdog  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(n): per-test watchdog in seconds")


def pytest_sessionstart(session):
    venv = os.environ.get("RS_WHEEL_VENV")
    if not venv:
        pytest.exit("tests/wheel needs RS_WHEEL_VENV, a venv with the wheel "
                    "installed (scripts/test --step 8 makes one)", 2)
    if Path(sys.prefix).resolve() != Path(venv).resolve():
        pytest.exit(f"run tests/wheel with {venv}/bin/python, not {sys.executable}", 2)


@pytest.fixture(autouse=True)
def _watchdog(request):
    with watchdog(request, 60.0):
        yield


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The venv's bin directory, where pip put the wheel's scripts."""
    return Path(os.environ["RS_WHEEL_VENV"]).resolve() / "bin"
