# SPDX-License-Identifier: MIT
"""Find and run the ringstore server that came with this package.

The wheel carries three executables in its scripts directory: ``ringstore``
(the server), ``ringstore-cli`` and ``ringstore-bench``. pip installs them
next to the environment's ``python`` (``<venv>/bin``, ``~/.local/bin``, ...)
and lists each in the distribution's RECORD, so the copy that came with this
package is found from that list, wherever the install scheme put it, and
not from whatever PATH holds first.

Lookup order of :func:`executable` (and so of :func:`server_path`):

1. ``$RINGSTORE_BIN`` for the server, if set (a source build's
   ``build/bin/ringstore``, as in the test suites);
2. the file of that name that this package's installation recorded;
3. the name on ``PATH``: a package installed without its binaries (a source
   checkout's ``pip install -C wheel.cmake=false .``, as scripts/deps does)
   still finds a ringstore installed some other way.

Nothing here imports torch.
"""
from __future__ import annotations

import os
import shutil
import sys

SERVER = "ringstore"
EXECUTABLES = ("ringstore", "ringstore-cli", "ringstore-bench")
BIN_ENV = "RINGSTORE_BIN"


def _recorded(name: str) -> str | None:
    """The executable @name that the ``ringstore`` distribution's RECORD
    lists (a path like ``../../../bin/ringstore``), if it exists."""
    from importlib import metadata

    try:
        files = metadata.distribution("ringstore").files or ()
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name and f.parent.name in ("bin", "scripts", "Scripts"):
            path = os.path.abspath(str(f.locate()))
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


def executable(name: str) -> str:
    """Absolute path of one of this package's executables (@name is one of
    EXECUTABLES: ringstore, ringstore-cli, ringstore-bench).

    Raises FileNotFoundError, naming where it looked, when there is none;
    ValueError for any other name.
    """
    if name not in EXECUTABLES:
        raise ValueError(f"not a ringstore executable: {name!r} "
                         f"(one of {', '.join(EXECUTABLES)})")
    if name == SERVER and os.environ.get(BIN_ENV):
        path = os.environ[BIN_ENV]
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"${BIN_ENV} is {path!r}, which is not "
                                    "an executable file")
        return os.path.abspath(path)
    path = _recorded(name) or shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"no {name} executable: this ringstore package was installed "
            f"without its binaries and none is on PATH "
            f"(install the ringstore wheel, or set ${BIN_ENV})")
    return os.path.abspath(path)


def server_path() -> str:
    """Absolute path of the ringstore server to run (see :func:`executable`).

    Raises FileNotFoundError when there is none.
    """
    return executable(SERVER)


def exec_server(args: list[str]) -> None:
    """Replace this process with the server, run with @args (its flags).

    The process keeps its pid, so signals reach the server itself and its
    exit status is the caller's; its argv[0] is the server's path, so the
    process is named ``ringstore``. Returns only if exec fails (OSError).
    """
    path = server_path()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [path, *args])
