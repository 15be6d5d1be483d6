"""``python -m groundbreak.infer.cli``: the ``groundbreak`` command."""

import sys

from groundbreak.infer.cli import main

sys.exit(main())
