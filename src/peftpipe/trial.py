"""The train stage's side of `peftpipe tune`: report the validation score to the Optuna trial
after each evaluation, and stop when the study's pruner says the trial is hopeless.

`peftpipe tune` names the trial in the environment (PEFTPIPE_TUNE_TRIAL, JSON: storage,
study, trial id, metric, pruner) when it runs the experiment; without it nothing is reported.
A pruned trial ends cleanly: the adapter trained so far is saved and metrics/train.json says
where it stopped (`tune.pruned_at_epoch`), so the experiment is recorded, not failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

ENV = "PEFTPIPE_TUNE_TRIAL"


@dataclass(frozen=True)
class TrialLink:
    storage: str
    study: str
    trial_id: int
    number: int
    metric: str
    pruner: str

    def to_environment(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self))}


def from_environment() -> TrialLink | None:
    value = os.environ.get(ENV)
    return TrialLink(**json.loads(value)) if value else None


def make_pruner(name: str):
    import optuna

    # Five finished trials before any is pruned; a trial can be pruned from its first evaluation on.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1) if name == "median" \
        else optuna.pruners.NopPruner()


def open_trial(link: TrialLink):
    import optuna

    study = optuna.load_study(study_name=link.study, storage=link.storage, pruner=make_pruner(link.pruner))
    return optuna.trial.Trial(study, link.trial_id)


def pruning_callback(link: TrialLink):
    """A Trainer callback: report ``eval_<metric>`` at each evaluation (step: the epoch, so
    trials of different lengths compare at the same point), stop training when pruned."""
    from transformers import TrainerCallback

    trial = open_trial(link)

    class ReportToTrial(TrainerCallback):
        pruned_at_epoch: float | None = None

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{link.metric}")
            if value is None:
                return
            trial.report(float(value), step=max(1, round(state.epoch or 0)))
            if trial.should_prune():
                self.pruned_at_epoch = round(state.epoch or 0, 4)
                control.should_training_stop = True

        def summary(self) -> dict:
            return {"trial": link.number, "study": link.study, "pruned_at_epoch": self.pruned_at_epoch}

    return ReportToTrial()
