"""Task kinds. Each module knows its data's canonical columns and label set, how to
tokenize, which model class to load, how to decode predictions and compute its metrics;
adding a task touches one module and this table.

A task module provides: PIPELINE_TAG, REFERENCE_NAME, PER_CLASS_KEY;
canonical, row_keys, label_values, default_labels, hub_label_names, data_report (data); tokenize, truncation,
load_model, peft_task_type, head_modules, collator, model_inputs, gold, train_label_ids, predict_logits,
decode (model); pipeline_input (serving); prediction_rows, confusion_rows, reference_predictions, compute_metrics,
trainer_metrics (scores).
"""

from __future__ import annotations

from types import ModuleType


def get_task(kind: str) -> ModuleType:
    from peftpipe.tasks import generation, sequence_classification, token_classification

    tasks = {"token_classification": token_classification,
             "sequence_classification": sequence_classification,
             "generation": generation}
    return tasks[kind]
