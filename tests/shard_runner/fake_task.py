"""Stand-in for WAA's `run.py`, run by the shard runner once per task.

Behaviour is chosen by the task id: ok-<score> writes a WAA-style nested result.txt, crash-*
dies with a traceback, noresult-* exits 0 without a score, hang-* never ends (it records that
it started), beats-* waits until the receiver has counted three heartbeats.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--task-id", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--meta", required=True)
parser.add_argument("--max-steps", required=True)
parser.add_argument("--agent", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--domain", required=True)
parser.add_argument("--count-url", required=True)
args = parser.parse_args()

with open(args.meta) as f:
    meta = json.load(f)
with open(os.path.join(args.out, "argv.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "meta": meta, "env": sorted(os.environ)}, f)

task = args.task_id
if task.startswith("ok-"):
    where = os.path.join(args.out, "0", f"{args.agent}-{args.model}", args.domain, task)
    os.makedirs(where)
    with open(os.path.join(where, "result.txt"), "w") as f:
        f.write(task.split("-", 1)[1])
elif task.startswith("crash"):
    raise RuntimeError("boom: the agent crashed")
elif task.startswith("noresult"):
    with open(os.path.join(args.out, "error.txt"), "w") as f:
        f.write("Exception in notepad/noresult: the VM went away")
elif task.startswith("hang"):
    open(os.path.join(args.out, "started"), "w").close()
    time.sleep(600)
elif task.startswith("beats"):
    for _ in range(400):
        with urllib.request.urlopen(args.count_url, timeout=5) as r:
            if json.load(r)["heartbeat"] >= 3:
                break
        time.sleep(0.05)
    else:
        sys.exit("never saw three heartbeats")
    where = os.path.join(args.out, "result.txt")
    with open(where, "w") as f:
        json.dump({"score": 0.5}, f)
else:
    sys.exit(f"unknown fake task {task}")
