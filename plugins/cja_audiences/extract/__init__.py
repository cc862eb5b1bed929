"""The extract stage: sources that stream CJA-shaped data into the lake's normalized schema.

Core code (no Airflow). Each source yields Arrow record batches; the partition writer lands
them as hive partitions by UTC date, atomically and idempotently, quarantining bad rows.
"""
