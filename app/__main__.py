"""``python -m app``: serve the API with settings from the environment."""

from app.server import main

raise SystemExit(main())
