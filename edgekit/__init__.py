"""edgekit: compile open models for edge targets, then prove the result."""

__version__ = "0.1.0"

from .pipeline import compile  # noqa: E402  (after __version__: the pipeline records it)
from .project import compile_project  # noqa: E402

__all__ = ["compile", "compile_project", "__version__"]
