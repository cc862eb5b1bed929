"""Spec files as the dashboard reads them: each parsed once per change of the file.

Specs are read with a pure-Python safe YAML loader (it refuses aliases and deep nesting,
which libyaml's C loader cannot be told to), at ~10-20 ms a file: re-reading 150 specs on
every page, or every minute for the overview's expiry checks, would cost seconds.
"""

from __future__ import annotations

from pathlib import Path
from threading import Lock

from cja_audiences.specs.model import AudienceSpec, SpecError, load_spec, load_specs, spec_by_id

# path -> ((mtime_ns, size), the spec or why it does not load)
_parsed: dict[Path, tuple[tuple[int, int], AudienceSpec | str]] = {}
_lock = Lock()


def cached_spec(path: Path) -> AudienceSpec:
    """:func:`load_spec`, reused while the file's modification time and size are unchanged."""
    try:
        stat = path.stat()
    except OSError:
        return load_spec(path)  # gone or unreadable: load_spec says how
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _lock:
        hit = _parsed.get(path)
    if hit is None or hit[0] != stamp:
        try:
            outcome: AudienceSpec | str = load_spec(path)
        except SpecError as exc:
            outcome = str(exc).removeprefix(f"{path}: ")
        hit = (stamp, outcome)
        with _lock:
            _parsed[path] = hit
    if isinstance(hit[1], str):
        raise SpecError(path, hit[1])  # a new error each time: no traceback piles up
    return hit[1]


def specs_in(folder: Path) -> tuple[list[AudienceSpec], list[SpecError]]:
    return load_specs(folder, load=cached_spec)


def spec_of(folder: Path, audience_id: str) -> AudienceSpec:
    return spec_by_id(folder, audience_id, load=cached_spec)
