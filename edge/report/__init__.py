"""Reports for ecologists: plots and one HTML page from the trap's database (`trapcam report`).

Importing this package stays light (no matplotlib): the plots import it when they are drawn.
"""

from edge.report.build import write_report
from edge.report.data import ReportData, load_report

__all__ = ["ReportData", "load_report", "write_report"]
