"""movieops: the operations CLI of the movie API stack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("movieops")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
