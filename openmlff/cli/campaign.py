"""`openmlff campaign run | status`: stability campaigns (openmlff.campaign). `campaign status` imports neither
torch nor OpenMM: it reads the campaign directory's files."""

from __future__ import annotations

import json
import sys

from ..core.config import finite_float
from .common import model_arguments, model_ref


def add_campaign(ca) -> None:
    """`campaign run SPEC` and `campaign status DIR` (openmlff.campaign)."""
    ca_sub = ca.add_subparsers(dest="campaign_command")
    run = ca_sub.add_parser("run", help="run (or resume) every unfinished run of a campaign")
    run.add_argument("spec", help="campaign spec (.toml or .json), or an existing campaign directory")
    run.add_argument("--out", default=None, help="campaign directory (default: <spec folder>/<spec name>)")
    run.add_argument("--executor", choices=["local", "dask"], default=None,
                     help="local process pool (default) or Dask (default when --scheduler is given)")
    run.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://head:8786")
    run.add_argument("--workers", type=int, default=None, help="runs at a time (default: cores // threads per run)")
    run.add_argument("--torch-threads-per-run", "--threads-per-run", dest="threads_per_run", type=int, default=1,
                     help="torch and OpenMM CPU threads per run (default 1)")
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again (resuming them)")
    run.add_argument("--status-interval-s", "--status-interval", dest="status_interval", type=finite_float,
                     default=60.0, help="seconds between status lines (default 60)")
    run.add_argument("--quiet", action="store_true")
    model_arguments(run, options=False)
    run.set_defaults(handler=_campaign_run)
    st = ca_sub.add_parser("status", help="counts by state, progress, MD speed and time left of a campaign")
    st.add_argument("directory")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(handler=_campaign_status)


def _campaign_run(args) -> int:
    from ..campaign import FAILED, format_status, run_campaign

    model_ref(args, name="")  # --allow-model-code
    result = run_campaign(args.spec, out=args.out, executor=args.executor, n_workers=args.workers,
                          scheduler_address=args.scheduler, torch_threads_per_run=args.threads_per_run,
                          retry_failed=args.retry_failed, progress=not args.quiet,
                          status_interval_s=args.status_interval)
    print(format_status(result.status, runs=False))
    failed = [r for r in result.status["runs"] if r["state"] == FAILED]
    for r in failed:
        print(f"  failed: {r['run_id']}: {r['error']}", file=sys.stderr)
    if failed and not args.retry_failed:
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
