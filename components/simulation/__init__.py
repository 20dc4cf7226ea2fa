"""Seeded data generators and the continuous-training replay's plan and goals.

Modules: `ctsim`, `simulate`.
"""
