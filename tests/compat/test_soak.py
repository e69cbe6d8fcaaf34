"""CI wrapper for the soak (issue 7): scripts/soak --quick against the server this
suite tests (ringstore_bin(): $RINGSTORE_BIN or ${RS_BUILD_DIR:-build}/bin/ringstore).

30 s of mixed load from 4 torch client processes, then the exact final state, the
RSS (or, for an ASan binary, live-heap) rule, and exit 0 on SIGTERM with no
sanitizer report. With RS_BUILD_DIR pointing at an ASan build (scripts/test
--sanitize) this is the ASan/LSan soak; the full-length soak is `scripts/soak`
(builds build-asan itself, 180 s).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, io_flags, reap, ringstore_bin, spawn

pytestmark = [pytest.mark.ringstore_only, pytest.mark.slow]


@pytest.mark.timeout_s(150)
def test_soak_quick():
    p = spawn([sys.executable, str(ROOT / "scripts" / "soak"), "--quick",
               "--binary", str(ringstore_bin()),
               "--threads", os.environ.get("RS_THREADS", "2"),
               "--server-args=" + " ".join(["--recv-buffers", "64", *io_flags()])],
              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=140)
    finally:
        reap(p, 0)
    print(out)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    assert p.returncode == 0 and last.startswith("SOAK OK"), out[-6000:]
