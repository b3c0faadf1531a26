"""The ASGI app ``tests/test_fork.py`` serves with gunicorn ``--preload`` and UvicornWorkers.

Configured by ``TM_URL`` and ``TM_TABLE``. At import, which ``--preload`` runs in the gunicorn
master before it forks the workers, the app sets its table up through the sync API, as startup
code does: the master then holds a pool on the bridge's loop that every worker inherits. The
lifespan awaits :func:`tidb_memory.aclose_all` on shutdown, as the README recommends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from langchain_core.messages import HumanMessage

import tidb_memory

URL = os.environ["TM_URL"]
TABLE = os.environ["TM_TABLE"]

tidb_memory.TiDBChatMessageHistory("startup", URL, table_name=TABLE).create_tables()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await tidb_memory.aclose_all()


app = FastAPI(lifespan=lifespan)


@app.post("/async/{session}/{text}")
async def append_async(session: str, text: str) -> dict[str, int]:
    history = tidb_memory.AsyncTiDBChatMessageHistory(session, URL, table_name=TABLE)
    await history.aadd_messages([HumanMessage(text)])
    return {"pid": os.getpid()}


@app.post("/sync/{session}/{text}")
def append_sync(session: str, text: str) -> dict[str, int]:
    """A ``def`` endpoint: FastAPI runs it in its threadpool, and it uses the sync API."""
    history = tidb_memory.TiDBChatMessageHistory(session, URL, table_name=TABLE)
    history.add_messages([HumanMessage(text)])
    return {"pid": os.getpid()}
