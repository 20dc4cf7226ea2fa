"""Project-wide foundations: typed config, the project and its model files, the workspace, atomic
files, the process environment, secrets and fault points.

Modules: `config`, `environment`, `faults`, `files`, `modelfile`, `project`, `secrets`, `workspace`.
"""
