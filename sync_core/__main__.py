"""``python -m sync_core``: the admin CLI (see ``sync_core/cli.py``)."""

from sync_core.cli import main

raise SystemExit(main())
