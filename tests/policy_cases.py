"""What the policy tests share: the shipped policy files, fixed ids and times, and short
ways to write a policy, a user and random text."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

from proxy.config import parse_yaml
from proxy.policy import Policy, PolicyUser, policy_from_data

POLICIES = Path(__file__).resolve().parent.parent / "policies"
EXAMPLES = sorted(POLICIES.glob("**/*.yaml"))
NOW = 1_800_000_000.0
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0b5e4c1a-3f7d-4e2b-9c8a-6d1f2e3a4b5c"
ALPHABET = "aA@.-_+'\"\\ \t\n\x00\u212a\u0441\uff0e\u3002\u200bé*[]:,()0123456789contoso"


def policy(text: str) -> Policy:
    return policy_from_data(parse_yaml(textwrap.dedent(text), "test.yaml"), "test.yaml")


def user(email: str | None = "alice@contoso.com", **kwargs: Any) -> PolicyUser:
    return PolicyUser(email, **kwargs)


def random_text(rng: random.Random, *pieces: str) -> str:
    parts = [rng.choice(pieces) if rng.random() < 0.5 else rng.choice(ALPHABET)]
    parts += [rng.choice(ALPHABET) for _ in range(rng.randrange(30))]
    if rng.random() < 0.5:
        parts.append(rng.choice(pieces))
    return "".join(parts)
