"""Table: the one markdown table writer behind report.md, `edgekit bench` and `edgekit report`.

Rules:
1. A table is a header line, an alignment line and one line per row: `| a | b |`.
2. `align` has one letter per column: `l` (left, `---`) or `r` (right, `---:`, for figures).
3. Cells are written as given: the caller formats and escapes them (see `escape_cell`).
4. An empty header cell is written `| |`, an empty body cell `|  |` (how the tables have always read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

ALIGN = {"l": "---", "r": "---:"}


def escape_cell(text: object) -> str:
    """A cell that cannot break the table: `|` escaped, newlines as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _line(cells: Sequence[str], blank: str) -> str:
    return "|" + "|".join(f" {c} " if c else blank for c in cells) + "|"


@dataclass
class Table:
    headers: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    align: str = ""  # one letter per column (rule 2); "" for all left

    def __post_init__(self) -> None:
        self.align = self.align or "l" * len(self.headers)
        if len(self.align) != len(self.headers) or set(self.align) - set(ALIGN):
            raise ValueError(f"align {self.align!r}: one of {'/'.join(ALIGN)} per column of {list(self.headers)}")

    def add(self, *cells: str) -> None:
        self.rows.append(cells)

    def to_markdown(self) -> str:
        """The table's lines (rule 1), without a trailing newline."""
        lines = [_line(self.headers, " "), "|" + "|".join(ALIGN[a] for a in self.align) + "|"]
        lines += [_line(row, "  ") for row in self.rows]
        return "\n".join(lines)
