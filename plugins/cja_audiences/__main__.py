"""``python -m cja_audiences``: the Airflow-free command line."""

from __future__ import annotations

import sys

from cja_audiences.cli.main import main

sys.exit(main())
