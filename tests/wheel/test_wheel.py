# SPDX-License-Identifier: MIT
"""The installed wheel: its three commands on PATH, binaries that need only
glibc 2.28, the package's way to its own server (``ringstore.server_path()``),
``python -m ringstore`` as the server itself, and the rendezvous entry point
and .pth hook. Every store check goes through a real torch client."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import ringstore
from procs import reap, spawn

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("ringstore", "ringstore-cli", "ringstore-bench")
# What a manylinux_2_28 binary may link (auditwheel's policy, for what ours need).
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libpthread.so.0", "ld-linux-x86-64.so.2"}
GLIBC_MAX = (2, 28)


def run(args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=30, **kw)


def test_package_is_the_venvs():
    """The suite imports the wheel's package, not the checkout's or the system's."""
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert Path(ringstore.__file__).resolve().parent == site / "ringstore"
    assert importlib.metadata.version("ringstore") == ringstore.__version__


def test_commands_on_path_run(venv_bin):
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}/usr/bin:/bin")
    for name in COMMANDS:
        assert (venv_bin / name).is_file() and os.access(venv_bin / name, os.X_OK), name
    r = run(["ringstore", "--version"], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ringstore {ringstore.__version__}"
    r = run(["ringstore-cli", "--help"], env=env)
    assert r.returncode == 0 and r.stdout.startswith("usage: ringstore-cli"), r
    r = run(["ringstore-bench", "--help"], env=env)
    assert r.returncode == 0 and r.stdout.startswith("Usage: ringstore-bench"), r


def _glibc_versions(path: Path) -> set[tuple[int, ...]]:
    out = run(["objdump", "-T", path]).stdout
    versions = set()
    for v in re.findall(r"\((\w+?)_([0-9.]+)\)", out):
        assert v[0] == "GLIBC", f"{path.name} imports a non-glibc version {v}"
        versions.add(tuple(int(x) for x in v[1].split(".")))
    return versions


@pytest.mark.parametrize("name", COMMANDS)
def test_binary_needs_only_glibc_2_28(venv_bin, name):
    path = venv_bin / name
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                            run(["readelf", "-d", path]).stdout))
    assert needed and needed <= ALLOWED_NEEDED, needed
    versions = _glibc_versions(path)
    assert versions and max(versions) <= GLIBC_MAX, sorted(versions)[-3:]


def test_server_path_is_the_wheels(venv_bin, monkeypatch):
    # Not from PATH: the file the installation recorded.
    monkeypatch.delenv("RINGSTORE_BIN", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert ringstore.server_path() == str(venv_bin / "ringstore")
    for name in COMMANDS:
        assert ringstore.executable(name) == str(venv_bin / name)
    with pytest.raises(ValueError):
        ringstore.executable("ringstore-floor")


def test_server_path_honours_ringstore_bin(tmp_path, monkeypatch):
    fake = tmp_path / "my-ringstore"
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setenv("RINGSTORE_BIN", str(fake))
    with pytest.raises(FileNotFoundError, match="not an executable"):
        ringstore.server_path()
    fake.chmod(0o755)
    assert ringstore.server_path() == str(fake)
    # Only the server is overridden.
    assert ringstore.executable("ringstore-cli") != str(fake)


@pytest.mark.timeout_s(60)
def test_python_m_ringstore_is_the_server(venv_bin, tmp_path):
    import torch.distributed as dist

    env = {k: v for k, v in os.environ.items() if k != "RINGSTORE_BIN"}
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = spawn([sys.executable, "-m", "ringstore", "--port", "0", "--bind", "127.0.0.1"],
                  stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env)
    port = None
    while port is None and p.poll() is None:
        m = re.match(r"ringstore listening on \S+:(\d+)\n", out.read_text())
        port = int(m.group(1)) if m else time.sleep(0.01)
    assert port, f"exited with {p.returncode}: {err.read_text()}"
    # exec: the Python process became the server (same pid, named ringstore).
    assert Path(f"/proc/{p.pid}/exe").resolve() == venv_bin / "ringstore"
    assert Path(f"/proc/{p.pid}/comm").read_text().strip() == "ringstore"
    s = dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                      timeout=datetime.timedelta(seconds=10))
    s.set("wheel", "works")
    assert s.get("wheel") == b"works"
    assert s.add("n", 2) == 2
    # The signal reaches the server itself, and its exit status is ours.
    p.send_signal(signal.SIGTERM)
    assert reap(p, 10) == 0
    assert "shutting down" in err.read_text()


def test_python_m_ringstore_exit_status_is_the_servers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RINGSTORE_BIN"}
    r = run([sys.executable, "-m", "ringstore", "--no-such-flag"], env=env)
    assert r.returncode == 2, r
    r = run([sys.executable, "-m", "ringstore", "--help"], env=env)
    assert r.returncode == 0 and "--port" in r.stdout, r
    env["RINGSTORE_BIN"] = str(tmp_path / "missing")
    r = run([sys.executable, "-m", "ringstore", "--version"], env=env)
    assert r.returncode == 127, r
    assert "RINGSTORE_BIN" in r.stderr and "missing" in r.stderr, r.stderr


def test_rendezvous_entry_point_pth_and_license():
    eps = [e for e in importlib.metadata.entry_points(group="torchrun.handlers")
           if e.name == "ringstore"]
    assert [e.value for e in eps] == ["ringstore.rendezvous:torchrun_handler"]
    dist = importlib.metadata.distribution("ringstore")
    files = {str(f) for f in dist.files}
    assert "ringstore-worker-prefix.pth" in files
    assert any(f.endswith("licenses/LICENSE") for f in files), sorted(files)
    assert "ringstore/ringstore-worker-prefix.pth" not in files
    site = Path(sysconfig.get_paths()["platlib"])
    pth = (site / "ringstore-worker-prefix.pth").read_text()
    assert pth == (ROOT / "python/ringstore/ringstore-worker-prefix.pth").read_text()
    # The hook is imported at start-up exactly when the variable is set.
    probe = "import sys; print('ringstore._worker_hook' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "RINGSTORE_WORKER_PREFIX"}
    assert run([sys.executable, "-c", probe], env=env).stdout.strip() == "False"
    env["RINGSTORE_WORKER_PREFIX"] = "rdzv/job/0/worker"
    assert run([sys.executable, "-c", probe], env=env).stdout.strip() == "True"
