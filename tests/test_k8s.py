"""The Kubernetes deployment's configuration: the GPU requests and the k8s_job_executor config validate."""

import pytest

dagster_k8s = pytest.importorskip("dagster_k8s")

from dagster import Definitions, define_asset_job  # noqa: E402
from dagster._core.system_config.objects import ResolvedRunConfig  # noqa: E402

from pipelines import assets  # noqa: E402
from pipelines.definitions import ALL_ASSETS, build_definitions  # noqa: E402
from pipelines.definitions_common import PER_MODEL  # noqa: E402
from pipelines.resources import EquivarConfig  # noqa: E402

#: the executor configuration documented in docs/kubernetes.md
K8S_EXECUTOR_CONFIG = {
    "job_namespace": "equivar",
    "image_pull_policy": "IfNotPresent",
    "env_config_maps": ["equivar-env"],
    "max_concurrent": 4,
}


def test_gpu_assets_request_a_gpu_in_their_pod():
    from dagster_k8s.job import get_user_defined_k8s_config

    gpu_steps = [assets.layers, assets.natural_activations, *assets.TRANSFORMED_SAMPLES, assets.tuning_tables,
                 assets.family_sweeps, assets.weight_tying, assets.circuit_weights]
    for a in gpu_steps:
        tags = a.op.tags
        config = get_user_defined_k8s_config(tags)
        assert config.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1", a.op.name
        assert a.op.pool == "gpu"
    assert "dagster-k8s/config" not in assets.families.op.tags          # CPU-only steps stay off GPU nodes


def test_k8s_job_executor_config_validates_for_the_equivar_job():
    job = define_asset_job("equivar_k8s", selection=PER_MODEL,
                           executor_def=dagster_k8s.k8s_job_executor)
    config = EquivarConfig(model="equivar_core.planted:planted")
    defs = Definitions(assets=ALL_ASSETS, jobs=[job], resources=build_definitions(config).resources)
    Definitions.validate_loadable(defs)
    resolved = ResolvedRunConfig.build(defs.resolve_job_def("equivar_k8s"),
                                       {"execution": {"config": K8S_EXECUTOR_CONFIG}})
    engine = resolved.execution.execution_engine_config
    assert engine["job_namespace"] == "equivar" and engine["max_concurrent"] == 4
    assert engine["env_config_maps"] == ["equivar-env"]
    with pytest.raises(Exception):
        ResolvedRunConfig.build(defs.resolve_job_def("equivar_k8s"),
                                {"execution": {"config": {"max_concurrent": "four"}}})
