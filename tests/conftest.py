"""Settings every test process needs, before anything imports Ray.

`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` keeps Ray on 127.0.0.1; the user config is
pointed at a path that does not exist so a developer's own ~/.config never changes test outcomes.
"""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
os.environ["LLEM_CONFIG_PATH"] = os.path.join(os.path.dirname(__file__), "no-such-user-config.yaml")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
