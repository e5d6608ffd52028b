#!/usr/bin/env bash
# Create a kind cluster with everything a FraudDetector needs, then run one on synthetic traffic:
#   kind cluster (kind-config.yaml) -> our images built and loaded -> Redpanda (Kafka API),
#   kube-prometheus-stack, KEDA -> our chart (values-kind.yaml) -> a model served in-cluster ->
#   examples/canary.yaml -> the synthetic producer.
# Needs: docker (a running engine), kind, kubectl, helm. Not runnable without a container engine.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=fraud-detector
need() { command -v "$1" >/dev/null || { echo "kind-up needs $1 on PATH" >&2; exit 2; }; }
need docker; need kind; need kubectl; need helm
docker info >/dev/null 2>&1 || { echo "kind-up needs a running docker engine" >&2; exit 2; }

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config kind-config.yaml --wait 120s

scripts/build-images.sh scorer tools operator  # the node tier builds the same way (buildah)
kind load docker-image --name "$CLUSTER" \
  fraud-detector/scorer:dev fraud-detector/tools:dev fraud-detector/operator:dev

helm repo add redpanda https://charts.redpanda.com >/dev/null
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm repo add kedacore https://kedacore.github.io/charts >/dev/null
helm repo update >/dev/null
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  -n monitoring --create-namespace --wait --timeout 10m
helm upgrade --install keda kedacore/keda -n keda --create-namespace --wait
helm upgrade --install redpanda redpanda/redpanda -n kafka --create-namespace --wait --timeout 10m \
  --set statefulset.replicas=1 --set tls.enabled=false --set external.enabled=false

helm upgrade --install fraud-detector charts/fraud-detector -n fraud-system --create-namespace \
  -f charts/fraud-detector/values-kind.yaml --wait

# A freshly trained model, served to the scorers' init containers from inside the cluster.
make -s venv
.venv/bin/fraud-train generate build/kind-tx.parquet --users 20000 --days 7
.venv/bin/fraud-train fit build/kind-tx.parquet --out build/kind-fit
DIGEST=$(.venv/bin/fraud-train export build/kind-fit --out build/kind-model --version kind-1)
kubectl create namespace shop --dry-run=client -o yaml | kubectl apply -f -
kubectl -n shop create configmap model-kind-1 --from-file=build/kind-model --dry-run=client -o yaml | kubectl apply -f -
kubectl -n shop apply -f examples/kind-model-server.yaml
sed -E "s/digest: sha256:[0-9a-f]{64}/digest: $DIGEST/" examples/canary.yaml | kubectl -n shop apply -f -

kubectl -n shop delete pod producer --ignore-not-found
kubectl -n shop run producer --image=fraud-detector/tools:dev --image-pull-policy=Never \
  --restart=Never --command -- fraud-produce --bootstrap redpanda.kafka:9093 \
  --topic transactions --rate 200 --loop
kubectl get fd -A
echo "Grafana: kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80"
