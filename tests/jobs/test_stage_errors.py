"""A stage that fails inside Ray is reported as `stage 'NAME' failed: Type: <the exception's own message>`, for an
exception raised in a Ray Data UDF, in an actor and in a Ray Train worker: never the traceback text Ray wraps
around it, nor the source line that raised it (issue 15 item 3 saw `...after {attempt + 1} attempt(s)...`)."""

import sys
from types import SimpleNamespace

import pytest
import ray
import ray.cloudpickle

from actors.teacher_client import TeacherUnavailable
from distill_ray.errors import StageFailed
from jobs.stage import LIGHT, StageEnv

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module

ATTEMPTS = 3
MESSAGE = f"teacher unreachable after {ATTEMPTS} attempt(s): ConnectionError: refused"


def _down(*_):
    # An f-string on purpose: a report showing this source line would show "{ATTEMPTS}", not "3".
    raise TeacherUnavailable(f"teacher unreachable after {ATTEMPTS} attempt(s): ConnectionError: refused")


class Replica:
    def answer(self):
        _down()


def _in_a_data_udf(job, env):
    ray.data.range(4).map_batches(_down, **LIGHT).materialize()


def _in_an_actor(job, env):
    replica = ray.remote(num_cpus=0)(Replica).remote()
    ray.get(replica.answer.remote())


def _in_a_train_worker(job, env):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    scaling = ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.25})
    TorchTrainer(_down, scaling_config=scaling, run_config=RunConfig(storage_path=env.ray.storage_path,
                                                                     name="fails")).fit()  # fmt: skip


@pytest.mark.parametrize("where", [_in_a_data_udf, _in_an_actor, _in_a_train_worker])
def test_the_console_line_is_the_exceptions_own_message(where, tmp_path, ray_cluster, monkeypatch):
    from jobs import job_types, runner

    monkeypatch.setitem(job_types.JOB_TYPES, "generate", where)
    env = StageEnv("generate", tmp_path, tmp_path / "rejected", ray_cluster)
    with pytest.raises(StageFailed) as failed:
        runner._run_stage(SimpleNamespace(job_type="generate"), env)
    assert str(failed.value) == f"stage 'generate' failed: TeacherUnavailable: {MESSAGE}"
