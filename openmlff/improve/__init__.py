"""Metric-guided improvement of a trained model (docs/architecture.md "Metric-guided improvement").

The force metrics that diagnose a model also direct its repair: `reweight` fine-tunes it with more weight on the
training frames (or conformation clusters) it gets wrong; `recruit` picks new labelled frames from a pool where it
is weak, for `openmlff train --continue-from ... --add-data`. The metric losses themselves are in
openmlff.training.losses. This package sits above training/, metrics/ and model_file/writer.py and below the CLI.
"""

from .recruit import RECRUIT_STRATEGIES, RecruitConfig, RecruitResult, recruit_frames
from .reweight import REWEIGHT_RULES, FinetuneConfig, finetune, sample_weights

__all__ = ["RECRUIT_STRATEGIES", "REWEIGHT_RULES", "FinetuneConfig", "RecruitConfig", "RecruitResult", "finetune",
           "recruit_frames", "sample_weights"]
