"""The Celery app ``tests/test_fork.py`` runs with the prefork pool.

Configured by ``TM_URL``, ``TM_TABLE`` and ``TM_SPOOL``: a directory that carries the tasks and
their results (kombu's filesystem transport and Celery's file backend), so that the test needs
no broker server. When the worker starts, in its main process and before it forks its pool, the
app sets its table up through the sync API, as startup code does: every pool process inherits
that pool. Each pool process calls :func:`tidb_memory.close_all` when it shuts down, as the
README recommends. Importing this module has no side effect (the test imports :func:`make_app`).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init, worker_process_shutdown
from langchain_core.messages import HumanMessage

import tidb_memory


def make_app(name: str, spool: str) -> Celery:
    """A Celery app on the spool directory ``spool``; the test's client uses one too."""
    app = Celery(name, broker="filesystem://", backend=f"file://{spool}/results")
    app.conf.update(
        broker_transport_options={
            "data_folder_in": f"{spool}/queue",
            "data_folder_out": f"{spool}/queue",
            "processed_folder": f"{spool}/processed",
            "control_folder": f"{spool}/control",
            "store_processed": False,
        },
        worker_prefetch_multiplier=1,
        worker_enable_remote_control=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_app("tm_fork", os.environ.get("TM_SPOOL", "."))


def history(session: str) -> tidb_memory.TiDBChatMessageHistory:
    return tidb_memory.TiDBChatMessageHistory(
        session, os.environ["TM_URL"], table_name=os.environ["TM_TABLE"]
    )


@worker_init.connect
def set_up(**_: object) -> None:
    history("startup").create_tables()


@worker_process_shutdown.connect
def close_pools(**_: object) -> None:
    tidb_memory.close_all()


@app.task(name="tm_fork.append")
def append(session: str, text: str) -> int:
    history(session).add_messages([HumanMessage(text)])
    return os.getpid()
