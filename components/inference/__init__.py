"""Predictions: one prediction path for serving and batch scoring, the prediction log and batch
scoring.

Modules: `batch`, `predlog`, `scoring`.
"""
