"""Fault soak, bounded for CI (about 2 minutes); `bench/soak.py` runs the same code longer.

Bookings (creates, updates with growing versions, cancels) and Outlook changes by a person flow
while the simulated tenant fails about 20 % of the calendar calls (429 with Retry-After 1, 503,
timeouts, connection resets); booking events arrive duplicated (the same webhook id resent) and
out of order (an older version after a newer one); the function host is SIGKILLed mid-flight and
replaced by a new one on the same storage; the on-disk Azurite stops and starts once while the
host runs (the platform resends what it got no 2xx for, as a real platform does). Then faults
are cleared, the queues drain, the safety sweep runs once, and:

- **lost** = a booking whose final accepted state is live with no event in its room's calendar,
  or an Outlook event the person left in a room with no live blocker at the platform;
- **duplicated** = more than one calendar event for one booking id (all rooms together), or more
  than one live blocker for one Outlook event;
- **stale** = a calendar event for a cancelled booking, in a room other than the final one, or
  with a subject other than the final title; a live blocker for a deleted Outlook event or for
  one of the product's own events, or with a title other than the event's final subject; and
  any booking event the product refused with a 4xx.

"Final accepted state" is the highest version the product answered 2xx for. Blockers are replayed
from `platform.received()`: per blocker id the record with the highest `sequence` wins. All three
counts must be 0, and no message may sit in a `-poison` queue.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.soak import Soak, SoakConfig
from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import FUNCTION_KEY


def test_fault_soak(
    tenant: Sandbox, tenant_env: dict[str, str], platform: PlatformSim, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SOAK_SEED", "20261123"))
    print(f"\nsoak seed={seed} (rerun with SOAK_SEED={seed})")
    config = SoakConfig(seed=seed, bookings=12, person_events=4)
    result = Soak(tenant.control, tenant_env, platform, tmp_path, config, FUNCTION_KEY).run()
    print(result.report())
    counts = result.counts
    # The soak really did what it claims: faults, kills, restarts, reorderings and duplicates.
    assert counts["worker_kills"] == 1 and counts["azurite_restarts"] == 1
    assert counts["reordered_pairs"] > 0 and counts["duplicate_sends"] > 0
    assert counts["booking_resends"] > 0, "the Azurite outage never made the platform resend"
    assert counts["live_bookings"] > 0 and counts["person_events_live"] > 0
    # Faults fired (each mailbox call fails with probability ~0.2; the share is printed).
    print(f"graph calls faulted: {counts['graph_faulted']}/{counts['graph_requests_logged']}")
    assert counts["graph_faulted"] > 0, "no Graph fault fired"
    assert (len(result.lost), len(result.duplicated), len(result.stale)) == (0, 0, 0)
    assert result.poison == {}
