from fastapi import APIRouter

from service.app.routes import (
    charts,
    datasets,
    diagnosis,
    health,
    metrics,
    studies,
    tokens,
    trials,
    workers,
)

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(studies.router)
api_router.include_router(trials.router)
api_router.include_router(diagnosis.router)
api_router.include_router(workers.router)
api_router.include_router(metrics.router)
api_router.include_router(datasets.router)
api_router.include_router(charts.router)
api_router.include_router(tokens.router)
