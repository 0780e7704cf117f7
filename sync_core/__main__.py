"""``python -m sync_core``: the admin CLI (see ``sync_core/admin/cli.py``)."""

from sync_core.admin.cli import main

raise SystemExit(main())
