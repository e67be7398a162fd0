"""``python -m refers_lite ...`` (what ``torchrun -m refers_lite pretrain ...`` runs on each process)."""
import sys

from .cli import main

sys.exit(main())
