"""Entry point of ``python -m arca``."""

from arca.cli import main

if __name__ == "__main__":  # a process started by spawn re-imports this module and must not run the CLI
    raise SystemExit(main())
