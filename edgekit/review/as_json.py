"""JSON: every figure and setting of every loaded report, and the comparison."""

from __future__ import annotations

import json
from typing import Any, Sequence

from .. import __version__
from ..bundle import clean_json
from .compare import Comparison
from .load import LoadedBundle
from .rows import noisy_names

REVIEW_FORMAT = "edgekit-review/1"


def render_json(bundles: Sequence[LoadedBundle], comparison: Comparison | None = None) -> str:
    data: dict[str, Any] = {
        "format": REVIEW_FORMAT,
        "edgekit_version": __version__,
        "bundles": [{"path": str(b.path), "model": b.name, "report": b.report,
                     "manifest": {k: v for k, v in b.manifest.items() if k != "files"},
                     "files": b.manifest.get("files", [])} for b in bundles],
        "noisy_latency": noisy_names(bundles),
        "comparison": comparison.to_dict() if comparison is not None else None,
    }
    return json.dumps(clean_json(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
