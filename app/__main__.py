"""``python -m app`` is the ``depthmap`` command."""

from .cli import main

main()
