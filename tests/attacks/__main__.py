"""`python -m tests.attacks`: run the attack suite (see tests/attacks/__init__.py)."""

import sys

from tests.attacks.runner import main

sys.exit(main())
