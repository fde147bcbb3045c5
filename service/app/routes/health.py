"""/api/health"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.app.deps import SettingsDep
from service.core.db.engine import get_engine
from service.studies.schemas import Health

router = APIRouter(prefix="/api", tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "the database cannot be reached"}},
)
def health(settings: SettingsDep) -> Health | JSONResponse:
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        body = Health(status="degraded", database=f"error: {type(e).__name__}", version=__version__)
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", database="ok", version=__version__)
