"""Drift, decay, the monitoring history and its report.

Modules: `monitor`.
"""
