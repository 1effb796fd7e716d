"""The job service: everything a job goes through, with no transport in it.

Strategy (moby's backend behind its routers): every front door (the msgpack
socket, HTTP, a queue consumer) decodes its own wire format into a
``jobs.JobSpec``, asks this service to admit it, runs it here and encodes the
answer; the service owns the profiles, the scheduler, the pool leases and
the step runner, and counts what ``stats`` reports. A job's life:

    job = service.submit(spec, id=..., owner=..., client=...)  # admission, sync
    try:
        outcome = await service.execute(job)   # queue, containers, verdicts
        ...encode and send the outcome...
    finally:
        service.release(job)                   # destroy its used containers

Refusals and failures are one exception, ``ServiceError``, whose ``code`` is
one of the protocol's error codes, so that every front door reports them
alike. A cancelled job is not an error: its outcome is one ``cancelled``
step with the reason. This module imports no wire format, socket or web
framework (a test keeps it so); logging goes through ``sandboxd.log``,
whose set-up belongs to the daemon.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from sandboxd import egress as egress_mod
from sandboxd import jobs
from sandboxd.jobs import JobError, JobOutcome, JobSpec, StepOutcome, default_spec
from sandboxd.log import event
from sandboxd.log import log as _log
from sandboxd.pool import Pool
from sandboxd.profiles import Profile
from sandboxd.result import Result
from sandboxd.spawn import ContainerSpec
from sandboxd.workspace import WorkspaceError

from ._interactive import run_interactive_job
from ._judge import ProgramCache, run_judged
from ._judge import validate as validate_judged
from ._metrics import JobMetrics
from ._scheduler import Job, Scheduler


class ServiceError(Exception):
    """The service will not or could not run a job; ``code`` is a protocol error code.

    Refusals at admission: ``shutting_down``, ``server_busy``,
    ``unknown_profile``, ``limit_exceeded``. After admission: ``invalid_job``
    (the job cannot run as asked, found only when running it) and
    ``internal_error`` (sandboxd's own bug; the daemon lives on).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One line of ``ps``: live CPU and memory only while a step runs (and reads)."""

    ref: str
    id: str
    profile: str
    client: str
    state: str
    elapsed: float
    cpu_time: float | None
    memory: int | None


@dataclass(frozen=True, slots=True)
class PoolInfo:
    profile: str
    warm: int
    target: int


@dataclass(frozen=True, slots=True)
class Statistics:
    uptime: float
    jobs_queued: int
    jobs_running: int
    jobs_completed: int
    pools: tuple[PoolInfo, ...]
    counters: dict[str, int | float]


class JobService:
    """Admission, execution, cancellation and accounting of jobs, for every front door."""

    def __init__(self, profiles: dict[str, Profile], pool: Pool, *, concurrency: int,
                 queue_length: int, versions: dict[str, str] | None = None,
                 cpus: list[int] | None = None, caches: dict[str, str] | None = None,
                 workspace_max_files: int = 100_000, artifacts_max_files: int = 1000,
                 artifacts_max_bytes: int = 16 << 20,
                 egress: egress_mod.Policy | None = None) -> None:
        self.profiles = profiles
        # The operator's read-only cache directories (config [caches]): name -> host path.
        self.caches = dict(caches or {})
        self.ci_caps = (workspace_max_files, artifacts_max_files, artifacts_max_bytes)
        self.egress = egress or egress_mod.Policy()  # the operator's cap on jobs' network
        self.versions = versions or {}  # probed before trio by the daemon: no subprocess here
        self.pool = pool
        self.sched = Scheduler(pool, concurrency, queue_length, cpus)
        self.started = time.monotonic()
        self.draining = False
        self._named: dict[ContainerSpec, str] = {}  # pool shape -> the profile it shows as
        self._shapes: dict[tuple[str, bool], ContainerSpec] = {}  # (profile, warm) -> shape
        self.metrics = JobMetrics()  # by profile and verdict, histograms: for /metrics
        self.programs = ProgramCache()  # checkers and generators built, by content hash

    async def run(self, warm: list[str], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool warm for the profiles ``warm`` names until cancelled.

        ``task_status.started()`` once every warm shape has its containers, so a
        daemon accepts jobs only then.

        Cancellation: the pool is emptied (every waiting container destroyed).
        """
        shapes = [self._shape(self.profiles[name]) for name in warm
                  if name in self.profiles and not self.profiles[name].unavailable]
        await self.pool.run(shapes, task_status=task_status)

    # -- profiles ---------------------------------------------------------

    def _shape(self, profile: Profile, warm: bool = True) -> ContainerSpec:
        """The pool shape of ``profile``'s default limits, remembering who first used it.

        Profiles whose defaults make the same container share a pool (bash, perl and
        lua do); ``stats`` names it after the first profile that asked for it (the
        configured warm ones first), not whichever comes first in the profile list.
        """
        key = (profile.name, warm)
        shape = self._shapes.get(key)
        if shape is None:  # once per profile: a warm profile's shape costs ~4 us to build
            shape = self._shapes[key] = default_spec(profile, warm)
            plain = not warm and profile.warm_runtime  # a warm profile's plain starts
            self._named.setdefault(shape, f"{profile.name}+plain" if plain else profile.name)
        return shape

    def profile(self, name: str) -> Profile:
        """The profile ``name``, available here; else ``ServiceError(unknown_profile)``."""
        profile = self.profiles.get(name)
        if profile is None:
            raise ServiceError("unknown_profile", f"no profile {name!r} (known: "
                               f"{', '.join(sorted(self.profiles))})")
        if profile.unavailable:
            raise ServiceError("unknown_profile", f"profile {profile.name!r} is unavailable "
                               f"here: {profile.unavailable}")
        return profile

    # -- a job's life -----------------------------------------------------

    def submit(self, spec: JobSpec, *, id: str, owner: str, client: str) -> Job:
        """Admit ``spec``, or refuse it with a ``ServiceError``; nothing runs yet.

        ``owner`` names the submitter (a connection, a token, a node) so that
        ``ref`` = ``owner/id`` is unique in the daemon; ``client`` is what
        ``ps`` shows.
        """
        sched = self.sched
        if self.draining:
            raise ServiceError("shutting_down", "the server is shutting down")
        if not sched.admit():
            sched.busy_refusals += 1
            raise ServiceError("server_busy", f"the queue is full ({sched.queue_length} jobs "
                               "waiting); retry later")
        if spec.profile.unavailable:
            raise ServiceError("unknown_profile", f"profile {spec.profile.name!r} is "
                               f"unavailable here: {spec.profile.unavailable}")
        self._resolve_caches(spec)
        try:
            jobs.validate(spec)
        except JobError as e:
            raise ServiceError(e.code, str(e)) from None
        if spec.judged_by_programs:
            try:
                validate_judged(spec)
            except JobError as e:
                raise ServiceError("invalid_job", str(e)) from None
        try:
            egress_mod.permit(spec.network(), self.egress.allow)
        except egress_mod.EgressError as e:
            raise ServiceError("invalid_job", str(e)) from None
        spec.egress_hosts = self.egress.hosts
        ref = f"{owner}/{id}"
        if ref in sched.jobs:
            raise ServiceError("duplicate_job", f"job {id!r} is already in flight")
        job = Job(ref=ref, id=id, profile=spec.profile.name, client=client, spec=spec)
        sched.jobs[ref] = job
        shape = self._shape(spec.profile)
        self.pool.ensure(shape)
        if shape.warm is not None and jobs.plain_starts(spec):
            self.pool.ensure(self._shape(spec.profile, warm=False))  # its plain starts too
        for program in ([spec.checker] if spec.checker else []) + spec.generators:
            self.pool.ensure(self._shape(program.profile, warm=False))  # runs take argv
        if spec.interactor is not None:  # both sides of a wired test start plainly
            self.pool.ensure(self._shape(spec.profile, warm=False))
            self.pool.ensure(self._shape(spec.interactor.profile, warm=False))
        return job

    def _resolve_caches(self, spec: JobSpec) -> None:
        """The profile's and the job's cache names as read-only binds at /cache/<name>;
        ``ServiceError(invalid_job)`` for a name the operator did not declare."""
        names = dict.fromkeys([*spec.profile.caches, *spec.caches])
        binds = []
        for name in names:
            host = self.caches.get(name)
            if host is None:
                known = ", ".join(sorted(self.caches)) or "none are configured"
                raise ServiceError("invalid_job", f"unknown cache {name!r} (known: {known})")
            binds.append((host, f"/cache/{name}"))
        spec.cache_binds = tuple(binds)
        (spec.workspace_max_files, spec.artifacts_max_files,
         spec.artifacts_max_bytes) = self.ci_caps

    async def execute(self, job: Job) -> JobOutcome:
        """Run an admitted job to its outcome; ``ServiceError`` if it could not run.

        A job cancelled through ``job.cancel`` (or ``kill``) returns an outcome of
        one ``cancelled`` step with the reason.

        Cancellation: from outside (the submitter went away), its containers are
        killed on the way out and the job leaves ``ps``; call ``release`` still.
        """
        outcome: JobOutcome | None = None
        try:
            with job.scope:
                runner = self.sched.runner(job)
                if job.spec.judged_by_programs:  # batches or generators, wired tests too
                    pair = (self.sched.pair_runner(job) if job.spec.interactor is not None
                            else None)
                    outcome = await run_judged(job.spec, runner, self.programs, pair)
                elif job.spec.interactor is not None:
                    outcome = await run_interactive_job(job.spec, runner,
                                                        self.sched.pair_runner(job))
                else:
                    outcome = await jobs.run_job(job.spec, runner)
        except (JobError, WorkspaceError) as e:
            raise ServiceError("invalid_job", str(e)) from None
        except ExceptionGroup as eg:  # a run step's, from run_job's nursery
            rule, rest = eg.split((JobError, WorkspaceError))
            if rule is None or rest is not None:
                event("job_crashed", logging.ERROR, job=job.ref, error=repr(eg))
                raise ServiceError("internal_error", f"{eg!r}") from eg
            raise ServiceError("invalid_job", str(rule.exceptions[0])) from None
        except Exception as e:  # our bug: the job gets a typed error, the daemon lives on
            event("job_crashed", logging.ERROR, job=job.ref, error=repr(e))
            raise ServiceError("internal_error", f"{type(e).__name__}: {e}") from e
        finally:
            self.sched.jobs.pop(job.ref, None)
        if outcome is None:
            outcome = JobOutcome(None, [StepOutcome(Result.without_run(
                "cancelled", job.cancel_reason or "cancelled"))])
        self._account(job, outcome)
        return outcome

    def release(self, job: Job) -> None:
        """Destroy the containers ``job`` used (in the background). Idempotent."""
        job.release(self.pool)

    def _account(self, job: Job, outcome: JobOutcome) -> None:
        sched = self.sched
        steps = [s.result for s in outcome.steps]
        for r in steps:
            sched.verdicts[r.verdict] += 1
        if outcome.compile is not None and outcome.compile.result.verdict != "ok":
            sched.verdicts[outcome.compile.result.verdict] += 1
        sched.completed += 1
        elapsed = time.monotonic() - job.submitted
        self.metrics.record(job.profile, outcome, job.queue_wait, elapsed - job.queue_wait)
        if not _log.isEnabledFor(logging.INFO):
            return  # the line's fields cost ~10 us per job to gather: not for nothing
        first = steps[0] if steps else (outcome.compile.result if outcome.compile else None)
        event("job", job=job.ref, client=job.client, profile=job.profile,
              verdict=first.verdict if first else "?", steps=len(steps),
              cpu=sum(r.cpu_time for r in steps), wall=sum(r.wall_time for r in steps),
              memory=max((r.memory_peak for r in steps), default=0),
              queue_wait=job.queue_wait,
              warm=sum(1 for c in job.used if c.warm is not None))  # steps a warm runtime ran

    # -- what runs --------------------------------------------------------

    def ps(self) -> list[JobInfo]:
        now = time.monotonic()
        infos = []
        for j in self.sched.jobs.values():
            cpu = memory = None
            if j.container is not None:  # running: live readings (none if the read fails)
                try:
                    cpu, memory = j.container.live_usage()
                except Exception:
                    pass
            infos.append(JobInfo(ref=j.ref, id=j.id, profile=j.profile, client=j.client,
                                 state=j.state, elapsed=now - j.submitted, cpu_time=cpu,
                                 memory=memory))
        return infos

    def kill(self, ref: str) -> bool:
        """End job ``ref`` of any submitter; its submitter gets ``cancelled``."""
        job = self.sched.jobs.get(ref)
        if job is None:
            return False
        job.cancel("killed by sandboxctl kill")
        return True

    @property
    def in_flight(self) -> int:
        return len(self.sched.jobs)

    async def drain(self, grace: float) -> None:
        """Refuse new jobs; wait up to ``grace`` seconds for those admitted to end."""
        self.draining = True
        with trio.move_on_after(grace):
            while self.sched.jobs:
                await trio.sleep(0.02)

    def statistics(self) -> Statistics:
        sched = self.sched
        waits = sorted(sched.queue_waits)

        def pct(q: float) -> float:
            return waits[min(len(waits) - 1, int(q * len(waits)))] if waits else 0.0

        c = self.pool.counters
        counters: dict[str, int | float] = {
            f"verdict_{k}": v for k, v in sched.verdicts.items()}
        counters.update(
            pool_hits=c.hits, pool_misses=c.misses, containers_created=c.created,
            containers_destroyed=c.destroyed, spawn_failures=c.spawn_failures,
            cgroups_recycled=c.cgroups_recycled, cgroups=self.pool.cgroup_count(),
            containers_remade_by_engine=c.engine_recycles,
            jobs_watched_by_engine=c.engine_runs,
            containers_recycled_at_job_end=c.engine_run_recycles,
            busy_refusals=sched.busy_refusals, compiles=sched.compiles,
            pinned_steps=sched.pinned_steps,
            programs_cached=len(self.programs), program_cache_hits=self.programs.hits,
            program_cache_misses=self.programs.misses,
            refill_mean_s=(c.refill_seconds / c.refills) if c.refills else 0.0,
            queue_wait_p50_s=pct(0.5), queue_wait_p90_s=pct(0.9), queue_wait_p99_s=pct(0.99),
        )
        pools = []
        for spec, warm, target in self.pool.shapes():
            name = self._named.get(spec, "custom")
            pools.append(PoolInfo(profile=name, warm=warm, target=target))
        return Statistics(uptime=time.monotonic() - self.started, jobs_queued=sched.queued,
                          jobs_running=sched.running, jobs_completed=sched.completed,
                          pools=tuple(pools), counters=counters)
