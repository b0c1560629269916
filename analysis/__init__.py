"""Analysis of edgelab results: load runs, answer each experiment's question, plot, report.

Entry point for the CLI: :func:`analysis.report.write_report`.
"""

from .load import ResultsError, Run, load_run, load_runs

__all__ = ["ResultsError", "Run", "load_run", "load_runs"]
