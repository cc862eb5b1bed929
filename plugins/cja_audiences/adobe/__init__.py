"""Adobe's HTTP APIs (no Airflow): IMS auth, one platform client, streaming records and
sender, the Audiences API, Catalog."""
