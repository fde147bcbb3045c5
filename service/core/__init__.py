"""The bottom layer: settings, errors, states, the database and the Optuna storage."""
