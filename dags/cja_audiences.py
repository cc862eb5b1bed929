"""One Airflow DAG per audience spec in include/audiences/ (cja_audience__<id>), plus cja_audiences_all
and cja_audiences_reconcile (the dashboard's Reconcile button).

Wiring only: the factory builds every DAG the same way. An invalid spec is left out here
and reported as one import error by audience_spec_errors.py, so it never hides the others.
"""

from __future__ import annotations

from cja_audiences.airflow.assets import CJA_EVENTS
from cja_audiences.airflow.dag_factory import (
    build_all_dag,
    build_audience_dag,
    build_reconcile_dag,
    load_schedulable_specs,
)
from cja_audiences.settings import get_settings

_settings = get_settings()
_specs, _ = load_schedulable_specs(_settings)

for _spec in _specs:
    _dag = build_audience_dag(_spec, _settings, new_data=CJA_EVENTS)
    globals()[_dag.dag_id] = _dag

cja_audiences_all = build_all_dag(_specs, _settings)
cja_audiences_reconcile = build_reconcile_dag(_specs, _settings)
