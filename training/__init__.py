"""Training stage: dataset building from Feast, task adapters, LoRA + distillation
trainer and evaluation on fixed holdouts."""
