# netclaim driver image: the binary on a small, date-pinned Debian base, nothing else.
#
#   docker build -t netclaim:dev .
#
# The install (deploy/install.yaml, rendered from the kustomize base examples/install/)
# names the image once, in examples/install/kustomization.yaml `images:`; point it at
# where you push this build.
#
# The binary speaks netlink, gRPC and NRI itself and uses rustls: it needs no `ip` and no
# OpenSSL. It runs `nsenter` (util-linux, named explicitly though the base has it) and `ethtool` for the claim's
# `ethtoolFeatures` (the Rust ethtool netlink crate cannot set features). The Debian CNI
# plugins are a fallback for CNI-mode claims on nodes that ship none in /opt/cni/bin.
# At run time (examples/install/daemonset.yaml) the container needs:
#   - hostNetwork: true           (to see the node's NICs and its default route)
#   - privileged: true            (netlink, setns into pod netns, and per-interface sysctls
#                                  under /proc/sys, which is read-only otherwise)
#   - host mounts: /var/lib/kubelet/plugins_registry and /var/lib/kubelet/plugins (sockets
#     and checkpoint), /var/run/nri (the NRI socket), /var/run/netns with HostToContainer
#     propagation (pod netns files), /sys read-only (PCI, NUMA, SR-IOV, RDMA facts),
#     /opt/cni/bin read-only and /var/lib/cni (CNI mode: plugins and their state).
# Pinned to the same Debian snapshot date as the build base; bump both together.

FROM docker.io/library/rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p netclaim --bin netclaim

FROM docker.io/library/debian:bookworm-20250520-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ethtool util-linux containernetworking-plugins \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/netclaim /usr/bin/netclaim
ENTRYPOINT ["/usr/bin/netclaim"]
CMD ["run"]
