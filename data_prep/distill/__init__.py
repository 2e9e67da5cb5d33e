"""`data distill`: self-distillation targets with selective self-rehearsal (SSR) filtering.

DeSTA2 / DeSTA2.5-Audio: the frozen backbone LLM reads each clip's seed description plus an
instruction and its own answer becomes the speech model's target, so the adapter only has to
make the LLM "hear" what the text told it. Per clip we ask the "What can you hear?" family and
a few instructions sampled from the shared template pool (`speech_adapter.templates`, `seen`
split only: `unseen` phrasings are kept out of training to measure generalisation).

Selective self-rehearsal (self-output filtering): where an answer can be checked, the first
answer is greedy and up to k-1 seeded samples follow; the first answer that passes is kept,
otherwise the row is rejected with structured reasons.

The parts, in data-flow order:
    config  DistillConfig
    plan    plan_clip (which seen templates a clip is asked), batch order        (pure)
    judge   degenerate / contradiction / label checks of one answer              (pure)
    ssr     WorkItem and the retry loop over a batch (greedy, samples, scored choice)
    stats   distill_stats.json from the rows' and rejects' structured fields
    driver  distill(): plan, run, append rows and rejects, write the stats
"""

from data_prep.distill.config import DistillConfig
from data_prep.distill.driver import distill
from data_prep.distill.judge import contradiction_reason, degenerate_reason, judge, trim_cut_off
from data_prep.distill.plan import plan_clip
from data_prep.distill.ssr import WorkItem, choice_reply, run_batch
from data_prep.distill.stats import STAGE, STATS_NAME, format_table, stats_from_files

__all__ = ["DistillConfig", "distill", "contradiction_reason", "degenerate_reason", "judge", "trim_cut_off",
           "plan_clip", "WorkItem", "choice_reply", "run_batch", "STAGE", "STATS_NAME", "format_table",
           "stats_from_files"]
