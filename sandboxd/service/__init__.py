"""The job service: admission, scheduling, pool leases, steps, verdicts and stats.

Every front door (``sandboxd.front``) is an adapter over ``JobService``; none
has job logic of its own and none imports another. docs/architecture.md
draws the rooms.
"""

from ._metrics import Histogram, JobMetrics
from ._scheduler import CpuAllocator, Job, Scheduler
from ._service import JobInfo, JobService, PoolInfo, ServiceError, Statistics

__all__ = ["CpuAllocator", "Histogram", "Job", "JobInfo", "JobMetrics", "JobService",
           "PoolInfo", "Scheduler", "ServiceError", "Statistics"]
