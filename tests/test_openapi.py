"""The OpenAPI document: stable snake_case operation ids, every error answer documented with a
schema, and only the routes that need a token marked as secured. (tests/test_api_fuzz.py
checks the answers of a real server against it.)"""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.app import openapi
from service.app.auth import is_protected
from service.app.main import create_app
from service.core.settings import Settings

# Operation id -> "METHOD path". A client generated from the schema names its methods by
# these: change one only on purpose, and add each new route here.
OPERATIONS = {
    "health": "GET /api/health",
    "create_token": "POST /api/tokens",
    "list_tokens": "GET /api/tokens",
    "revoke_tokens": "POST /api/tokens/revoke",
    "metrics": "GET /metrics",
    "create_study": "POST /api/studies",
    "list_studies": "GET /api/studies",
    "get_study": "GET /api/studies/{study_id}",
    "list_trials": "GET /api/studies/{study_id}/trials",
    "get_best": "GET /api/studies/{study_id}/best",
    "stop_study": "POST /api/studies/{study_id}/stop",
    "get_report": "GET /api/studies/{study_id}/report",
    "start_learning_curve": "POST /api/studies/{study_id}/learning-curve",
    "get_learning_curve": "GET /api/studies/{study_id}/learning-curve",
    "study_history": "GET /api/studies/{study_id}/history",
    "study_curves": "GET /api/studies/{study_id}/curves",
    "study_importances": "GET /api/studies/{study_id}/importances",
    "get_trial": "GET /api/trials/{trial_id}",
    "get_model": "GET /api/trials/{trial_id}/model",
    "get_diagnosis": "GET /api/trials/{trial_id}/diagnosis",
    "trial_curves": "GET /api/trials/{trial_id}/curves",
    "list_workers": "GET /api/workers",
    "list_datasets": "GET /api/datasets",
    "upload_dataset": "POST /api/datasets",
    "get_dataset": "GET /api/datasets/{name}",
    "delete_dataset": "DELETE /api/datasets/{name}",
}
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def document(auth: str) -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite:///unused.db", auth=auth))  # never opened
    schema: dict[str, Any] = app.openapi()
    return schema


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


AUTH_ON = document("required")
AUTH_OFF = document("off")


def test_operation_ids_are_unique_snake_case_and_stable() -> None:
    ids = [op["operationId"] for _, _, op in operations(AUTH_ON)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert [i for i in ids if not SNAKE_CASE.fullmatch(i)] == []
    found = {op["operationId"]: f"{method} {path}" for method, path, op in operations(AUTH_ON)}
    new = {k: v for k, v in found.items() if k not in OPERATIONS}
    assert new == {}, f"new operations: add them to OPERATIONS in {__file__}"
    assert found == OPERATIONS


def test_the_tables_name_existing_operations() -> None:
    assert openapi.CONFLICTS - OPERATIONS.keys() == set()
    assert openapi.QUOTAS - OPERATIONS.keys() == set()
    assert openapi.EXTRA_STATUSES.keys() - OPERATIONS.keys() == set()


def error_schema(answer: dict[str, Any]) -> str:
    return str(answer["content"]["application/json"]["schema"]["$ref"]).rsplit("/", 1)[-1]


@pytest.mark.parametrize("schema", [AUTH_ON, AUTH_OFF], ids=["auth-on", "auth-off"])
def test_every_error_answer_has_a_schema(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for method, path, op in operations(schema):
        errors = {int(s): a for s, a in op["responses"].items() if int(s) >= 400 and s != "503"}
        assert 422 in errors, (method, path)
        for status, answer in errors.items():
            name = error_schema(answer)
            assert name in components, (method, path, status)
            expected = "ValidationErrorResponse" if status == 422 else "ErrorResponse"
            assert name == expected, (method, path, status)
    assert components["ErrorResponse"]["required"] == ["detail"]
    # FastAPI's own 422 schema (a list only) is gone: a refusal naming no field is a string.
    assert "HTTPValidationError" not in components


def statuses(schema: dict[str, Any], operation_id: str) -> set[int]:
    op = next(op for _, _, op in operations(schema) if op["operationId"] == operation_id)
    return {int(s) for s in op["responses"] if int(s) >= 400}


def test_error_codes_follow_what_answers_them() -> None:
    assert statuses(AUTH_ON, "health") == {422, 503}
    assert statuses(AUTH_ON, "metrics") == {401, 422}  # every role may scrape: no 403
    assert statuses(AUTH_ON, "list_studies") == {401, 403, 422}
    assert statuses(AUTH_ON, "get_study") == {401, 403, 404, 422}
    assert statuses(AUTH_ON, "create_study") == {401, 403, 409, 413, 422, 429}
    assert statuses(AUTH_ON, "upload_dataset") == {401, 403, 409, 413, 422, 429}
    assert statuses(AUTH_ON, "delete_dataset") == {401, 403, 404, 409, 422}
    assert statuses(AUTH_ON, "start_learning_curve") == {401, 403, 404, 409, 413, 422}
    # Auth off: no token to refuse, no per-token rate limit.
    assert statuses(AUTH_OFF, "create_study") == {409, 413, 422}
    assert statuses(AUTH_OFF, "get_model") == {404, 422}
    for method, path, op in operations(AUTH_ON):
        codes = {int(s) for s in op["responses"]}
        assert (401 in codes) == is_protected(path), (method, path)
        names_one = "{" in path or path == "/api/tokens/revoke"  # (a revoke: in the body)
        assert (404 in codes) == names_one, (method, path)
        assert (413 in codes) == ("requestBody" in op), (method, path)


def test_only_routes_that_need_a_token_are_secured() -> None:
    assert AUTH_ON["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method, path, op in operations(AUTH_ON):
        assert ("security" in op) == is_protected(path), (method, path)
    assert "security" not in AUTH_ON["paths"]["/api/health"]["get"]
    assert [path for _, path, op in operations(AUTH_OFF) if "security" in op] == []
