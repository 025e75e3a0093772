"""Scale-out: TF_CONFIG parsing, and two real workers on 127.0.0.1 (two processes, CPU) that
train one model as good as a single-worker run, with only the chief writing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from edgecls.errors import EdgeclsError
from edgecls.train.distribute import ClusterTask, cluster_task


def test_no_tf_config_is_one_chief_worker():
    assert cluster_task({}) == ClusterTask(1, "worker", 0)
    assert cluster_task({}).is_chief


def test_tf_config_worker_zero_is_chief_unless_a_chief_is_named():
    two = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}

    def task(i: int) -> ClusterTask:
        return cluster_task(
            {"TF_CONFIG": json.dumps({**two, "task": {"type": "worker", "index": i}})}
        )

    first, second = task(0), task(1)
    assert (first.workers, first.is_chief, second.is_chief) == (2, True, False)
    with_chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2"]}}
    w0 = cluster_task({"TF_CONFIG": json.dumps({**with_chief, "task": {"type": "worker"}})})
    chief = cluster_task({"TF_CONFIG": json.dumps({**with_chief, "task": {"type": "chief"}})})
    assert (w0.workers, w0.is_chief, chief.is_chief) == (2, False, True)


@pytest.mark.parametrize("raw", ["{not json", '{"task": {"type": "worker"}}', '{"cluster": {}}'])
def test_bad_tf_config_is_one_line(raw):
    with pytest.raises(EdgeclsError, match="TF_CONFIG"):
        cluster_task({"TF_CONFIG": raw})


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train_cmd(data, out, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgecls",
        "train",
        "--data",
        str(data),
        "--img-size",
        "32",
        "--epochs",
        "6",
        "--batch-size",
        "32",
        "--no-augment",
        "--seed",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_two_workers_on_localhost_train_as_well_as_one(insects_data, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "multi"
    procs = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        procs.append(
            subprocess.Popen(
                _train_cmd(insects_data, out, "--strategy", "multi-worker"),
                env={**env, "TF_CONFIG": json.dumps(tf_config)},
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    single = subprocess.run(
        _train_cmd(insects_data, tmp_path / "single", "--strategy", "one"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
    assert single.returncode == 0, single.stdout + single.stderr
    assert "not the chief" in outputs[1]
    multi = json.loads((out / "metrics.json").read_text())
    one = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert multi["learned"] and multi["accuracy"] >= one["accuracy"] - 0.1, (multi, one)
    assert json.loads((out / "config.json").read_text())["strategy"] == "multi-worker"
    # only the chief wrote: the run folder and nothing else beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi", "single"]
