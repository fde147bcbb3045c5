"""The FastAPI application: routes, dependencies, auth, HTTP policies, metrics, dashboard."""
