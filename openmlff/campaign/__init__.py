"""Stability campaigns: a declared grid of MD runs (models x starts x temperatures x seeds) run to completion.

    from openmlff.campaign import run_campaign, campaign_status, format_status
    run_campaign("campaign.toml")                        # local process pool; or scheduler_address=...
    print(format_status(campaign_status("campaign-dir")))

spec: the spec file (TOML or JSON) and its expansion into runs; state: the campaign directory and
the state of each run, read from disk; worker: one run in a worker process; executors: the local
pool and Dask. Command line: `openmlff campaign run SPEC`, `openmlff campaign status DIR`.
"""

from .executors import EXECUTORS, CampaignResult, campaign_directory, default_workers, run_campaign
from .spec import CampaignSpec, CampaignSpecError, DatasetFrames, RunSpec, run_id, spec_changes
from .state import (
    FAILED, FINISHED_COLLAPSED, FINISHED_STABLE, INTERRUPTED, PENDING, RUN_STATES, RUNNING, CampaignBusyError,
    CampaignDirectory, campaign_status, format_status, read_attempts, run_state,
)
from .worker import execute_run

__all__ = [
    "EXECUTORS", "FAILED", "FINISHED_COLLAPSED", "FINISHED_STABLE", "INTERRUPTED", "PENDING", "RUN_STATES", "RUNNING",
    "CampaignBusyError", "CampaignDirectory", "CampaignResult", "CampaignSpec", "CampaignSpecError", "DatasetFrames",
    "RunSpec", "campaign_directory", "campaign_status", "default_workers", "execute_run", "format_status",
    "read_attempts", "run_campaign", "run_id", "run_state", "spec_changes",
]
