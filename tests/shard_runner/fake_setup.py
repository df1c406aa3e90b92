"""Stand-in for the image's /entry_setup.sh: `ready <marker>` makes the fake WAA server ready
(like the Windows VM finishing its boot) and keeps running like the VM does; `forever <pidfile>`
never gets the server ready; `fail` exits non-zero."""

import os
import sys
import time

mode, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ""
if mode == "fail":
    print("qemu: could not open disk image /storage/data.img")
    sys.exit(1)
with open(arg, "w") as f:
    f.write(str(os.getpid()))
time.sleep(600)
