"""The training pipeline as plain steps, and the function that chains them.

- `data`: extract, read the task off the target, validate against the contract, curate.
- `model`: prepare the split, review labels, select by cross-validation, train, refit, evaluate.
- `release`: log the candidate, register it, judge it against the champion, apply the decision.
- `run`: `run_training(config)`, the whole chain without Prefect; the flow wraps each step in a task.
- `results`: what each step hands the next.
"""

from components.pipeline.results import Curated, Evaluation, Prepared, Selected, TrainingResult, Validated
from components.pipeline.run import Steps, run_training

__all__ = ["Curated", "Evaluation", "Prepared", "Selected", "Steps", "TrainingResult", "Validated", "run_training"]
