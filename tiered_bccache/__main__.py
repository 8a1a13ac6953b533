"""``python -m tiered_bccache``: the command line."""

from .cli import main

raise SystemExit(main())
