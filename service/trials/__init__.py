"""Trials: the service functions that read them, their curves, artifacts and weight transfer."""
