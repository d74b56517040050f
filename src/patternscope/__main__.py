"""``python -m patternscope`` (also what ``torchrun -m patternscope`` runs)."""

import sys

from .cli import main

sys.exit(main())
