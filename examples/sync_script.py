"""The synchronous API: no asyncio anywhere in your code.

``TiDBChatMessageHistory`` takes the same arguments as langchain-community's class. Its sync
methods run the library's async core on a background event loop, so plain scripts, threads and
notebook cells can call them directly.

Run it::

    python examples/sync_script.py                      # a SQLite file in the working directory
    TIDB_DATABASE_URL='mysql+aiomysql://root@127.0.0.1:3306/test' python examples/sync_script.py
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

import tidb_memory
from tidb_memory import TiDBChatMessageHistory

DATABASE_URL = tidb_memory.default_url()


def main() -> None:
    history = TiDBChatMessageHistory(session_id="sync-demo", connection_string=DATABASE_URL)
    print(repr(history))  # the URL is shown with its password masked
    history.clear()  # start afresh, so every run prints the same

    # One statement per call.
    history.add_user_message("Hi! Can you remember things?")
    history.add_ai_message("Yes: this conversation is stored in the database.")

    # A batch is one statement too, and lands whole or not at all.
    history.add_messages(
        [
            HumanMessage("What did I ask first?"),
            AIMessage("You asked whether I can remember things."),
        ]
    )

    # `messages` reads the session from the database on every access, oldest first.
    for number, message in enumerate(history.messages, 1):
        print(f"{number}. {message.type:>5}: {message.content}")

    # Another object (or process) on the same session sees the same rows.
    other = TiDBChatMessageHistory(session_id="sync-demo", connection_string=DATABASE_URL)
    print(f"a second object reads {len(other.messages)} messages")

    history.clear()
    print(f"after clear(): {len(other.messages)} messages")

    # Close the pools and stop the background loop (this also runs at interpreter exit).
    tidb_memory.close_all()


if __name__ == "__main__":
    main()
