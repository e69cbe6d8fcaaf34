# SPDX-License-Identifier: MIT
"""The documentation against the tree: README.md, CONTRIBUTING.md and docs/*.md.

What a reader follows must be there:

  * every relative link points to a file inside the repository, and a link
    to a heading (page.md#heading, or #heading) to a heading that exists,
    by GitHub's rule for anchors; no page points at the team's notes outside
    the repository (../shared/);
  * every flag the README names is in `ringstore --help` or `ringstore-cli
    --help`, or is one of scripts/test's, or another tool's from FOREIGN_FLAGS
    below; every flag the other pages name is in the --help of one of the
    built programs (ringstore, ringstore-cli, ringstore-bench,
    ringstore-floor, ringstore-memlat), in the text of one of the scripts
    (scripts/*, bench/*.py, bench/*.sh: not run, since some of them act on
    any argument), or in FOREIGN_FLAGS;
  * every metric a page names is declared in server/stats.h's table;
  * the README names the torch versions CI tests with (scripts/deps's
    TORCH_VERSION and scripts/test's RS_TORCH_NEXT default), keeps the two
    commands (scripts/serve, scripts/test), and stays a guide of about 200
    lines.

The binaries come from ${RS_BUILD_DIR:-build}/bin. Runs in scripts/test
step 7.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("RS_BUILD_DIR") or ROOT / "build")
README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("ringstore", "ringstore-cli", "ringstore-bench", "ringstore-floor",
            "ringstore-memlat")
SCRIPTS = sorted([*(ROOT / "scripts").iterdir(), *(ROOT / "bench").glob("*.py"),
                  *(ROOT / "bench").glob("*.sh")])
README_LINES = 215

# Flags of other tools that the pages show in commands. None of them may be
# a flag of ours (test_foreign_flags_are_not_ours), so that a flag of ours
# cannot be renamed behind this list.
FOREIGN_FLAGS = {
    # torchrun
    "--nnodes", "--node-rank", "--nproc-per-node", "--max-restarts", "--rdzv-backend",
    "--rdzv-endpoint", "--rdzv-id", "--rdzv-conf", "--master-addr", "--master-port",
    # docker
    "--security-opt",
    # unshare, kill, python -m venv, pip
    "--net", "--map-root-user", "--system-site-packages", "--no-deps",
    "--ignore-installed",
    # cmake, ctest
    "--build", "--install", "--prefix", "--test-dir",
    # pkg-config, curl, systemctl, journalctl, kubectl, chown (docs/deploy.md)
    "--cflags", "--libs", "--unix-socket", "--now", "--no-pager", "--type",
    "--previous", "--force", "--grace-period", "--reference",
}
# Shaped like a flag, and not one.
NOT_FLAGS = {"--pending"}  # docs/protocol.md section 6: C's decrement

# A flag ends at a letter or digit not followed by a word character, '-' or
# '>' (so the arrows of docs/rendezvous.md's chart, --yes-->, are not flags).
FLAG_RX = re.compile(r"(?<![\w-])--[a-z](?:[a-z0-9-]*[a-z0-9])?(?![\w>-])")
LINK_RX = re.compile(r"\]\(([^)\s]+)\)")
HEADING_RX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
FENCE_RX = re.compile(r"^```.*?^```", re.M | re.S)
METRIC_RX = re.compile(r"(?<![\w-])ringstore_[a-z_]*[a-z]\b")
# Names shaped like a metric that are not one.
NOT_METRICS = {"ringstore_only"}  # tests/compat's pytest marker


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def help_flags(name: str) -> set[str]:
    binary = BUILD / "bin" / name
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build first (cmake -S . -B build && "
                    f"cmake --build build), or set RS_BUILD_DIR", pytrace=False)
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True,
                         check=True, timeout=30)
    return set(FLAG_RX.findall(out.stdout))


def script_flags() -> set[str]:
    return set().union(*(FLAG_RX.findall(p.read_text(errors="replace"))
                         for p in SCRIPTS if p.is_file()))


def mentioned_flags(page: Path) -> set[str]:
    return set(FLAG_RX.findall(page.read_text())) - NOT_FLAGS


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup and punctuation
    dropped, lower case, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE_RX.sub("", page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for _, heading in HEADING_RX.findall(text):
        s = slug(heading)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = FENCE_RX.sub("", page.read_text())
    return [t for t in LINK_RX.findall(text)
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, mailto:, ...


def test_pages_exist():
    for p in PAGES:
        assert p.is_file(), rel(p)
    assert len(PAGES) > 3


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.is_relative_to(ROOT):
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {rel(dest)}")
    assert not bad, f"{rel(page)}: " + "; ".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_pointers_outside_the_repository(page):
    assert "../shared/" not in page.read_text(), \
        f"{rel(page)} points at notes outside the repository"


def test_foreign_flags_are_not_ours():
    ours = set().union(*(help_flags(p) for p in PROGRAMS))
    assert not ours & FOREIGN_FLAGS, sorted(ours & FOREIGN_FLAGS)


def test_readme_flags_exist():
    allowed = (help_flags("ringstore") | help_flags("ringstore-cli")
               | set(FLAG_RX.findall((ROOT / "scripts" / "test").read_text()))
               | FOREIGN_FLAGS)
    unknown = sorted(mentioned_flags(README) - allowed)
    assert not unknown, f"README.md names flags that do not exist: {unknown}"


@pytest.mark.parametrize("page", [p for p in PAGES if p != README], ids=rel)
def test_page_flags_exist(page):
    allowed = (set().union(*(help_flags(p) for p in PROGRAMS)) | script_flags()
               | FOREIGN_FLAGS)
    unknown = sorted(mentioned_flags(page) - allowed)
    assert not unknown, f"{rel(page)} names flags that do not exist: {unknown}"


def test_named_metrics_exist():
    declared = set(re.findall(r"FAMILY\((ringstore_[a-z_]+),",
                              (ROOT / "server" / "stats.h").read_text()))
    assert "ringstore_info" in declared
    for page in PAGES:
        named = set(METRIC_RX.findall(page.read_text())) - NOT_METRICS
        assert not named - declared, f"{rel(page)}: {sorted(named - declared)}"


def test_readme_names_the_tested_torch_versions():
    deps = (ROOT / "scripts" / "deps").read_text()
    test = (ROOT / "scripts" / "test").read_text()
    ci = re.search(r"^TORCH_VERSION=(\S+)$", deps, re.M).group(1)
    nxt = re.search(r'RS_TORCH_NEXT="\$\{RS_TORCH_NEXT:-([^}]+)\}"', test).group(1)
    tested = re.search(r"\*\*Tested with\.\*\*(.*?)\n\n", README.read_text(), re.S)
    assert tested, "README.md has no 'Tested with.' paragraph"
    for v in (ci, nxt):
        assert f"torch {v}" in " ".join(tested.group(1).split()), v


def test_readme_is_a_guide_with_the_two_commands():
    text = README.read_text()
    n = text.count("\n")
    assert n <= README_LINES, (f"README.md has {n} lines: it is the user's guide; "
                               "engineering detail belongs in docs/")
    for cmd in ("scripts/serve", "scripts/test"):
        assert re.search(rf"^{cmd}\b", text, re.M), f"README.md lost `{cmd}`"
    assert "docs/deploy.md" in text
