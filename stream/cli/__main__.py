"""``python -m stream.cli``: the ``maskstream`` command."""

import sys

from stream.cli import main

sys.exit(main())
