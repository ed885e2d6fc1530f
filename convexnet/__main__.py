"""``python -m convexnet``: the ``convexnet`` command (:func:`convexnet.cli.main`).

For ``-m`` Python puts the current folder first on ``sys.path``; it is removed here, before the
command imports anything else, so that a ``tqdm.py`` or ``torch.py`` lying there is never run
(the ``convexnet`` script needs no such step: its path starts with its own folder). Python has
already imported the ``convexnet`` package itself (and numpy, which it uses) when this file runs:
in a folder you do not trust, run the ``convexnet`` script or ``python -P -m convexnet``.
"""

import os
import sys

# Under -P (PYTHONSAFEPATH) Python prepends nothing, and sys.path[0] is the user's own entry.
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import main  # noqa: E402  (after the path is cleaned)

sys.exit(main())
