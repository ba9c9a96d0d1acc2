"""The bare minimum doing the service's work: FastAPI, an HS256 check with PyJWT and one query
of the same SQL (sql/tasks.sql) through psycopg's AsyncConnectionPool with the service's pool
sizes. No logs, no metrics, no request ids: the plain code of a competent engineer, kept as the
ceiling that `python -m loadtest.capacity` measures the service against. Do not tune it."""

import os
from contextlib import asynccontextmanager
from typing import Any

import jwt
from fastapi import FastAPI, Header, HTTPException
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from repositories.queries import LIST_STATEMENTS, Q

SECRET = os.environ["BETTER_AUTH_SECRET"]
pool = AsyncConnectionPool(
    os.environ["DATABASE_URL"], min_size=2, max_size=10, timeout=5.0, open=False,
    kwargs={"autocommit": True, "application_name": "ceiling"},
)  # fmt: skip


@asynccontextmanager
async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
    async with pool:
        yield


app = FastAPI(lifespan=lifespan)


class TaskIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=1000)


def owner(user_id: str, authorization: str | None) -> str:
    try:
        claims = jwt.decode((authorization or "").removeprefix("Bearer "), SECRET, ["HS256"])
    except jwt.PyJWTError:
        raise HTTPException(401) from None
    if claims.get("sub") != user_id:
        raise HTTPException(403)
    return user_id


async def one_query(query: Any, **params: Any) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(query, params)
        return await cur.fetchall()


async def first(query: Any, **params: Any) -> dict[str, Any]:
    rows = await one_query(query, **params)
    if not rows:
        raise HTTPException(404)
    return rows[0]


@app.get("/api/{user_id}/tasks")
async def list_tasks(user_id: str, authorization: str | None = Header(None)) -> Any:
    query = LIST_STATEMENTS[("all", "created", "asc", False)]
    return await one_query(query, user_id=owner(user_id, authorization), known=[])


@app.get("/api/{user_id}/tasks/{task_id}")
async def get_task(user_id: str, task_id: int, authorization: str | None = Header(None)) -> Any:
    return await first(Q["get_task"], user_id=owner(user_id, authorization), task_id=task_id)


@app.post("/api/{user_id}/tasks", status_code=201)
async def create_task(user_id: str, body: TaskIn, authorization: str | None = Header(None)) -> Any:
    user = owner(user_id, authorization)
    return await first(Q["create_task"], user_id=user, name=None, email=None, **body.model_dump())


@app.patch("/api/{user_id}/tasks/{task_id}/complete")
async def toggle(user_id: str, task_id: int, authorization: str | None = Header(None)) -> Any:
    user = owner(user_id, authorization)
    return await first(Q["toggle_task"], user_id=user, task_id=task_id, if_match=None)
