"""cja-audiences: CJA data to audiences, published to Adobe Real-Time Customer Profile.

A functional core with no Airflow imports, laid out in the order data flows: ``extract`` ->
``lake`` -> ``filters``/``compute`` -> ``diff`` -> ``guardrails`` -> ``publish`` ->
``snapshots`` (commit), with ``specs`` (audiences as code, limits, the refresh calendar) and
``adobe`` (the HTTP clients) beside them. The Airflow shell (hooks, operators, sensors,
triggers, the DAG factory, assets, the web view) lives in ``cja_audiences.airflow``.
"""

from __future__ import annotations

__version__ = "0.1.0"
