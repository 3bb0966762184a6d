"""Entry point of ``python -m arca``."""
from arca.cli import main

raise SystemExit(main())
