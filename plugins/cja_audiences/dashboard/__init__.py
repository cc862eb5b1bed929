"""The audiences dashboard's view of the lake: runs, overview rows, overlap (no Airflow here)."""
