"""The refresh calendar: schedule periods, the schedule's end, and whether a refresh is due.

Periods are anchored at ``refresh.start``; a month is the same day one month later, clamped
to the month's last day. The refresh gate (``refresh_due``) and the DAG's timetable
(``schedule_crons``) both come from this module, so a scheduled run always opens a period.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

from cja_audiences.specs.limits import FREQUENCY_HOURS, HARD

if TYPE_CHECKING:
    from cja_audiences.specs.model import AudienceSpec


def when(moment: datetime) -> str:
    """A moment as people read it in messages."""
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def add_months(moment: datetime, months: int) -> datetime:
    """Same day and time ``months`` later, clamped to the month's last day (Jan 31 + 1 = Feb 28)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


# The fewest days each month can have (February: 28), for anchors on the 29th-31st.
_SHORTEST_MONTH = {m: min(calendar.monthrange(y, m)[1] for y in (2026, 2028)) for m in range(1, 13)}


def schedule_crons(spec: AudienceSpec) -> list[str]:
    """Cron expressions (UTC) firing at the start of every period; none for one-time audiences.

    A monthly anchor on the 29th-31st fires on that day in months that always have it and on
    the last day (cron ``L``) in the others, which is where ``add_months`` clamps the period.
    """
    start = spec.refresh.start
    minute, hour, day = start.minute, start.hour, start.day
    match spec.refresh.frequency:
        case "every_4_hours":
            return [f"{minute} {','.join(str(h) for h in range(hour % 4, 24, 4))} * * *"]
        case "daily":
            return [f"{minute} {hour} * * *"]
        case "weekly":
            return [f"{minute} {hour} * * {start.isoweekday() % 7}"]
        case "monthly":
            if day <= min(_SHORTEST_MONTH.values()):
                return [f"{minute} {hour} {day} * *"]
            always = [str(m) for m, days in _SHORTEST_MONTH.items() if days >= day]
            clamped = [str(m) for m, days in _SHORTEST_MONTH.items() if days < day]
            return [
                f"{minute} {hour} {day} {','.join(always)} *",
                f"{minute} {hour} L {','.join(clamped)} *",
            ]
    return []


def latest_schedule_end(spec: AudienceSpec) -> datetime:
    """Creation (refresh.start) + 13 months, + 13 more with ``refresh.extended``."""
    months = HARD.schedule_months + (HARD.extension_months if spec.refresh.extended else 0)
    return add_months(spec.refresh.start, months)


def schedule_end(spec: AudienceSpec) -> datetime | None:
    """When the refresh schedule stops: the end of ``refresh.expires``, else the latest allowed."""
    if spec.refresh.frequency == "one_time":
        return None
    if spec.refresh.expires is None:
        return latest_schedule_end(spec)
    return datetime.combine(spec.refresh.expires + timedelta(days=1), time(), UTC)


def is_refreshing(spec: AudienceSpec, now: datetime) -> bool:
    end = schedule_end(spec)
    return end is not None and now < end


def period_start(spec: AudienceSpec, now: datetime) -> datetime | None:
    """Start of the schedule period holding ``now`` (periods anchored at refresh.start)."""
    start = spec.refresh.start
    if now < start:
        return None
    if spec.refresh.frequency == "monthly":
        months = (now.year - start.year) * 12 + now.month - start.month
        while add_months(start, months) > now:
            months -= 1
        return add_months(start, months)
    step = timedelta(hours=FREQUENCY_HOURS[spec.refresh.frequency])
    return start + step * ((now - start) // step)


def next_period(spec: AudienceSpec, current: datetime) -> datetime:
    if spec.refresh.frequency == "monthly":
        months = 1
        while add_months(spec.refresh.start, months) <= current:
            months += 1
        return add_months(spec.refresh.start, months)
    return current + timedelta(hours=FREQUENCY_HOURS[spec.refresh.frequency])


def refresh_due(
    spec: AudienceSpec, last_committed_at: datetime | None, now: datetime, force: bool
) -> tuple[bool, str, datetime | None]:
    """Whether a run (scheduled, event-triggered or manual) may refresh the audience now.

    At most one committed refresh per schedule period: a run whose period already holds a
    committed publish is skipped (not failed), saying when the next one is allowed. Periods
    rather than "24 h since the last commit" so the next scheduled run is not skipped just
    because yesterday's publish committed a few minutes after its period began.
    """
    if force:
        return True, "forced (force=true): the refresh-frequency guard is bypassed", None
    frequency = spec.refresh.frequency
    if frequency == "one_time":
        if last_committed_at is None:
            return True, "first publish of a one-time audience", None
        return (
            False,
            f"skipped: one-time audience already published at {when(last_committed_at)}; "
            "run with force=true to publish it again",
            None,
        )
    end = schedule_end(spec)
    if end is not None and now >= end:
        return (
            False,
            f"skipped: the refresh schedule ended at {when(end)}; renew it "
            "(refresh.extended / refresh.expires) or run with force=true",
            None,
        )
    if last_committed_at is None:
        return True, "first publish", None
    begun = period_start(spec, now)
    if begun is None:
        return (
            False,
            f"skipped: the schedule starts at {when(spec.refresh.start)}",
            spec.refresh.start,
        )
    if last_committed_at < begun:
        return True, f"due: no publish yet in the {frequency} period from {when(begun)}", None
    allowed = next_period(spec, begun)
    return (
        False,
        f"skipped: the {frequency} audience was already published at "
        f"{when(last_committed_at)} in this period; the next refresh is allowed "
        f"at {when(allowed)} (or run with force=true)",
        allowed,
    )
