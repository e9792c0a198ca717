"""The test run's own isolation (conftest.py): every cache the code writes points into the run's
temporary directory, in this process and in the Ray workers. (That nothing was written under the
user's own cache all the same is checked by conftest.py at the end of the run.)"""

from __future__ import annotations

import os
from pathlib import Path

from workers.models.build import cache_dir


def _inside_tests_tmp(path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(os.environ["INFER_ORCH_TESTS_TMP"]).resolve())


def test_caches_point_into_the_runs_temporary_directory():
    assert _inside_tests_tmp(cache_dir())
    home_cache = Path.home() / ".cache"
    assert not Path(cache_dir()).resolve().is_relative_to(home_cache.resolve())
    for var in ("XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert _inside_tests_tmp(os.environ[var]), var


def test_ray_workers_use_the_same_cache(ray_gpus):
    @ray_gpus.remote(num_cpus=0)
    def where() -> tuple[str, str]:
        from workers.models.build import cache_dir

        return str(cache_dir()), os.environ.get("XDG_CACHE_HOME", "")

    assert ray_gpus.get(where.remote()) == (str(cache_dir()), os.environ["XDG_CACHE_HOME"])
