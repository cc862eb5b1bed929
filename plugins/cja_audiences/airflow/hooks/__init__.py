"""Airflow hooks for cja-audiences (thin adapters over the core)."""
