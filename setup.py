"""Only what pyproject.toml cannot say: the start-up hook ``tiered_bccache.pth`` goes to
the top of site-packages (a wheel's root), where the interpreter reads ``.pth`` files."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "tiered_bccache.pth"


class BuildPyWithPth(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
