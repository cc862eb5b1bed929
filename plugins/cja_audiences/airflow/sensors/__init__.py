"""Airflow sensors for cja-audiences (thin adapters over the core)."""
