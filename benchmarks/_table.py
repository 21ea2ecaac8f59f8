"""The benchmarks' tables: Markdown for docs/benchmarks.md, or aligned columns for a terminal."""
from __future__ import annotations

from typing import List, Optional, Sequence


def print_table(header: Sequence[str], rows: List[Sequence[str]], markdown: bool,
                title: Optional[str] = None) -> None:
    """Print ``rows`` (cells already formatted) under ``header``, with ``title`` above if given."""
    if title is not None:
        print()
        print(f"**{title}**\n" if markdown else title)
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(str(cell) for cell in row) + " |")
        return
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))
