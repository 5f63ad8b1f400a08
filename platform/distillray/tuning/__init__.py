"""Ray Tune search over distillation hyperparameters."""
