# SPDX-License-Identifier: MIT
"""Puts ringstore-worker-prefix.pth at the root of the wheel (site-packages).

Everything else is in pyproject.toml. The .pth line costs one environment
lookup at interpreter start-up; only a process whose environment has
RINGSTORE_WORKER_PREFIX (torchrun workers under --rdzv-backend=ringstore)
imports ringstore._worker_hook. coverage.py activates subprocess measurement
the same way.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "ringstore-worker-prefix.pth"


class BuildPy(build_py):
    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        self.copy_file(os.path.join(here, "ringstore", PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPy})
