# SPDX-License-Identifier: MIT
"""procs.py - what the two pytest suites (tests/compat, tests/rdzv) share:
child processes in their own process groups, killed with their groups when
the test that started them ends, and a per-test watchdog that dumps every
thread's stack and kills them if the test overruns (so a client blocked in
recv() gets EOF instead of hanging the run)."""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import subprocess
import sys
import threading

import pytest

_live: list[subprocess.Popen] = []
_lock = threading.Lock()


def register_proc(p: subprocess.Popen) -> subprocess.Popen:
    with _lock:
        _live.append(p)
    return p


def unregister_proc(p: subprocess.Popen) -> None:
    with _lock:
        if p in _live:
            _live.remove(p)


def kill_group(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            p.kill()
        except ProcessLookupError:
            pass


def spawn(args, **kw) -> subprocess.Popen:
    """Popen in its own process group, killed when the test ends."""
    kw.setdefault("start_new_session", True)
    return register_proc(subprocess.Popen(args, **kw))


def reap(p: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Wait for p up to timeout; kill its group if it is still running."""
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        p.wait()
        rc = None
    unregister_proc(p)
    return rc


def _kill_all(wait: bool) -> None:
    with _lock:
        procs = list(_live)
        if wait:
            _live.clear()
    for p in procs:
        kill_group(p)
        if wait:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


@contextlib.contextmanager
def watchdog(request, default_limit: float, on_expire=None):
    """The body of an autouse fixture: the test may run for its
    ``timeout_s(N)`` marker's N seconds (else @default_limit); past that its
    stacks are dumped, @on_expire() runs and every process it spawned is
    killed, and the test fails. Its processes are killed when it ends."""
    m = request.node.get_closest_marker("timeout_s")
    limit = float(m.args[0]) if m else default_limit
    fired = threading.Event()

    def expire():
        fired.set()
        sys.stderr.write(f"\n=== watchdog: {request.node.nodeid} exceeded "
                         f"{limit:.0f}s; stacks:\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        _kill_all(wait=False)
        if on_expire:
            on_expire()

    t = threading.Timer(limit, expire)
    t.daemon = True
    t.start()
    # Hard backstop: if even killing the servers did not unblock the test.
    faulthandler.dump_traceback_later(limit + 60, exit=True)
    try:
        yield
    finally:
        t.cancel()
        faulthandler.cancel_dump_traceback_later()
        _kill_all(wait=True)
    if fired.is_set():
        pytest.fail(f"test exceeded its {limit:.0f}s watchdog "
                    "(servers and helpers were killed)")
