"""Developer entry points behind the Makefile: the demo and a local Airflow."""
