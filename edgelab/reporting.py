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
        text = Path(out).read_text()
        key = text.split("## Key results", 1)[1].split("\n## ", 1)[0] if "## Key results" in text else ""
        for line in [l[2:] for l in key.splitlines() if l.startswith("- ")][:5]:
            console.print(line, highlight=False, soft_wrap=True, markup=False)  # "[EXCLUDED ...]" is text
    except OSError:
        pass
    return out
