import sys

from shard_runner.runner import main

sys.exit(main())
