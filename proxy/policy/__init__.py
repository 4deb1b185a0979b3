"""The prompt policy, pure: who is asked to connect Office 365, when, and for what.

Here live the policy model and its validation, evaluation (a decision with machine-readable
reasons), `explain` (text and JSON) and the hot-reloaded policy file. Nothing here does
HTTP or touches the store; the only project import is the YAML loader in `proxy.config`.
"""

from proxy.policy.model import *  # noqa: F403
from proxy.policy.model import STATUSES, __all__  # noqa: F401
