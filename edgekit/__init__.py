"""edgekit: compile open models for edge targets, then prove the result."""

__version__ = "0.1.0"

from .pipeline import compile  # noqa: E402  (after __version__: the pipeline records it)

__all__ = ["compile", "__version__"]
