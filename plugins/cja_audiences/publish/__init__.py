"""Publishing audience membership to Adobe Experience Platform (no Airflow imports).

``publish_run`` is the entry point: it registers the audience, streams the run's membership
changes as XDM profile records and keeps a ledger so a crashed publish resumes where it stopped.
"""

from cja_audiences.publish.streaming import decommission_run, publish_run

__all__ = ["decommission_run", "publish_run"]
