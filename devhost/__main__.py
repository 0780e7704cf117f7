"""``python -m devhost [--port 7071] [--host 127.0.0.1] [--app function_app:app] [--root DIR]``."""

from devhost.host import main

try:
    raise SystemExit(main())
except KeyboardInterrupt:  # Ctrl-C before the host was up (once up, it stops cleanly itself)
    raise SystemExit(130) from None
