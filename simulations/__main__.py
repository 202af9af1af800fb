"""Run the fortis CLI with ``python -m simulations``."""

from simulations.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
