"""The riskctl risk job (thin entry point; the pipeline is riskctl.flink.job.build_pipeline).

Embedded:   .venv/bin/riskctl run [--set job.parallelism=2 ...]
Cluster:    .venv/bin/riskctl submit [...]   (or: flink run -d -py jobs/risk_job.py -- --set ...)
"""

import logging
import sys

from riskctl.flink.main import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
