"""``python -m tidb_memory.cli``."""

from tidb_memory.cli import main

raise SystemExit(main())
