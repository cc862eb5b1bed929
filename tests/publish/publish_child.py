"""Runs one publish in its own process, so a test can SIGKILL it part-way through.

Usage: python -m tests.publish.publish_child RUN_DIR CHUNK_SIZE  (connection in AIRFLOW_CONN_AEP_DEFAULT)
"""

from __future__ import annotations

import sys
from pathlib import Path

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.publish.streaming import publish_run
from tests.publish.helpers import fast_options, make_spec


def main(argv: list[str]) -> int:
    run_dir, chunk_size = Path(argv[0]), int(argv[1])
    config = AdobeConfig.from_env("aep_default")
    publish_run(config, make_spec(), run_dir, options=fast_options(chunk_size=chunk_size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
