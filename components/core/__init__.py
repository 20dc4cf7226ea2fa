"""Project-wide foundations: typed config, the project and its model files, the workspace, atomic
files, the process environment, secrets, fault points and the check of a Dask cluster before work.

Modules: `cluster`, `config`, `environment`, `faults`, `files`, `modelfile`, `project`, `secrets`,
`workspace`.
"""
