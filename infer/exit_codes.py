"""The exit codes of every ``groundbreak`` command, in one place (docs/operator.md, "Failures
and exit codes").

A cron job or a script reads them: 0 all done; 1 some pairs failed (the rest were done); 2 bad
input or usage, nothing was done; 3 another nightly run holds the lock; 4 stopped by a full disk
or quota, rerun once there is space; 5 the nightly state database cannot be read; 130
interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
"""Everything went through."""

EXIT_PAIRS_FAILED = 1
"""Some pairs (or source entries) failed, each with its reason; the others were done."""

EXIT_BAD_INPUT = 2
"""Bad input or usage: a bad file, option or path; nothing was done."""

EXIT_LOCKED = 3
"""Another nightly run holds the state directory's lock."""

EXIT_STOPPED = 4
"""A run stopped by a full disk or quota; what was finished is kept."""

EXIT_STATE_DAMAGED = 5
"""A nightly state database that cannot be read (see docs/operator.md, recovery)."""

EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C)."""
