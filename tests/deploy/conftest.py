# SPDX-License-Identifier: MIT
"""tests/deploy: each test under the shared watchdog of tests/procs.py
(``@pytest.mark.timeout_s(N)``, default 120 s): past it, stacks are dumped
and the processes the test started are killed."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from procs import watchdog  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(n): per-test watchdog in seconds")


@pytest.fixture(autouse=True)
def _watchdog(request):
    with watchdog(request, 120.0):
        yield
