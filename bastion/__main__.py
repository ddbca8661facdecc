"""``python -m bastion`` runs the CLI."""

import sys

from bastion.cli import main

sys.exit(main())
