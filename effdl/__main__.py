"""``python -m effdl`` runs the CLI."""

from effdl.cli import main

main()
