"""What the service sends to other systems: webhooks when a study ends or improves
(`notify`, `webhooks`), finished trials as MLflow runs (`mlflow_export`), both through an
outbox in the database drained by a background thread (`dispatch`).

It sits just above `core` (below every domain package): the places that decide an event
(`scheduling.claims`, `studies.service`, the worker) call it with what they hold."""
