#!/usr/bin/env bash
# One entrypoint for every target.
#   SageMaker runs `docker run <image> train`: train this host's share of the job.
#   AWS Batch and Kubernetes (Metaflow) pass their own command: run it as it is.
set -euo pipefail

base="${SAGEMAKER_BASE_DIR:-/opt/ml}"
if [[ "${1:-}" == "train" ]]; then
    # The job's `code` channel carries the submitting run's steps/ and configs/; put first
    # on the path, it takes precedence over the copy installed in the image.
    code="${SM_CHANNEL_CODE:-${base}/input/data/code}"
    if [[ -d "${code}/steps" ]]; then
        export PYTHONPATH="${code}${PYTHONPATH:+:${PYTHONPATH}}"
    fi
    exec "${PYTHON:-python}" -m steps.dispatch.container
fi
exec "$@"
