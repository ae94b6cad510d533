import sys

from profiling_bridge.cli import main

sys.exit(main())
