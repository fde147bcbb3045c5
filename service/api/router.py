from fastapi import APIRouter

from service.api import charts, health, studies, trials

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(studies.router)
api_router.include_router(trials.router)
api_router.include_router(charts.router)
