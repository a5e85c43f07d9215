"""`dagster-daemon` whose backfill daemon passes every few seconds instead of every 30.

Dagster's backfill daemon sleeps a fixed 30 s between passes (DEFAULT_DAEMON_INTERVAL_SECONDS in
dagster._daemon.controller; there is no setting for it), and an asset backfill needs a pass for
each stage whose upstream has just landed: the SKU master, then each range's assets. A week
backfilled in a test is then mostly the daemon sleeping. Tests start this module in its place
(LocalDeployment(backfill_pass_s=...)); `make dev`, deploy/prod.py and the benchmarks that
measure a backfill as an operator would see it keep the real daemon.

    python -m benchmarks.daemon SECONDS run -w workspace.yaml
"""

import sys

import dagster._daemon.controller as controller


def main() -> int:
    pass_s, *argv = sys.argv[1:]
    # Read by the backfill loop when it starts (dagster._daemon.backfill), so set before the CLI runs.
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(pass_s)
    from dagster._daemon.cli import main as daemon_cli

    sys.argv = ["dagster-daemon", *argv]
    return daemon_cli()


if __name__ == "__main__":
    sys.exit(main())
