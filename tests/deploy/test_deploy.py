# SPDX-License-Identifier: MIT
"""The deployment files against the real ringstore binary.

deploy/systemd/ringstore.service, deploy/k8s/ringstore.yaml,
deploy/docker/Dockerfile, deploy/ringstore-backup and docs/deploy.md are what
operators copy. These tests check that what they say is what ringstore does:

  * the unit passes `systemd-analyze verify`, and its offline security
    exposure stays low;
  * ringstore, run with the unit's command line (its directories moved under
    a temporary one) as an unprivileged user without capabilities, under
    strace, through a start, load, a compaction and a restart on io_uring
    and epoll, a damaged log and its repair, stays within every sandboxing
    option of the unit: each system call within SystemCallFilter, each
    socket family within RestrictAddressFamilies, every write within the
    StateDirectory and RuntimeDirectory, /proc only per process, no memory
    both writable and executable, and so on. Every [Service] key must have
    such a check or a stated reason for none, so a new option needs one;
  * a damaged log exits with a status the unit does not restart on;
  * the manifest passes the Kubernetes JSON schemas (kubernetes-validate,
    strict, from the venv tests/deploy/deps makes), and ringstore run with
    its container's arguments answers its probes, listens on the port its
    Services and NetworkPolicy name and keeps its data on the volume; the
    Dockerfile installs the command the manifest runs, as its user;
  * every flag these files mention exists in `ringstore --help` (or
    ringstore-cli's, or is one of the few other tools' flags listed here),
    and every metric docs/deploy.md names is in /metrics;
  * deploy/ringstore-backup's copy, taken while a compaction is held at each
    of its steps (RINGSTORE_COMPACT_PAUSE), restores exactly what the server
    held.

Runs in scripts/test step 7; needs `tests/deploy/deps` first (scripts/test
runs it before it enters its network namespace).
"""
from __future__ import annotations

import faulthandler
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from procs import reap, spawn, unregister_proc, watchdog  # noqa: E402

BUILD = Path(os.environ.get("RS_BUILD_DIR") or ROOT / "build")
BIN = BUILD / "bin" / "ringstore"
CLI = BUILD / "bin" / "ringstore-cli"
VENV = ROOT / os.environ.get("RS_DEPLOY_VENV", "build/deploy-venv")
UNIT = ROOT / "deploy" / "systemd" / "ringstore.service"
MANIFEST = ROOT / "deploy" / "k8s" / "ringstore.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
BACKUP = ROOT / "deploy" / "ringstore-backup"
DOC = ROOT / "docs" / "deploy.md"

# The user the sandboxed runs take (systemd's DynamicUser picks one like it).
NOBODY = 65534
# Flags of other tools that these files mention; anything else that looks
# like a flag must be ringstore's or ringstore-cli's.
FOREIGN_FLAGS = {
    # torchrun
    "--nnodes", "--nproc-per-node", "--max-restarts", "--rdzv-backend",
    "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf",
    # cmake, systemctl, journalctl, kubectl, curl, chown
    "--install", "--now", "--no-pager", "--type", "--previous", "--force",
    "--grace-period", "--unix-socket", "--reference",
}
LISTEN_RX = re.compile(r"^ringstore listening on (\S+):(\d+)$")
CONTROL_RX = re.compile(r"^ringstore control on (\S+)$")


# No conftest.py here: tests/rdzv's modules import theirs as `conftest`, and
# step 7 collects both directories in one session.
@pytest.fixture(autouse=True)
def _watchdog(request):
    """tests/procs.py's watchdog: past 120 s a test's stacks are dumped and
    the processes it started are killed."""
    with watchdog(request, 120.0):
        yield


def need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail(f"{tool} not found: run tests/deploy/deps", pytrace=False)
    return path


def need_binaries():
    for b in (BIN, CLI):
        if not os.access(b, os.X_OK):
            pytest.fail(f"no {b} (build it or set RS_BUILD_DIR)", pytrace=False)


# ---- reading the files -----------------------------------------------------

def unit_entries(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order, with continued lines
    joined and comments dropped (systemd.syntax(7))."""
    out, section, pending = [], None, ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_entries() if s == section and k == key]


def unit_value(key: str, section: str = "Service") -> str:
    vals = unit_values(key, section)
    assert len(vals) == 1, f"{key}= should appear once in [{section}]: {vals}"
    return vals[0]


def unit_dirs() -> dict[str, str]:
    """The unit's absolute directory for each kind it declares."""
    return {"state": "/var/lib/" + unit_value("StateDirectory"),
            "runtime": "/run/" + unit_value("RuntimeDirectory")}


def unit_argv() -> list[str]:
    """ExecStart's words; $VAR words are an empty environment variable."""
    return [w for w in shlex.split(unit_value("ExecStart")) if not w.startswith("$")]


def arg_value(argv: list[str], flag: str) -> str:
    i = argv.index(flag)
    return argv[i + 1]


def with_value(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


def manifest_docs() -> list[dict]:
    """The manifest's documents, parsed by the venv's PyYAML."""
    py = VENV / "bin" / "python"
    if not os.access(py, os.X_OK):
        pytest.fail(f"no {py}: run tests/deploy/deps", pytrace=False)
    out = subprocess.run(
        [str(py), "-c", "import json, sys, yaml; "
         "json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
         str(MANIFEST)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def manifest_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def help_flags(binary: Path) -> set[str]:
    text = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                          check=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


def mentioned_flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


# ---- running ringstore ------------------------------------------------------

def start(argv: list[str], err: Path, **kw) -> tuple[subprocess.Popen, int, str | None]:
    """Start @argv; (process, port, control address) once it listens."""
    with open(err, "wb") as f:
        p = spawn(argv, stdout=subprocess.PIPE, stderr=f, stdin=subprocess.DEVNULL,
                  text=True, **kw)
    line = p.stdout.readline().strip()
    m = LISTEN_RX.match(line)
    if not m:
        reap(p, 10)
        pytest.fail(f"ringstore did not start ({line!r}):\n{err.read_text()[-3000:]}",
                    pytrace=False)
    ctl = None
    if any(a.startswith("--control-") and a != "--control-idle-timeout" for a in argv):
        c = CONTROL_RX.match(p.stdout.readline().strip())
        assert c, "no 'ringstore control on' line"
        ctl = c.group(1)
    return p, int(m.group(2)), ctl


def stop(p: subprocess.Popen, pid: int | None = None) -> int:
    """SIGTERM (to @pid, else to p) and the exit status."""
    os.kill(pid or p.pid, signal.SIGTERM)
    rc = p.wait(timeout=30)
    unregister_proc(p)
    return rc


def cli(port: int, *args: str, binary: Path = CLI) -> str:
    r = subprocess.run([str(binary), "--addr", f"127.0.0.1:{port}", "--timeout", "10",
                        *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"ringstore-cli {args}: {r.returncode} {r.stderr}"
    return r.stdout


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def http_get(addr: str, path: str) -> tuple[int, str]:
    """GET @path from a control plane at 'unix:PATH' or 'HOST:PORT'."""
    if addr.startswith("unix:"):
        c = UnixHTTP(addr[5:])
    else:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        c = http.client.HTTPConnection("127.0.0.1" if host in ("::", "0.0.0.0") else host,
                                       int(port), timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def wait_for(path: Path, text: str, proc: subprocess.Popen, limit: float = 30.0):
    deadline = time.monotonic() + limit
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"ringstore exited:\n{path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in:\n{path.read_text()[-3000:]}"
        time.sleep(0.05)


def child_of(ppid: int) -> int:
    """The pid of @ppid's child (ringstore under strace)."""
    for _ in range(200):
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == ppid:
                return int(d.name)
        time.sleep(0.01)
    raise AssertionError(f"no child of {ppid}")


# Records of a log file: a 64-byte file header, then records of a 16-byte
# header (payload length, checksum, LSN) and the payload, padded to 16 bytes.
LOG_FILE_HDR, REC_HDR = 64, 16


def log_records(path: Path) -> list[int]:
    data, out, off = path.read_bytes(), [], LOG_FILE_HDR
    while off + REC_HDR <= len(data):
        n = struct.unpack_from("<I", data, off)[0]
        span = (REC_HDR + n + 15) & ~15
        if off + span > len(data):
            break
        out.append(off)
        off += span
    return out


def newest_log(data: Path) -> Path:
    nums = [int(line.split()[1]) for line in (data / "MANIFEST").read_text().splitlines()
            if line.startswith("log ")]
    return data / f"log-{nums[-1]:06d}.rs"


# ---- systemd ----------------------------------------------------------------

def analyze(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """systemd-analyze @args on a copy of the unit whose ExecStart runs the
    built binary (verify checks that the program exists)."""
    need_binaries()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(unit_argv()[0], str(BIN)))
    return subprocess.run([need("systemd-analyze"), *args, str(unit)],
                          capture_output=True, text=True)


def test_unit_verifies(tmp_path):
    """systemd-analyze verify: no unknown key, bad value or missing binary
    (it prints those as warnings and still exits 0, so any output fails)."""
    r = analyze(tmp_path, "verify")
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, out


# systemd-analyze security's exposure score of the unit (0 to 10, lower is
# better) on systemd 252: removing PrivateDevices= or RestrictNamespaces=,
# say, raises it. A systemd that scores differently needs this updated.
EXPOSURE = 1.4


def test_unit_security_exposure(tmp_path):
    """systemd-analyze security --offline: no worse than EXPOSURE."""
    r = analyze(tmp_path, "security", "--offline=yes", "--no-pager")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= EXPOSURE, r.stdout


def test_unit_restarts_except_on_damage():
    assert unit_value("Restart") == "always"
    prevent = unit_value("RestartPreventExitStatus").split()
    assert "65" in prevent and "0" not in prevent and "1" not in prevent
    assert unit_value("Type") in ("exec", "simple")
    assert int(unit_value("LimitNOFILE")) >= 65536


# ---- the unit's sandbox against a traced run ---------------------------------

def syscall_groups(tool: str) -> dict[str, list[str]]:
    """systemd-analyze syscall-filter: each @group's members (syscalls and
    nested @groups)."""
    text = subprocess.run([tool, "syscall-filter"], capture_output=True, text=True,
                          check=True).stdout
    groups, cur = {}, None
    for line in text.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and cur is not None:
            word = line.strip()
            if not word.startswith("#"):
                cur.append(word)
        else:
            cur = None
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for n in names:
        if n.startswith("@"):
            assert n in groups, f"unknown syscall group {n}"
            out |= expand(groups[n], groups)
        else:
            out.add(n)
    return out


def allowed_syscalls(tool: str) -> set[str]:
    """The set SystemCallFilter= allows: the first assignment is an allow
    list (systemd then adds @default), later ~ assignments remove from it
    and plain ones add to it (systemd.exec(5))."""
    groups = syscall_groups(tool)
    filters = unit_values("SystemCallFilter")
    assert filters and not filters[0].startswith("~"), "expected an allow list first"
    allowed = expand(["@default"], groups)
    for f in filters:
        if f.startswith("~"):
            allowed -= expand(f[1:].split(), groups)
        else:
            allowed |= expand(f.split(), groups)
    return allowed


class Call:
    __slots__ = ("pid", "name", "args", "run")

    def __init__(self, pid, name, args, run):
        self.pid, self.name, self.args, self.run = pid, name, args, run

    def paths(self) -> list[str]:
        return [bytes(s, "ascii").decode("unicode_escape")
                for s in re.findall(r'"((?:[^"\\]|\\.)*)"', self.args)]

    def __repr__(self):
        return f"[{self.run}] {self.name}({self.args[:200]}"


CALL_RX = re.compile(r"^(\d+)\s+([a-z_][a-z0-9_]*)\((.*)$")


def parse_trace(path: Path, run: str) -> tuple[list[Call], list[str]]:
    """The calls of an strace -f log, and its other lines (strace's notes,
    such as a process running in another ABI's mode)."""
    calls, notes = [], []
    for line in path.read_text(errors="replace").splitlines():
        m = CALL_RX.match(line)
        if m:
            calls.append(Call(int(m.group(1)), m.group(2), m.group(3), run))
        elif "resumed>" not in line and " +++ " not in line and " --- " not in line:
            notes.append(f"[{run}] {line}")
    return calls, notes


class Sandboxed:
    """ringstore under strace with the unit's command line, as the unit
    would run it (see the module docstring); what it did, per run."""

    def __init__(self, base: Path):
        self.base = base
        self.calls: list[Call] = []
        self.logs: dict[str, str] = {}
        self.rcs: dict[str, int] = {}
        # As root, the runs drop to NOBODY without capabilities (setpriv),
        # as DynamicUser= and CapabilityBoundingSet= would.
        self.drop = os.geteuid() == 0
        self.creds: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []
        d = unit_dirs()
        self.state = base / "state" / Path(d["state"]).name
        self.runtime = base / "run" / Path(d["runtime"]).name
        self.argv = []
        for a in unit_argv()[1:]:
            for kind, path in d.items():
                if a == path or a.startswith(path + "/"):
                    a = str(self.state if kind == "state" else self.runtime) + a[len(path):]
            self.argv.append(a)
        self.argv = with_value(self.argv, "--port", "0")
        self.bin = base / "bin" / "ringstore"
        self.cli = base / "bin" / "ringstore-cli"

    def setup(self):
        # Copies of the binaries where the unprivileged user can run them,
        # and the directories systemd would create for it.
        (self.base / "bin").mkdir()
        shutil.copy(BIN, self.bin)
        shutil.copy(CLI, self.cli)
        for d in (self.state, self.runtime):
            d.mkdir(parents=True, mode=0o700)
        if self.drop:
            for d in (self.base, self.state.parent, self.runtime.parent, self.state,
                      self.runtime):
                os.chown(d, NOBODY, NOBODY)
            self.base.chmod(0o755)

    def _limits(self):
        import resource
        want = int(unit_value("LimitNOFILE"))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            pass

    def run(self, name: str, extra: list[str], load=None, expect_rc: int | None = 0):
        """One traced run; expect_rc None: any failure status."""
        trace, err = self.base / f"{name}.trace", self.base / f"{name}.err"
        cmd = []
        if self.drop:
            # DynamicUser, CapabilityBoundingSet= and NoNewPrivileges=.
            cmd = [need("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}",
                   "--clear-groups", "--no-new-privs", "--inh-caps=-all",
                   "--bounding-set=-all", "--"]
        cmd += [need("strace"), "-f", "-qq", "-s", "512", "-o", str(trace), "--",
                str(self.bin), *self.argv, *extra]
        if expect_rc == 0:
            p, port, ctl = start(cmd, err, umask=0o077, preexec_fn=self._limits)
            server = child_of(p.pid)
            status = Path(f"/proc/{server}/status").read_text()
            self.creds[name] = dict(re.findall(r"^(Uid|CapEff|CapBnd|NoNewPrivs):\s*(.*)$",
                                               status, re.M))
            if load:
                load(port, ctl, err, p)
            rc = stop(p, server)
        else:
            with open(err, "wb") as f:
                p = spawn(cmd, stdout=subprocess.DEVNULL, stderr=f,
                          stdin=subprocess.DEVNULL, umask=0o077, preexec_fn=self._limits)
            rc = reap(p, 30)
        self.rcs[name] = rc
        self.logs[name] = err.read_text(errors="replace")
        ok = rc == expect_rc if expect_rc is not None else rc not in (0, None)
        assert ok, f"{name}: exit {rc}, not {expect_rc}:\n{self.logs[name][-3000:]}"
        calls, notes = parse_trace(trace, name)
        self.calls += calls
        self.notes += notes

    def load_and_compact(self, port, ctl, err, proc):
        """Every kind of request, the control plane, and overwrites of one
        key until a compaction has run."""
        c = lambda *a: cli(port, *a, binary=self.cli)  # noqa: E731
        c("set", "a", "1")
        c("add", "n", "5")
        c("compare-set", "a", "1", "2")
        c("multi-set", "m1", "x", "m2", "y")
        c("multi-get", "m1", "m2")
        c("append", "a", "3")
        c("check", "a", "m1")
        c("wait", "a")
        c("queue-push", "q", "item")
        c("queue-pop", "q")
        c("delete", "m2")
        c("num-keys")
        c("list-keys")
        c("ping")
        for path in ("/health", "/metrics", "/handler/keys", "/handler/stats",
                     "/handler/waiters", "/handler/barriers"):
            status, _ = http_get(ctl, path)
            assert status == 200, path
        for i in range(200):
            c("set", "big", f"{i:04d}" * 256)
            if "write log: compacted" in err.read_text(errors="replace"):
                break
        wait_for(err, "write log: compacted", proc)

    def load_keys(self, port, ctl, err, proc):
        for i in range(12):
            cli(port, "set", f"k{i:02d}", f"v{i}", binary=self.cli)
        assert cli(port, "get", "k11", binary=self.cli) == "v11"
        assert cli(port, "get", "a", binary=self.cli) == "23"

    def load_repaired(self, port, ctl, err, proc):
        assert cli(port, "get", "k00", binary=self.cli) == "v0"
        assert http_get(ctl, "/health")[0] == 200

    def scenario(self):
        both = ["--threads", "2"]  # several reactors: netlink, reuseport, MSG_RING
        self.run("start", [*both, "--compact-min-bytes", "4K"], self.load_and_compact)
        self.run("replay-epoll", [*both, "--io", "epoll"], self.load_keys)
        log = newest_log(self.state)
        recs = log_records(log)
        assert len(recs) >= 12, recs
        data = bytearray(log.read_bytes())
        data[recs[-6] + REC_HDR] ^= 0x55  # valid records follow: damage
        log.write_bytes(bytes(data))
        self.run("damaged", both, expect_rc=None)
        self.run("repair-uring", [*both, "--repair-log"], self.load_repaired)


@pytest.fixture(scope="module")
def sandboxed():
    need_binaries()
    need("systemd-analyze")
    base = Path(tempfile.mkdtemp(prefix="rs-deploy-"))
    # A module fixture runs before any test's watchdog: bound it here.
    faulthandler.dump_traceback_later(180, exit=True)
    try:
        s = Sandboxed(base)
        s.setup()
        s.scenario()
        faulthandler.cancel_dump_traceback_later()
        yield s
    finally:
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(base, ignore_errors=True)


def write_paths(calls: list[Call]) -> list[tuple[str, Call]]:
    """Every path a call created, changed or removed."""
    out = []
    for c in calls:
        ps = c.paths()
        failed_exists = "= -1 EEXIST" in c.args
        if c.name in ("open", "openat", "openat2", "creat"):
            flags = c.args.split(",")[2 if c.name != "open" else 1] if ps else ""
            if c.name == "creat" or re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", flags):
                out += [(p, c) for p in ps[:1]]
        elif c.name in ("mkdir", "mkdirat"):
            if not failed_exists:  # an existing parent: make_dirs walks down
                out += [(p, c) for p in ps[:1]]
        elif c.name in ("rename", "renameat", "renameat2", "link", "linkat",
                        "symlink", "symlinkat"):
            out += [(p, c) for p in ps[:2]]
        elif c.name in ("unlink", "unlinkat", "rmdir", "truncate", "chmod", "fchmodat",
                        "chown", "lchown", "fchownat", "mknod", "mknodat", "utimensat"):
            out += [(p, c) for p in ps[:1]]
        elif c.name == "bind" and "AF_UNIX" in c.args:
            out += [(p, c) for p in ps[:1]]
    return out


def check_syscall_filter(s: Sandboxed) -> list[str]:
    allowed = allowed_syscalls(need("systemd-analyze"))
    return sorted({f"{c.name} (first in run {c.run})" for c in s.calls
                   if c.name not in allowed})


def check_address_families(s: Sandboxed) -> list[str]:
    fams = set(unit_value("RestrictAddressFamilies").split())
    return [repr(c) for c in s.calls if c.name in ("socket", "socketpair")
            and c.args.split(",")[0].strip() not in fams]


def check_writes(s: Sandboxed) -> list[str]:
    """ProtectSystem=strict, ProtectHome, ProtectKernelTunables,
    ProtectControlGroups: only the state and runtime directories (and
    /dev/null) may be written."""
    ok = (str(s.state) + "/", str(s.runtime) + "/")
    bad = []
    for p, c in write_paths(s.calls):
        if not p.startswith("/"):
            bad.append(f"relative path {p!r} in {c!r}")
        elif p != "/dev/null" and not (p + "/").startswith(ok):
            bad.append(f"{p} in {c!r}")
    return bad


def check_proc_subset(s: Sandboxed) -> list[str]:
    """ProcSubset=pid: /proc only per process."""
    rx = re.compile(r"^/proc/(self|thread-self|\d+)(/|$)")
    return [f"{p} in {c!r}" for c in s.calls for p in c.paths()
            if p.startswith("/proc") and not rx.match(p)]


def check_proc_invisible(s: Sandboxed) -> list[str]:
    """ProtectProc=invisible: no other process's /proc entries."""
    own = {c.pid for c in s.calls}
    rx = re.compile(r"^/proc/(\d+)(/|$)")
    return [f"{p} in {c!r}" for c in s.calls for p in c.paths()
            if (m := rx.match(p)) and int(m.group(1)) not in own]


def check_devices(s: Sandboxed) -> list[str]:
    """PrivateDevices: only the pseudo devices exist."""
    ok = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
          "/dev/tty"}
    return [f"{p} in {c!r}" for c in s.calls for p in c.paths()
            if p.startswith("/dev/") and p not in ok]


def check_home(s: Sandboxed) -> list[str]:
    return [f"{p} in {c!r}" for c in s.calls for p in c.paths()
            if re.match(r"^/(home|root|run/user)(/|$)", p)]


def check_wx_memory(s: Sandboxed) -> list[str]:
    """MemoryDenyWriteExecute: no mapping writable and executable, and none
    made executable later."""
    bad = []
    for c in s.calls:
        if c.name == "mmap" and "PROT_WRITE" in c.args and "PROT_EXEC" in c.args:
            bad.append(repr(c))
        elif c.name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in c.args:
            bad.append(repr(c))
    return bad


def forbidding(*names: str):
    def check(s: Sandboxed) -> list[str]:
        return [repr(c) for c in s.calls if c.name in names]
    check.__doc__ = f"none of {', '.join(names)}"
    return check


def check_namespaces(s: Sandboxed) -> list[str]:
    return [repr(c) for c in s.calls
            if c.name == "setns" or (c.name in ("clone", "clone3", "unshare")
                                     and "CLONE_NEW" in c.args)]


def check_realtime(s: Sandboxed) -> list[str]:
    return [repr(c) for c in s.calls if re.search(r"SCHED_(FIFO|RR|DEADLINE)", c.args)]


def check_personality(s: Sandboxed) -> list[str]:
    return [repr(c) for c in s.calls
            if c.name == "personality" and not c.args.startswith("0xffffffff")]


def check_suid(s: Sandboxed) -> list[str]:
    return [repr(c) for c in s.calls
            if "chmod" in c.name and re.search(r"S_IS[UG]ID|0[2467]\d\d\d", c.args)]


def check_native(s: Sandboxed) -> list[str]:
    # strace notes a process that switches to another ABI (i386, x32).
    return [n for n in s.notes if "bit mode" in n or "x32" in n]


def check_unprivileged(s: Sandboxed) -> list[str]:
    """Every run served as a user other than root, with no capabilities
    (and, as root dropped them, with no_new_privs)."""
    bad = []
    for run, cred in s.creds.items():
        uid = cred["Uid"].split()[0]
        if uid == "0" or int(cred["CapEff"], 16) or (s.drop and cred["NoNewPrivs"] != "1"):
            bad.append(f"{run}: {cred}")
    return bad


# Every [Service] key of the unit: the check of what it restricts against the
# traced runs, or why there is none.
SERVICE_KEYS = {
    "Type": "not a restriction",
    "ExecStart": "the command line the runs use",
    "Environment": "not a restriction ($RINGSTORE_OPTS, empty)",
    "Restart": "test_unit_restarts_except_on_damage",
    "RestartSec": "not a restriction",
    "RestartPreventExitStatus": "test_damaged_log_is_not_restarted",
    "KillSignal": "the runs stop with it and expect exit 0",
    "TimeoutStopSec": "not a restriction",
    "LimitNOFILE": "the runs set it",
    "OOMScoreAdjust": "not a restriction",
    "StateDirectory": "the runs' data directory",
    "StateDirectoryMode": "not a restriction",
    "RuntimeDirectory": "the runs' control socket directory",
    "RuntimeDirectoryMode": "not a restriction",
    "UMask": "the runs set it (0077)",
    "DynamicUser": check_unprivileged,
    "CapabilityBoundingSet": check_unprivileged,
    "AmbientCapabilities": check_unprivileged,
    "NoNewPrivileges": check_unprivileged,
    "ProtectSystem": check_writes,
    "ProtectHome": check_home,
    "PrivateTmp": "a private /tmp breaks nothing: ringstore uses none",
    "PrivateMounts": forbidding("mount", "umount2", "pivot_root", "move_mount",
                                "fsmount", "open_tree"),
    "PrivateDevices": check_devices,
    "ProtectKernelTunables": check_writes,
    "ProtectKernelModules": forbidding("init_module", "finit_module", "delete_module"),
    "ProtectKernelLogs": forbidding("syslog"),
    "ProtectControlGroups": check_writes,
    "ProtectClock": forbidding("clock_settime", "settimeofday", "clock_adjtime",
                               "adjtimex"),
    "ProtectHostname": forbidding("sethostname", "setdomainname"),
    "ProtectProc": check_proc_invisible,
    "ProcSubset": check_proc_subset,
    "RestrictAddressFamilies": check_address_families,
    "RestrictNamespaces": check_namespaces,
    "RestrictRealtime": check_realtime,
    "LockPersonality": check_personality,
    "MemoryDenyWriteExecute": check_wx_memory,
    "SystemCallArchitectures": check_native,
    "SystemCallFilter": check_syscall_filter,
    "SystemCallErrorNumber": "applies only to refused calls, and there are none",
    "RestrictSUIDSGID": check_suid,
}


def test_every_service_key_is_accounted_for():
    keys = {k for s, k, _ in unit_entries() if s == "Service"}
    missing = sorted(keys - SERVICE_KEYS.keys())
    assert not missing, f"add a check (or the reason for none) to SERVICE_KEYS: {missing}"


@pytest.mark.parametrize("key", sorted({k for s, k, _ in unit_entries()
                                        if s == "Service" and callable(SERVICE_KEYS.get(k))}))
def test_sandbox_admits_what_ringstore_does(sandboxed, key):
    bad = SERVICE_KEYS[key](sandboxed)
    assert not bad, f"{key}= would break ringstore:\n" + "\n".join(bad[:20])


def test_sandboxed_runs_covered_both_backends(sandboxed):
    """The trace is worth something: the runs used io_uring and epoll,
    reached the log's compaction and repair, and strace saw them."""
    assert "on io_uring" in sandboxed.logs["start"], sandboxed.logs["start"]
    assert "on epoll" in sandboxed.logs["replay-epoll"]
    assert "write log: compacted" in sandboxed.logs["start"]
    assert "--repair-log: " in sandboxed.logs["repair-uring"]
    names = {c.name for c in sandboxed.calls}
    assert {"io_uring_setup", "io_uring_enter", "fdatasync", "rename", "flock"} <= names
    assert names & {"epoll_wait", "epoll_pwait", "epoll_pwait2"}, sorted(names)
    assert any(c.name == "socket" and c.args.startswith("AF_NETLINK")
               for c in sandboxed.calls)


def test_damaged_log_is_not_restarted(sandboxed):
    """The exit status of a damaged log is one the unit does not restart on."""
    rc = sandboxed.rcs["damaged"]
    assert "--repair-log" in sandboxed.logs["damaged"]
    assert str(rc) in unit_value("RestartPreventExitStatus").split(), rc


# ---- Kubernetes ---------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_manifest_validates(version):
    tool = VENV / "bin" / "kubernetes-validate"
    if not os.access(tool, os.X_OK):
        pytest.fail(f"no {tool}: run tests/deploy/deps", pytrace=False)
    r = subprocess.run([str(tool), "--strict", "--quiet", "-k", version, str(MANIFEST)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


class Pod:
    """The StatefulSet's pod spec and its ringstore container."""

    def __init__(self, docs):
        (self.sts,) = manifest_kind(docs, "StatefulSet")
        self.spec = self.sts["spec"]["template"]["spec"]
        (self.c,) = [c for c in self.spec["containers"] if c["name"] == "ringstore"]
        self.args = [str(a) for a in self.c["args"]]
        self.ports = {p["name"]: p["containerPort"] for p in self.c["ports"]}
        self.labels = self.sts["spec"]["template"]["metadata"]["labels"]

    def port(self, ref) -> int:
        return self.ports[ref] if isinstance(ref, str) else ref

    def probes(self):
        return [(k, self.c[k]) for k in ("startupProbe", "readinessProbe", "livenessProbe")
                if k in self.c]


@pytest.fixture(scope="module")
def pod():
    return Pod(manifest_docs())


@pytest.fixture(scope="module")
def pod_server(pod):
    """ringstore with the container's arguments: the volume's mount path
    under a temporary directory, the ports free ones."""
    need_binaries()
    (mount,) = [m["mountPath"] for m in pod.c["volumeMounts"]]
    base = Path(tempfile.mkdtemp(prefix="rs-deploy-pod-"))
    args = [a if not (a == mount or a.startswith(mount + "/")) else str(base) + a
            for a in pod.args]
    args = with_value(with_value(args, "--port", "0"), "--control-port", "0")
    try:
        p, port, ctl = start([str(BIN), *args], base / "err")
        unregister_proc(p)  # outlives each test's process cleanup
        try:
            cli(port, "set", "on-the-volume", "yes")
            yield {"port": port, "ctl": ctl, "base": base}
        finally:
            assert stop(p) == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_pod_data_dir_is_on_the_volume(pod, pod_server):
    (claim,) = pod.sts["spec"]["volumeClaimTemplates"]
    (vm,) = pod.c["volumeMounts"]
    assert vm["name"] == claim["metadata"]["name"]
    data = arg_value(pod.args, "--data-dir")
    assert data == vm["mountPath"] or data.startswith(vm["mountPath"] + "/"), data
    assert (pod_server["base"] / data.lstrip("/") / "MANIFEST").exists()
    assert not vm.get("readOnly")


def test_pod_probes_answer(pod, pod_server):
    probes = pod.probes()
    assert {k for k, _ in probes} == {"startupProbe", "readinessProbe", "livenessProbe"}
    for kind, probe in probes:
        get = probe["httpGet"]
        assert pod.port(get["port"]) == int(arg_value(pod.args, "--control-port")), kind
        # The kubelet probes the pod's address, not loopback.
        assert arg_value(pod.args, "--control-bind") in ("::", "0.0.0.0"), kind
        status, body = http_get(pod_server["ctl"], get["path"])
        assert status == 200, (kind, status, body)


def test_pod_ports_and_services(pod, pod_server):
    docs = manifest_docs()
    store_port = int(arg_value(pod.args, "--port"))
    assert pod.ports["store"] == store_port
    services = {s["metadata"]["name"]: s for s in manifest_kind(docs, "Service")}
    assert pod.sts["spec"]["serviceName"] in services
    assert services[pod.sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for svc in services.values():
        sel = svc["spec"]["selector"]
        assert sel.items() <= pod.labels.items(), svc["metadata"]["name"]
        for sp in svc["spec"]["ports"]:
            assert pod.port(sp["targetPort"]) in pod.ports.values()
            if sp["name"] == "store":
                assert sp["port"] == store_port == pod.port(sp["targetPort"])
    assert pod.sts["spec"]["selector"]["matchLabels"].items() <= pod.labels.items()
    for np in manifest_kind(docs, "NetworkPolicy") + manifest_kind(docs, "PodDisruptionBudget"):
        sel = np["spec"].get("podSelector") or np["spec"]["selector"]
        assert sel["matchLabels"].items() <= pod.labels.items()
    (np,) = manifest_kind(docs, "NetworkPolicy")
    admitted = {pod.port(p["port"]) for rule in np["spec"]["ingress"] for p in rule["ports"]}
    assert admitted == set(pod.ports.values())
    # The client the doc's torchrun line names reaches the store port.
    status, _ = http_get(pod_server["ctl"], "/health")
    assert status == 200
    assert cli(pod_server["port"], "get", "on-the-volume") == "yes"


def test_pod_security_and_shutdown(pod):
    sc, csc = pod.spec["securityContext"], pod.c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] != 0
    assert csc["readOnlyRootFilesystem"] and not csc["allowPrivilegeEscalation"]
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert pod.spec["terminationGracePeriodSeconds"] >= 10
    assert pod.sts["spec"]["replicas"] == 1
    res = pod.c["resources"]
    assert res["requests"]["memory"] == res["limits"]["memory"]


def test_dockerfile_installs_what_the_pod_runs(pod):
    text = DOCKERFILE.read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    assert pod.c["command"] == entry
    dest = re.search(r"^COPY --from=build (.*) (\S+)$", text, re.M)
    assert "/build/bin/ringstore " in dest.group(1) + " "
    assert entry[0] == dest.group(2).rstrip("/") + "/ringstore"
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    sc = pod.spec["securityContext"]
    assert (int(user.group(1)), int(user.group(2))) == (sc["runAsUser"], sc["runAsGroup"])
    assert "--target ringstore" in text


# ---- what the files and the guide say -------------------------------------------

def test_mentioned_flags_exist():
    need_binaries()
    ours = help_flags(BIN) | help_flags(CLI)
    assert not ours & FOREIGN_FLAGS  # so that FOREIGN_FLAGS cannot hide a rename
    texts = {f.relative_to(ROOT): f.read_text() for f in (UNIT, MANIFEST, DOC)}
    # The Dockerfile's other lines are apt's and cmake's: only what it runs.
    texts["Dockerfile CMD"] = re.search(r"^CMD (.*)$", DOCKERFILE.read_text(), re.M).group(1)
    for where, text in texts.items():
        unknown = sorted(mentioned_flags(text) - ours - FOREIGN_FLAGS)
        assert not unknown, f"{where} names flags ringstore does not have: {unknown}"
    # The container's arguments, exactly.
    for a in Pod(manifest_docs()).args:
        if a.startswith("--"):
            assert a in help_flags(BIN), a


def test_doc_metrics_exist(pod_server):
    status, metrics = http_get(pod_server["ctl"], "/metrics")
    assert status == 200
    have = set(re.findall(r"^(ringstore_[a-z_]+)", metrics, re.M))
    named = set(re.findall(r"\bringstore_[a-z_]+[a-z]", DOC.read_text()))
    assert named, "docs/deploy.md names no metric"
    assert not named - have, sorted(named - have)


def test_readme_links_the_guide():
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()
    for f in ("deploy/systemd/ringstore.service", "deploy/k8s/ringstore.yaml",
              "deploy/docker/Dockerfile", "deploy/ringstore-backup"):
        assert f in DOC.read_text(), f


# ---- backups --------------------------------------------------------------------

@pytest.mark.parametrize("step", ["rotated", "snapshot-written", "switched"])
def test_backup_during_compaction_restores(tmp_path, step):
    """A copy taken while a compaction is held after @step (the files are
    then at their most mixed: two generations on disk, one named) restores
    exactly the keys the server held. --fsync always, so that every write
    acknowledged before the copy is in the files."""
    need_binaries()
    data = tmp_path / "data"
    argv = [str(BIN), "--port", "0", "--bind", "127.0.0.1", "--data-dir", str(data),
            "--fsync", "always", "--compact-min-bytes", "4K"]
    err = tmp_path / "live.err"
    p, port, _ = start(argv, err, env={**os.environ, "RINGSTORE_COMPACT_PAUSE": step})
    want = {}
    for i in range(200):
        want["big"] = f"{i:04d}" * 256
        cli(port, "set", "big", want["big"])
        if "compaction paused" in err.read_text():
            break
    wait_for(err, f"compaction paused after '{step}'", p)
    for i in range(5):
        want[f"after{i}"] = str(i)
        cli(port, "set", f"after{i}", str(i))
    assert cli(port, "get", "after4") == "4"  # acknowledges the SETs before it

    copy = tmp_path / "copy"
    r = subprocess.run([str(BACKUP), str(data), str(copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert not (copy / "LOCK").exists()
    assert stop(p) == 0

    p2, port2, _ = start(with_value(argv, "--data-dir", str(copy)), tmp_path / "restored.err")
    try:
        keys = cli(port2, "list-keys").split()
        assert sorted(keys) == sorted(want)
        for k, v in want.items():
            assert cli(port2, "get", k) == v, k
        assert "write log: replayed" in (tmp_path / "restored.err").read_text()
    finally:
        assert stop(p2) == 0


def test_backup_refuses_what_it_cannot_copy(tmp_path):
    r = subprocess.run([str(BACKUP), str(tmp_path / "none"), str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "MANIFEST" in r.stderr
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "MANIFEST").write_text("something else\n")
    r = subprocess.run([str(BACKUP), str(tmp_path / "d"), str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "version 1" in r.stderr
    r = subprocess.run([str(BACKUP), str(tmp_path / "d"), str(tmp_path / "d")],
                       capture_output=True, text=True)
    assert r.returncode == 2
