"""``python -m changecat`` is the ``changecat`` command."""

from changecat.cli import main

main()
