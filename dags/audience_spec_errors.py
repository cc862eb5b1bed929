"""Reports invalid audience specs as this file's one import error (naming each spec file).

It defines no DAG. Keeping the errors here lets every valid audience DAG in
cja_audiences.py load while the Airflow UI still shows what is wrong and how to fix it.
"""

from __future__ import annotations

from cja_audiences.airflow.dag_factory import InvalidSpecs, load_schedulable_specs
from cja_audiences.settings import get_settings

_, _errors = load_schedulable_specs(get_settings())
if _errors:
    raise InvalidSpecs(_errors)
