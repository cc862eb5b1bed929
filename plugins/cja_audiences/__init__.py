"""cja-audiences: CJA data to audiences, published to Adobe Real-Time Customer Profile.

The package is a functional core (no Airflow imports) with thin Airflow adapters in
``hooks/``, ``operators/``, ``sensors/`` and ``triggers/``.
"""

from __future__ import annotations

__version__ = "0.1.0"
