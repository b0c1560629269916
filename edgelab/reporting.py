"""End-of-experiment reporting: write the report and print its headline."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


def report_and_summarise(run_dir: Path) -> Path | None:
    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from analysis.report import write_report

    out = write_report(Path(run_dir))
    console.print(f"report: [cyan]{out}[/]")
    try:
        headline = [l for l in Path(out).read_text().splitlines() if l.startswith("**")]
        for line in headline[:5]:
            console.print(line.replace("**", ""))
    except OSError:
        pass
    return out
