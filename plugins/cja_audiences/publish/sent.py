"""What AEP was sent but no committed snapshot accounts for, and the audience's clock.

A run that started sending and never committed (killed and abandoned, failed on dead
letters, lost its lease) leaves AEP somewhere between two snapshots. Its ledger manifest —
written before its first request — is the durable record of what it may have sent: whole
input files, because a chunk in flight when the process died may have landed without being
acknowledged. The next run of the audience diffs against the committed snapshot *corrected*
by every such send (``diff.Corrections``) and, once committed, marks those runs superseded.

``lastQualificationTime`` must grow per audience whatever the worker clocks say: AEP keeps
the membership with the later time, so a run stamped earlier than a previous one (a clock
that was fast, then corrected) would be ignored. :func:`next_qualification_time` hands out
``max(now, last + 1 ms)`` and persists it before anything is sent with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cja_audiences import clock
from cja_audiences.adobe.records import STATUS_EXITED, STATUS_REALIZED, qualification_time
from cja_audiences.buckets import BUCKETS_DIR
from cja_audiences.diff import Corrections
from cja_audiences.lake.layout import read_json, write_json
from cja_audiences.lake.runs import (
    CURRENT,
    ENTERED,
    EXITED,
    LEDGER_DIR,
    MEMBERS,
    RENEWED,
    REPAIR_REALIZED,
    RUNS,
    read_run_record,
)
from cja_audiences.lake.storage import LakePath, exclusive
from cja_audiences.publish.ledger import MANIFEST

CLOCK_FILE = "qualification.json"
CLOCK_LOCK = ".qualification.lock"

# mode -> inputs as (kind, file in the run folder, membership status, required)
PLANS: dict[str, tuple[tuple[str, str, str, bool], ...]] = {
    "delta": (
        ("entered", ENTERED, STATUS_REALIZED, True),
        ("renewed", RENEWED, STATUS_REALIZED, False),  # absent in runs diffed before renewals
        ("exited", EXITED, STATUS_EXITED, True),
    ),
    "full": (
        ("members", MEMBERS, STATUS_REALIZED, True),
        ("exited", EXITED, STATUS_EXITED, False),
    ),
    "decommission": (("decommission", MEMBERS, STATUS_EXITED, True),),
    # reconcile --repair: the corrections, in a folder of their own (see reconcile.py)
    "repair": (
        ("repair_realized", REPAIR_REALIZED, STATUS_REALIZED, True),
        ("repair_exited", EXITED, STATUS_EXITED, True),
    ),
}
KIND_FILES = {kind: (name, status) for plan in PLANS.values() for kind, name, status, _ in plan}


@dataclass(frozen=True)
class Send:
    """One input a run may have sent: every row of ``path`` with ``status``."""

    run_id: str
    kind: str
    path: LakePath
    status: str


def outstanding_sends(audience_dir: LakePath, exclude: str | None = None) -> list[Send]:
    """Inputs of the audience's runs that started sending and that no commit accounts for.

    A committed run — one the current pointer reaches through the commits' previous run
    ids, not one that crashed half-way through its commit — accounts for its own publish
    (not for a later decommission sent from its folder); a run marked ``superseded_by`` was
    accounted for by a later commit. A bucketed run's sends are its buckets' (each folder
    with its own ledger).
    """
    runs = audience_dir / RUNS
    if not runs.is_dir():
        return []
    committed_runs = _committed_chain(audience_dir)
    found = []
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir() and p.name != exclude):
        if read_run_record(run_dir).get("superseded_by"):
            continue
        for folder in _sending_folders(run_dir):
            manifest = read_json(folder / LEDGER_DIR / MANIFEST)
            if not manifest:
                continue
            mode = (read_run_record(folder).get("publish") or {}).get("mode", "")
            committed = {kind for kind, *_ in PLANS.get(mode, ())}
            for kind in sorted(manifest.get("inputs", {})):
                if run_dir.name in committed_runs and kind in committed:
                    continue
                name, status = KIND_FILES[kind]
                found.append(Send(run_dir.name, kind, folder / name, status))
    return found


def _sending_folders(run_dir: LakePath) -> list[LakePath]:
    """The run folder and its buckets' folders (``buckets.bucket_dir``)."""
    nested = run_dir / BUCKETS_DIR
    return [
        run_dir,
        *(sorted(p for p in nested.iterdir() if p.is_dir()) if nested.is_dir() else []),
    ]


def _committed_chain(audience_dir: LakePath) -> set[str]:
    """The current run and every run before it in the chain of commits."""
    pointer = read_json(audience_dir / CURRENT) or {}
    chain: set[str] = set()
    run_id = pointer.get("run_id")
    while run_id and run_id not in chain:
        chain.add(run_id)
        commit = read_run_record(audience_dir / RUNS / run_id).get("commit") or {}
        run_id = commit.get("previous_run_id")
    return chain


def next_qualification_time(audience_dir: LakePath, now: datetime | None = None) -> str:
    """A ``lastQualificationTime`` later than every one handed out for this audience.

    Call it under the audience's lease: the value is persisted before it is returned (under
    a lock too, as a bucketed run's buckets publish at once).
    """
    path = audience_dir / CLOCK_FILE
    moment = (now or clock.now()).astimezone(UTC)  # the package clock (``clock``)
    with exclusive(audience_dir / CLOCK_LOCK):
        last = (read_json(path) or {}).get("last_qualification_time")
        if last is not None:
            moment = max(moment, datetime.fromisoformat(last) + timedelta(milliseconds=1))
        value = qualification_time(moment)
        write_json({"last_qualification_time": value}, path)
    return value


def corrections(audience_dir: LakePath, run_id: str) -> Corrections:
    """The uncommitted sends run ``run_id`` must supersede (the diff's ``corrections``)."""
    sends = outstanding_sends(audience_dir, exclude=run_id)
    return Corrections(
        realized=[s.path for s in sends if s.status == STATUS_REALIZED],
        exited=[s.path for s in sends if s.status == STATUS_EXITED],
        run_ids=sorted({s.run_id for s in sends}),
    )


def unaccounted_runs(audience_dir: LakePath, run_dir: LakePath) -> list[str]:
    """Runs that sent records which ``run_dir``'s diff did not correct for (sent after it)."""
    record = read_run_record(run_dir)
    accounted = set(((record.get("diff") or {}).get("corrections") or {}).get("run_ids", []))
    newer = {s.run_id for s in outstanding_sends(audience_dir, exclude=run_dir.name)}
    return sorted(newer - accounted)
