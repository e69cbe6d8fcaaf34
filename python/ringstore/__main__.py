# SPDX-License-Identifier: MIT
"""``python -m ringstore [FLAGS...]``: run the server bundled with this package.

The arguments are the server's own flags (``python -m ringstore --help``
prints them). The server replaces this process (exec), so signals and the
exit status are the server's. With no server to run it prints why and exits
with 127, the shell's status for a command that is not found.
"""
import sys

from ringstore._server import exec_server


def main() -> int:
    try:
        exec_server(sys.argv[1:])
    except OSError as e:  # FileNotFoundError, or exec itself failed
        print(f"python -m ringstore: {e}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
