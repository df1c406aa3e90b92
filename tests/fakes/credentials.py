"""A static TokenCredential for SDK clients aimed at the fakes: no identity endpoint involved."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken

FAKE_BEARER_TOKEN = "fake-aad-token"


class StaticTokenCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(FAKE_BEARER_TOKEN, int(time.time()) + 3600)
