#!/usr/bin/env bash
# Build the GPU image and push it to Amazon ECR, tagged with the hash of what goes into it.
#
#   containers/build_and_push.sh [--repository NAME] [--region REGION] [--print-tag]
#
# The tag is the first 16 hex digits of the SHA-256 of requirements.txt,
# containers/requirements.txt and containers/Dockerfile: the same dependencies give
# the same tag (and an existing tag is not rebuilt), new pins give a new image. Code
# is not part of the tag: Batch/Kubernetes steps get Metaflow's code package and
# SageMaker jobs a `code` channel with the submitting run's steps/.
# Prints the image URI to put in compute.<step>.image.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repository="tune"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}"
print_tag_only=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --repository) repository="$2"; shift 2 ;;
        --region) region="$2"; shift 2 ;;
        --print-tag) print_tag_only=1; shift ;;
        *) echo "unknown option: $1 (expected --repository, --region, --print-tag)" >&2; exit 2 ;;
    esac
done

tag="$(cat "${root}/requirements.txt" "${root}/containers/requirements.txt" "${root}/containers/Dockerfile" \
    | sha256sum | cut -c1-16)"
if [[ "${print_tag_only}" == 1 ]]; then
    echo "${tag}"
    exit 0
fi

account="$(aws sts get-caller-identity --query Account --output text)"
registry="${account}.dkr.ecr.${region}.amazonaws.com"
image="${registry}/${repository}:${tag}"

aws ecr describe-repositories --region "${region}" --repository-names "${repository}" >/dev/null 2>&1 \
    || aws ecr create-repository --region "${region}" --repository-name "${repository}" \
        --image-scanning-configuration scanOnPush=true >/dev/null
if aws ecr describe-images --region "${region}" --repository-name "${repository}" \
    --image-ids imageTag="${tag}" >/dev/null 2>&1; then
    echo "${image} exists; nothing to build" >&2
    echo "${image}"
    exit 0
fi

aws ecr get-login-password --region "${region}" | docker login --username AWS --password-stdin "${registry}"
docker build --file "${root}/containers/Dockerfile" --tag "${image}" "${root}"
docker push "${image}"
echo "${image}"
