# SPDX-License-Identifier: MIT
"""ringstore's Python package: the ``ringstore`` torchrun rendezvous backend.

Installing the package registers the backend in the ``torchrun.handlers``
entry-point group, so ``torchrun --rdzv-backend=ringstore
--rdzv-endpoint=HOST:PORT --rdzv-id=JOB ...`` works with no import in the
training script. The protocol is documented in the package's README.md and in
:mod:`ringstore.rendezvous`. Importing this package does not import torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
