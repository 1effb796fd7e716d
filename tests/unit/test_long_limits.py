"""Long CI jobs (issue 19): hours of wall and CPU time only where a profile permits."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd import jobs
from sandboxd.jobs import JobSpec
from sandboxd.profiles import ProfileError, load_dir
from sandboxd_protocol import JobLimits

CI = """name = "ci"
run = ["/bin/bash", "{entry}"]
entry = "ci.sh"
limits = { wall_time = 600 }
max_limits = { wall_time = 14400, cpu_time = 7200, memory = "4G", pids = 1024 }
"""


def test_a_profile_may_allow_hours(tmp_path: Path) -> None:
    (tmp_path / "ci.toml").write_text(CI)
    ci = load_dir(tmp_path)["ci"]
    assert ci.max_limits.wall_time == 14400
    jobs.validate(JobSpec(profile=ci, files={}, limits=JobLimits(wall_time=3 * 3600.0,
                                                                 cpu_time=7200.0)))
    with pytest.raises(jobs.JobError, match="wall_time"):
        jobs.validate(JobSpec(profile=ci, files={}, limits=JobLimits(wall_time=5 * 3600.0)))


def test_the_shipped_profiles_keep_their_ceiling() -> None:
    bash = load_dir()["bash"]
    with pytest.raises(jobs.JobError, match="wall_time"):
        jobs.validate(JobSpec(profile=bash, files={}, limits=JobLimits(wall_time=3600.0)))


def test_not_past_a_day(tmp_path: Path) -> None:
    (tmp_path / "ci.toml").write_text(CI.replace("14400", "200000"))
    with pytest.raises(ProfileError, match="wall_time"):
        load_dir(tmp_path)
