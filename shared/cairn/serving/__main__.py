"""``python -m cairn.serving <entry script>``: a replica's process."""

from __future__ import annotations

import sys

from cairn.serving._replica import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
