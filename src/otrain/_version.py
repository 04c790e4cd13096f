"""The installed version of otrain (kept apart so that any module can import it cheaply)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otrain")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
