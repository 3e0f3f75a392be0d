"""The one markdown table writer."""

import pytest

from edgekit.table import Table, escape_cell


def test_markdown_lines():
    table = Table(["name", "ms", ""], align="lrl")
    table.add("a", "1.0", "")
    table.add(escape_cell("b|c\nd"), "2.0", "flag")
    assert table.to_markdown().splitlines() == ["| name | ms | |", "|---|---:|---|", "| a | 1.0 |  |",
                                                "| b\\|c d | 2.0 | flag |"]


def test_align_defaults_to_left_and_is_checked():
    assert Table(["a", "b"]).to_markdown() == "| a | b |\n|---|---|"
    with pytest.raises(ValueError, match="align"):
        Table(["a", "b"], align="l")
    with pytest.raises(ValueError, match="align"):
        Table(["a"], align="c")
