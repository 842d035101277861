#!/usr/bin/env bash
# The wheels bench/bench_gpu_study.py needs on a GPU machine that has torch, torchvision, transformers,
# timm, accelerate, numpy, pillow, pyyaml, rich, scikit-learn, scipy, pandas, matplotlib, jinja2,
# safetensors, huggingface_hub, psutil and nvidia-ml-py, but no package index and no diffusers, MLflow or
# pydantic. Downloads into .whl/ (ignored by git) exactly what is missing there, for CPython 3.12 on
# x86-64 Linux, at the versions pyproject.toml pins (its dependencies' own needs: the versions
# `make setup` resolves here). Run from the repository root: bash bench/gpu_wheels.sh
#
# On the GPU machine, first (PYTHONPATH: the wheels, then this checkout's code):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
#
# What is left out, and why it may be: DVC and Optuna (no stage the check runs imports them: tune is off
# in the study preset, and `synthmix tune --if-enabled` returns before importing Optuna); the full
# `mlflow` wheel (its web UI, 27 MB, and the server's needs: Flask, gunicorn, graphene, docker, ...):
# `mlflow-skinny` is the same Python package without them, and with SQLAlchemy and Alembic it keeps the
# default sqlite:///mlflow.db store the stages log to; mlflow-tracing (mlflow-skinny does not need
# it); uvicorn and google-auth (serving, and signing in to Databricks). FastAPI, databricks-sdk and
# cryptography are in because `import mlflow` needs them even here: mlflow.gateway imports FastAPI, a
# scorer module looks for `databricks.agents` (an error without the `databricks` package), and the SQL
# store's model-registry tables import cryptography. Checked by installing exactly these into a fresh
# Python 3.12 venv holding only the GPU machine's packages and running the bench's smoke command there.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    # the config: pydantic and its needs
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    # generation
    diffusers==0.42.1 importlib-metadata==9.1.0
    # tracking: MLflow's Python package and what it imports to log runs to a SQLite store
    mlflow-skinny==3.17.2 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 sqlparse==0.6.1
    cachetools==7.3.3 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
    opentelemetry-semantic-conventions==0.66b2 gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3
    python-dotenv==1.2.4 fastapi==0.165.0 starlette==1.10.0 databricks-sdk==0.167.0
    cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
    # the CLI imports typer's vendored click (typer._click, 0.29): an older typer there would not do
    typer==0.29.2
)

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done

rm -rf .whl
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
du -ch .whl/*.whl | tail -1
