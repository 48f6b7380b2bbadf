"""The warm-up job: start the risk job's Python in idle TaskManagers (``riskctl warm``)."""

import sys

from riskctl.flink.warm import main

if __name__ == "__main__":
    sys.exit(main())
