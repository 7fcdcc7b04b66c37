"""Exports for ecologists: daily CSV files and Camtrap DP data packages, read-only from the database."""

from edge.export.camtrap import validate_camtrap_dp, write_camtrap_dp
from edge.export.daily import choose_days, export_days, resolve_days

__all__ = ["choose_days", "export_days", "resolve_days", "validate_camtrap_dp", "write_camtrap_dp"]
