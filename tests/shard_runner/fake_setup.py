"""Stand-in for the image's /entry_setup.sh: `ready <marker>` makes the fake WAA server ready
(like the Windows VM finishing its boot) and keeps running like the VM does; `forever <pidfile>`
never gets the server ready; `fail` exits non-zero.

FAKE_SETUP_DUMP=<path>: writes what the setup found when it started (its environment, and the
files of WAA_STORAGE_DIR with their sizes) to <path> first."""

import json
import os
import sys
import time

if os.environ.get("FAKE_SETUP_DUMP"):
    storage = os.environ.get("WAA_STORAGE_DIR", "")
    files = {}
    for root, _dirs, names in os.walk(storage) if storage else ():
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, storage)] = os.lstat(full).st_size
    with open(os.environ["FAKE_SETUP_DUMP"], "w") as f:
        json.dump({"env": dict(os.environ), "storage": files}, f)

mode, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
if mode == "fail":
    print("qemu: could not open disk image /storage/data.img")
    sys.exit(1)
with open(arg, "w") as f:
    f.write(str(os.getpid()))
time.sleep(600)
