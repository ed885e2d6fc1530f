"""``python -m convexnet``: the ``convexnet`` command (:func:`convexnet.cli.main`).

For ``-m`` Python puts the current folder first on ``sys.path``. The package's ``__init__`` removes
it when it is imported as the ``-m`` target, before it imports anything else, so that a
``numpy.py``, ``tqdm.py`` or ``torch.py`` lying there is never run (the ``convexnet`` script needs no
such step: its path starts with its own folder).
"""

import sys

from .cli import main

sys.exit(main())
