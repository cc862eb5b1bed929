"""Airflow triggers for cja-audiences (thin adapters over the core)."""
