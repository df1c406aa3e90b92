"""Stand-in for WAA's `run.py`, run by the shard runner once per task.

It takes WAA's own options (the argparse `config()` of microsoft/WindowsAgentArena's
src/win-arena-container/client/run.py) with abbreviations refused, so an option the runner
spells differently fails here, reads the task from the meta file as run.py does, and writes
WAA's real layout: <result_dir>/<action_space>/<observation_type>/<model>/<trial_id>/<domain>/
<task>/result.txt, with traj.jsonl holding the error of a task that raised (as run.py does).

Behaviour is chosen by the task id: ok-<score> writes result.txt, crash-* dies with a traceback,
noresult-* records an exception in traj.jsonl and exits 0 without a score (run.py catches a
task's exception), hang-* never ends (it records that it started), beats-* waits until the
receiver has counted three heartbeats (FAKE_COUNT_URL), leak-* prints its OPENAI_API_KEY and
crashes (a careless agent).

FAKE_ARTIFACTS=1: an ok-* task also writes what WAA writes beside result.txt (traj.jsonl, two
screenshots) and a symlink. FAKE_ENV_DUMP=<path>: the task's whole environment, values
included, goes to <path>.<task> (outside the output folder, which must never hold a secret).
"""

import argparse
import json
import os
import sys
import time
import urllib.request

parser = argparse.ArgumentParser(allow_abbrev=False)
for name in (
    "--agent_name",
    "--model",
    "--som_origin",
    "--a11y_backend",
    "--max_steps",
    "--action_space",
    "--observation_type",
    "--trial_id",
    "--test_all_meta_path",
    "--result_dir",
    "--emulator_ip",
):
    parser.add_argument(name, required=True)
args = parser.parse_args()

with open(args.test_all_meta_path) as f:
    meta = json.load(f)
((domain, (task,)),) = meta.items()
with open(os.path.join(args.result_dir, "argv.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "meta": meta, "env": sorted(os.environ)}, f)
if os.environ.get("FAKE_ENV_DUMP"):
    with open(f"{os.environ['FAKE_ENV_DUMP']}.{task}", "w") as f:
        json.dump(dict(os.environ), f)

where = os.path.join(
    args.result_dir,
    args.action_space,
    args.observation_type,
    args.model,
    args.trial_id,
    domain,
    task,
)
os.makedirs(where)
if task.startswith("ok-"):
    with open(os.path.join(where, "result.txt"), "w") as f:
        f.write(task.split("-", 1)[1])
    if os.environ.get("FAKE_ARTIFACTS") == "1":
        with open(os.path.join(where, "traj.jsonl"), "w") as f:
            f.write(json.dumps({"step_num": 1, "action": "pyautogui.click(10, 10)"}) + "\n")
        os.makedirs(os.path.join(where, "screenshots"))
        for n in range(2):
            with open(os.path.join(where, "screenshots", f"step_{n}.png"), "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (40 + n) + task.encode())
        os.symlink("screenshots/step_0.png", os.path.join(where, "latest.png"))
elif task.startswith("leak"):
    print("debug: my key is", os.environ.get("OPENAI_API_KEY"))
    raise RuntimeError("the agent crashed after printing its key")
elif task.startswith("crash"):
    raise RuntimeError("boom: the agent crashed")
elif task.startswith("noresult"):
    with open(os.path.join(where, "traj.jsonl"), "a") as f:
        error = {"Error": f"Exception in {domain}/{task}", "Exception": "the VM went away"}
        f.write(json.dumps(error) + "\n")
elif task.startswith("hang"):
    open(os.path.join(args.result_dir, "started"), "w").close()
    time.sleep(600)
elif task.startswith("beats"):
    for _ in range(400):
        with urllib.request.urlopen(os.environ["FAKE_COUNT_URL"], timeout=5) as r:
            if json.load(r)["heartbeat"] >= 3:
                break
        time.sleep(0.05)
    else:
        sys.exit("never saw three heartbeats")
    with open(os.path.join(where, "result.txt"), "w") as f:
        json.dump({"score": 0.5}, f)
else:
    sys.exit(f"unknown fake task {task}")
