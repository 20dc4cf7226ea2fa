"""The MLflow adapter: runs, logged models and the registry's aliases.

Modules: `registry`.
"""
