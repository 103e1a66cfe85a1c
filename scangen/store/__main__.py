"""`python -m scangen.store import ...`: see scangen.store.cli."""

import sys

from scangen.store.cli import main

sys.exit(main())
