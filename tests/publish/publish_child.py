"""Runs one publish in its own process, so a test can SIGKILL it part-way through.

Usage: python -m tests.publish.publish_child RUN_DIR CHUNK_SIZE [MODE]
(connection in AIRFLOW_CONN_AEP_DEFAULT; MODE: streaming, the default, or external_audience)
"""

from __future__ import annotations

import sys
from pathlib import Path

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.publish import publish_run
from cja_audiences.publish.external import PollPolicy
from tests.publish.helpers import fast_options, make_spec


def main(argv: list[str]) -> int:
    run_dir, chunk_size = Path(argv[0]), int(argv[1])
    mode = argv[2] if len(argv) > 2 else "streaming"
    config = AdobeConfig.from_env("aep_default")
    spec = make_spec(publish={"mode": mode})
    options = fast_options(chunk_size=chunk_size)
    publish_run(config, spec, run_dir, options=options, poll=PollPolicy(0.05, 0.2, 60))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
