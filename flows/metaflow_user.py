"""A user name for Metaflow where the machine gives none it accepts.

Metaflow refuses to run without a user name and does not accept "root"; fresh machines,
containers and CI often have neither USERNAME nor a login user. The flow's command line
calls `ensure_metaflow_user` before Metaflow asks for the name; a name the user set wins.
"""

from __future__ import annotations

import os

from metaflow import metaflow_config

FALLBACK_USER = "tune"


def ensure_metaflow_user() -> None:
    names = [metaflow_config.USER, *(os.environ.get(n) for n in ("SUDO_USER", "USERNAME", "USER"))]
    if not any(name and name != "root" for name in names):
        # Metaflow read METAFLOW_USER into its config when it was imported; the step processes it starts read
        # the environment.
        os.environ["METAFLOW_USER"] = metaflow_config.USER = FALLBACK_USER
