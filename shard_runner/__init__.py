"""The shard runner that runs inside the WAA container; see README.md and runner.py."""
