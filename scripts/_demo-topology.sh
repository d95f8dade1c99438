# shellcheck shell=bash
# The demo's cluster in network namespaces, sourced by scripts/demo.sh. Addresses are those of
# the example manifests (examples/demo):
#
#   ${P}client  veth0 192.168.50.1/24 ── veth0 192.168.50.2/24  ${P}node  (node-1; kpr's device)
#                                        vpa ── 10.244.1.10  ${P}pod-a     (my-nginx)
#                                        vpb ── 10.244.1.11  ${P}pod-b     (my-nginx)
#                                        vpe ── 10.244.1.20  ${P}echo      (echo)
#                                        vpd ── 10.244.1.30  ${P}dns-echo  (dns-echo)
#
# Pods are routed, not bridged: the node holds 10.244.1.1/32 on each pod link and a /32 route per
# pod; each pod's default route points at 10.244.1.1 (on-link), as a routed CNI sets it up.
# Interfaces are created inside their namespaces only, so nothing on the host network changes.

# Pods: "short-name node-side-interface address".
DEMO_PODS=(
  "pod-a vpa 10.244.1.10"
  "pod-b vpb 10.244.1.11"
  "echo vpe 10.244.1.20"
  "dns-echo vpd 10.244.1.30"
)

# demo_namespaces PREFIX: every namespace name of the topology, one per line.
demo_namespaces() {
  local pod
  printf '%s\n' "$1client" "$1node"
  for pod in "${DEMO_PODS[@]}"; do printf '%s%s\n' "$1" "${pod%% *}"; done
}

# demo_topology_down PREFIX: kills the namespaces' processes and deletes them (idempotent).
demo_topology_down() {
  local ns pids
  for ns in $(demo_namespaces "$1"); do
    [ -e "/run/netns/$ns" ] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
  done
  return 0
}

# demo_topology_up PREFIX: creates the namespaces and links (after demo_topology_down).
demo_topology_up() {
  local p=$1 ns pod name nodeif addr
  for ns in $(demo_namespaces "$p"); do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  local client=${p}client node=${p}node
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
  ip link add veth0 netns "$client" type veth peer name veth0 netns "$node"
  ip -n "$client" addr add 192.168.50.1/24 dev veth0
  ip -n "$client" link set veth0 up
  ip -n "$node" addr add 192.168.50.2/24 dev veth0
  ip -n "$node" link set veth0 up
  for pod in "${DEMO_PODS[@]}"; do
    read -r name nodeif addr <<<"$pod"
    ns=$p$name
    ip link add "$nodeif" netns "$node" type veth peer name pod0 netns "$ns"
    ip -n "$node" addr add 10.244.1.1/32 dev "$nodeif"
    ip -n "$node" link set "$nodeif" up
    ip -n "$node" route add "$addr/32" dev "$nodeif"
    ip -n "$ns" addr add "$addr/32" dev pod0
    ip -n "$ns" link set pod0 up
    ip -n "$ns" route add 10.244.1.1/32 dev pod0 scope link
    ip -n "$ns" route add default via 10.244.1.1 dev pod0
  done
}
