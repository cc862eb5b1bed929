"""Airflow operators for cja-audiences (thin adapters over the core)."""
