# SPDX-License-Identifier: MIT
"""ringstore's Python package: the ``ringstore`` torchrun rendezvous backend.

Installing the package registers the backend in the ``torchrun.handlers``
entry-point group, so ``torchrun --rdzv-backend=ringstore
--rdzv-endpoint=HOST:PORT --rdzv-id=JOB ...`` works with no import in the
training script. The protocol is documented in docs/rendezvous.md and in
:mod:`ringstore.rendezvous`. :func:`server_path` finds the server binary that
came with the package, and ``python -m ringstore [FLAGS...]`` runs it.
Importing this package does not import torch.
"""

# The one version of the package and of its binaries: CMakeLists.txt and
# pyproject.toml both read this line, so keep its form ("X.Y.Z").
__version__ = "0.1.0"

from ringstore._server import executable, server_path  # noqa: E402

__all__ = ["__version__", "executable", "server_path"]
