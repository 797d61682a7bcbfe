"""Files that PyPI distributions ship (a model folder, a GGUF file, data files), found
through the distribution's metadata and never imported: a package may need heavy
dependencies (llm, Orange3, Qt) that reading its files does not."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shipped:
    """Where a file lives inside a distribution, and how to install the one we checked."""

    distribution: str  # the name on PyPI
    version: str  # the version the file was checked against
    install: str = ""  # when `pip install <distribution>==<version>` is not the right command

    def how_to_install(self) -> str:
        return self.install or f"pip install {self.distribution}=={self.version}"

    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.distribution(self.distribution).version
        except importlib.metadata.PackageNotFoundError:
            return None

    def locate(self, inside: str, what: str, error: type[Exception]) -> Path:
        """The installed file or folder ``inside`` the distribution; ``error`` names ``what``
        needs it and how to install it when it is not there."""
        try:
            distribution = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise error(f"{what} needs the package '{self.distribution}': {self.how_to_install()}") from None
        located = Path(distribution.locate_file(inside))
        if not located.exists():
            raise error(f"{self.distribution} {distribution.version} has no {inside}; install version {self.version}")
        return located
