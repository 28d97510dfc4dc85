"""`openmlff campaign run | status`: stability campaigns (openmlff.campaign). `campaign status` imports neither
torch nor OpenMM: it reads the campaign directory's files."""

from __future__ import annotations

import json
import sys

from ..core.config import add_config_arguments, config_from_args
from .common import model_arguments, model_ref


def add_campaign(ca) -> None:
    """`campaign run SPEC` and `campaign status DIR` (openmlff.campaign)."""
    ca_sub = ca.add_subparsers(dest="campaign_command")
    run = ca_sub.add_parser("run", help="run (or resume) every unfinished run of a campaign")
    run.add_argument("spec", help="campaign spec (.toml or .json), or an existing campaign directory")
    run.add_argument("--out", default=None, help="campaign directory (default: <spec folder>/<spec name>)")
    from ..campaign.executors import EXECUTORS, ExecutionConfig

    add_config_arguments(run, ExecutionConfig, choices={"executor": list(EXECUTORS)},
                         group="how the campaign is run (openmlff.campaign.executors.ExecutionConfig)")
    run.add_argument("--quiet", action="store_true")
    model_arguments(run, options=False)
    run.set_defaults(handler=_campaign_run)
    st = ca_sub.add_parser("status", help="counts by state, progress, MD speed and time left of a campaign")
    st.add_argument("directory")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(handler=_campaign_status)


def _campaign_run(args) -> int:
    from ..campaign import FAILED, format_status, run_campaign
    from ..campaign.executors import ExecutionConfig

    model_ref(args, name="")  # --allow-model-code
    config = config_from_args(ExecutionConfig, args)
    result = run_campaign(args.spec, out=args.out, config=config, progress=not args.quiet)
    print(format_status(result.status, runs=False))
    failed = [r for r in result.status["runs"] if r["state"] == FAILED]
    for r in failed:
        print(f"  failed: {r['run_id']}: {r['error']}", file=sys.stderr)
    if failed and not config.retry_failed:
        print(f"  {len(failed)} failed run(s) are left as they are; --retry-failed runs them again", file=sys.stderr)
    if result.stopped:  # a full disk: one line, non-zero; the same command resumes them
        print(f"openmlff campaign: error: {result.stopped[0]} ({len(result.stopped)} run(s) stopped, left interrupted: "
              "free room and run the same command to resume them)", file=sys.stderr)
        return 1
    return 3 if failed else 0


def _campaign_status(args) -> int:
    from ..campaign import campaign_status, format_status

    status = campaign_status(args.directory)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0
