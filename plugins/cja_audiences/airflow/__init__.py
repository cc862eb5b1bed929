"""The Airflow shell: hooks, operators, sensors, triggers, the DAG factory, assets and the web
view. Thin adapters over the core; nothing else in the package imports Airflow."""
