"""The package's one clock: every moment sent to AEP or written to a snapshot comes from here.

``CJA_AUDIENCES_CLOCK_OFFSET_S`` moves it (seconds, may be fractional) so a rehearsal against
the emulator, whose clock can be moved too (``/_emulator/clock``), lives through months in
seconds with both sides agreeing on the date. Leave it unset against a real org.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

OFFSET_ENV = "CJA_AUDIENCES_CLOCK_OFFSET_S"


def now() -> datetime:
    """The current UTC time, moved by the offset (read each call, so tests can change it)."""
    offset = os.environ.get(OFFSET_ENV)
    moment = datetime.now(UTC)
    return moment + timedelta(seconds=float(offset)) if offset else moment
