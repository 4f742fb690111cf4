"""``python -m trioweb run MODULE:APP``."""

from .cli import main

raise SystemExit(main())
