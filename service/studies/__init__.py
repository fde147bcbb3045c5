"""Studies: the spec, its checks, service functions, queries, and the Optuna glue (search/)."""
