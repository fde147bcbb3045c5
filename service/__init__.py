"""The HPO service: REST API, workers and the Optuna glue around the trainer."""

__version__ = "0.1.0"
