"""The golden image: WAA's prepared storage folder, uploaded once to Blob Storage.

One setting names it (WAA_GOLDEN_IMAGE_URL, `https://<account>.blob.core.windows.net/<container>/
<path>`); each tier makes it a read-only folder in the container and tells the runner where with
WAA_STORAGE_SOURCE (CONTRACT.md, "Runner environment"); the runner copies it to its own writable
WAA_STORAGE_DIR, so every attempt starts from a pristine copy and nothing writes back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Where the runner copies the golden image to (WAA's own path inside the container).
CONTAINER_STORAGE_DIR = "/storage"
# Where the VM tier mounts the host's golden image folder in the container (read-only).
CONTAINER_GOLDEN_DIR = "/golden"

# Storage account names: 3-24 lower-case letters and digits; container names: 3-63 of lower-case
# letters, digits and single hyphens, starting and ending with a letter or digit
# (learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-
# metadata).
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_BLOB_HOST = re.compile(r"^(?P<account>[^.]+)\.blob\.core\.windows\.net$")
_PATH_PART = re.compile(r"^[A-Za-z0-9_.=+@-]+$")


@dataclass(frozen=True)
class GoldenImage:
    account: str
    container: str
    path: str  # inside the container, no leading or trailing "/"; "" = the container's root

    @property
    def url(self) -> str:
        base = f"https://{self.account}.blob.core.windows.net/{self.container}"
        return f"{base}/{self.path}" if self.path else base


def parse_golden_image_url(url: str) -> GoldenImage:
    """The parts of a golden image URL; ValueError saying what is wrong with it."""
    shape = "must look like https://<account>.blob.core.windows.net/<container>/<path>"
    parts = urlsplit(url.strip())
    host = _BLOB_HOST.match(parts.hostname or "")
    if parts.scheme != "https" or host is None:
        raise ValueError(shape)
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        # A SAS in the URL would be a secret in every job definition: the jobs read with their
        # managed identity instead.
        raise ValueError(f"{shape}, without a query (no SAS), user or port")
    account = host.group("account")
    if not _ACCOUNT.match(account):
        raise ValueError(f"{shape}; {account!r} is not a storage account name")
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"{shape}; the container is missing")
    container, rest = segments[0], segments[1:]
    if not _CONTAINER.match(container):
        raise ValueError(f"{shape}; {container!r} is not a blob container name")
    for part in rest:
        if part in (".", "..") or not _PATH_PART.match(part):
            raise ValueError(f"{shape}; path segment {part!r} is not allowed")
    return GoldenImage(account=account, container=container, path="/".join(rest))
