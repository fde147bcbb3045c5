"""The worker process: claims trials, trains them with the trainer, reports to Optuna."""
