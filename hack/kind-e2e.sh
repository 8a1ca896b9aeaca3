#!/usr/bin/env bash
# End-to-end on a kind cluster (needs Docker, kind and kubectl; cannot run on the project's
# CI machines, which have no Docker engine). Creates a cluster with NRI enabled, gives the
# worker two extra veth NICs, installs netclaim from this tree and checks that pods get
# their claimed NICs configured as the claims say, in both modes (the NIC moved into the
# pod; a CNI macvlan child of it, with `netclaim check` and the network-status annotation).
#   hack/kind-e2e.sh            # create, test, delete
#   KEEP_CLUSTER=1 hack/kind-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${CLUSTER:-netclaim-e2e}
image=netclaim:e2e
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done

cleanup() { [ -n "${KEEP_CLUSTER:-}" ] || kind delete cluster --name "$cluster"; }
trap cleanup EXIT

kind create cluster --name "$cluster" --config hack/kind-config.yaml --image "${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

worker="$cluster-worker"
# Two extra NICs on the worker: veth pairs whose peers stay in the node's namespace.
for i in 1 2; do
  docker exec "$worker" ip link add "eth$i" type veth peer name "eth$i-peer"
  docker exec "$worker" ip link set "eth$i-peer" up
done

kubectl apply -f examples/install/rbac.yaml -f examples/install/deviceclass.yaml
sed -e "s#image: .*#image: $image#" \
    -e 's#!device.attributes\["netclaim.dev"\].virtual#device.attributes["netclaim.dev"].ifName.startsWith("eth")#' \
    examples/install/daemonset.yaml | kubectl apply -f -
kubectl -n kube-system rollout status ds/netclaim --timeout=120s

echo "--- published devices"
kubectl get resourceslices -o wide

kubectl apply -f examples/claims/nic-by-name.yaml
kubectl wait --for=condition=Ready pod/nic-by-name --timeout=120s

echo "--- the claimed NIC inside the pod"
pod_netns=$(docker exec "$worker" sh -c "ip netns identify \$(crictl inspectp \$(crictl pods --name nic-by-name -q) | grep -o '\"pid\": [0-9]*' | head -1 | tr -dc 0-9)")
docker exec "$worker" ip -n "$pod_netns" addr show net1 | tee /dev/stderr | grep -q '192.0.2.10/24'
echo "--- the claim's status"
kubectl get resourceclaims -o yaml | grep -A8 networkData

kubectl delete pod nic-by-name --wait
docker exec "$worker" ip link show eth1 >/dev/null

echo "--- CNI mode: a macvlan child of a published NIC, host-local address"
kubectl apply -f examples/claims/cni-macvlan.yaml
kubectl wait --for=condition=Ready pod/macvlan-client --timeout=120s
kubectl get pod macvlan-client \
  -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}' \
  | tee /dev/stderr | grep -q '"interface":"macnet0"'
kubectl get resourceclaims -o yaml | grep -A6 networkData
agent=$(kubectl -n kube-system get pod -l app.kubernetes.io/name=netclaim \
  --field-selector "spec.nodeName=$worker" -o name)
kubectl -n kube-system exec "$agent" -- netclaim check
kubectl delete pod macvlan-client --wait
# DEL ran: host-local released the lease (its files are named after the addresses).
if docker exec "$worker" sh -c 'ls /var/lib/cni/networks/macnet 2>/dev/null' | grep -q '^198\.51\.100\.'; then
  echo "kind-e2e: the macvlan's host-local lease leaked" >&2
  exit 1
fi
echo "kind-e2e: OK"
