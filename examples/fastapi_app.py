"""An async chat backend: FastAPI + tidb-memory, one conversation per session id.

Run it (``pip install fastapi uvicorn``)::

    uvicorn examples.fastapi_app:app                  # a SQLite file in the working directory
    TIDB_DATABASE_URL='mysql+aiomysql://root@127.0.0.1:3306/test' uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/chat/alice -H 'content-type: application/json' \\
         -d '{"message": "Hi, I am Alice"}'
    curl localhost:8000/history/alice

Each request builds its own ``AsyncTiDBChatMessageHistory``, as ``RunnableWithMessageHistory``
does: construction does no I/O, and every history on the same URL shares one pool per event
loop. A chat turn costs two statements: one read and one atomic append of the question and the
reply. The lifespan closes the pools on shutdown.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

import tidb_memory
from tidb_memory import AsyncTiDBChatMessageHistory

DATABASE_URL = tidb_memory.default_url()
TABLE_NAME = tidb_memory.DEFAULT_TABLE_NAME
SYSTEM_PROMPT = SystemMessage("You are a helpful assistant. Keep answers short.")

# Swap in a real model here, e.g. langchain_openai.ChatOpenAI(model="gpt-4o-mini").
model = GenericFakeChatModel(
    messages=itertools.cycle(
        ["Nice to meet you!", "Tell me more.", "I remember everything you said so far."]
    )
)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Close every pool tidb-memory opened, while the server's event loop is still running.
    await tidb_memory.aclose_all()


app = FastAPI(title="tidb-memory chat", lifespan=lifespan)


@app.exception_handler(tidb_memory.InvalidInputError)
async def invalid_input(request: Request, exc: tidb_memory.InvalidInputError) -> JSONResponse:
    # e.g. an empty or over-long session id: the client's mistake, caught before any I/O.
    return JSONResponse({"detail": str(exc)}, status_code=422)


class ChatRequest(BaseModel):
    message: str


class ChatResponse(BaseModel):
    reply: str
    history_length: int


class StoredMessage(BaseModel):
    type: str
    content: str


def get_history(session_id: str) -> AsyncTiDBChatMessageHistory:
    # A new object per request: cheap (no I/O), and the pool behind it is shared.
    return AsyncTiDBChatMessageHistory(session_id, DATABASE_URL, table_name=TABLE_NAME)


@app.post("/chat/{session_id}")
async def chat(session_id: str, request: ChatRequest) -> ChatResponse:
    history = get_history(session_id)
    past = await history.aget_messages()  # 1 round trip
    question = HumanMessage(request.message)
    reply = await model.ainvoke([SYSTEM_PROMPT, *past, question])
    await history.aadd_messages([question, reply])  # 1 round trip, both or neither
    return ChatResponse(reply=reply.text, history_length=len(past) + 2)


@app.get("/history/{session_id}")
async def read_history(session_id: str) -> list[StoredMessage]:
    messages = await get_history(session_id).aget_messages()
    return [StoredMessage(type=m.type, content=m.text) for m in messages]


@app.delete("/history/{session_id}", status_code=204)
async def clear_history(session_id: str) -> None:
    await get_history(session_id).aclear()
