"""Data in: extraction, the data contract (Great Expectations) and its row rules, quarantine, the
landing folder, curation, the data card and label review.

Modules: `contract`, `curate`, `datacard`, `extract`, `label_review`, `landing`, `quarantine`, `rows`.
"""
