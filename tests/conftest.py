"""Shared fixtures: the running local stack and its connection settings.

Tests marked ``services`` talk to the real Kafka, ElasticMQ and PostgreSQL
started by ``maskstream stack up`` (``make test`` does that first). If the
stack is not running, those tests fail with an explanation rather than skip:
a skipped integration test must never pass for a green run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.devstack.envfile import read_env_file
from tests.support.sandbox import IsolatedPipeline

REPO_ROOT = Path(__file__).resolve().parent.parent


def _stack_dir() -> Path:
    return Path(os.environ.get("MASKSTREAM_STACK_DIR", REPO_ROOT / ".stack"))


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The variables of ``.stack/env``; fails if the stack was never started."""
    env_file = _stack_dir() / "env"
    if not env_file.exists():
        pytest.fail(
            f"{env_file} is missing: start the local stack with `maskstream stack up` "
            "(or run `make test`, which does it for you)"
        )
    return read_env_file(env_file)


@pytest.fixture(scope="session", autouse=True)
def _stack_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    """Export the stack's variables so code under test sees what a user would."""
    env_file = _stack_dir() / "env"
    if not env_file.exists():
        yield
        return
    saved = dict(os.environ)
    os.environ.update(read_env_file(env_file))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def database_url(stack_env: dict[str, str]) -> str:
    return stack_env["DATABASE_URL"]


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def sqs_endpoint(stack_env: dict[str, str]) -> str:
    return stack_env["AWS_ENDPOINT_URL_SQS"]


@pytest.fixture
def pipeline(stack_env: dict[str, str], tmp_path: Path) -> Iterator[IsolatedPipeline]:
    """An isolated pipeline (own database, topics, consumer group) on the stack."""
    with IsolatedPipeline(stack_env, tmp_path) as pipe:
        yield pipe
