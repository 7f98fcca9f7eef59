"""``python -m skfeat``: the same command line as the ``skfeat`` console script."""

from __future__ import annotations

import sys

from skfeat._cli import main

if __name__ == "__main__":
    sys.exit(main())
