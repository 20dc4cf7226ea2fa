"""Models: task types, preparation, the search, training, evaluation, plots and the promotion gate.

Modules: `evaluate`, `plots`, `prepare`, `promotion`, `search`, `tasks`, `train`.
"""
