"""One publisher in its own process, drawing on the org budget named by
``CJA_AUDIENCES_RATE_BUDGET_URL``.

Usage: python -m tests.adobe.budget_child RUN_DIR AUDIENCE_ID RATE  (AIRFLOW_CONN_AEP_DEFAULT)
"""

from __future__ import annotations

import json
import sys

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.publish.streaming import publish_run
from tests.publish.helpers import fast_options, make_spec


def main(argv: list[str]) -> int:
    run_dir, audience_id, rate = argv[0], argv[1], float(argv[2])
    config = AdobeConfig.from_env("aep_default")
    summary = publish_run(
        config, make_spec(id=audience_id), run_dir, options=fast_options(rate_limit=rate)
    )
    print(json.dumps({"acknowledged": summary["acknowledged"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
