#!/usr/bin/env bash
# Installs what the node-level tests of netclaim need on a Debian bookworm machine (as root):
#
#   * from bookworm (the system's own apt sources): runc, containernetworking-plugins (CNI
#     binaries in /usr/lib/cni), iproute2, ethtool, gcc, ping -- only the ones that are missing;
#   * containerd 1.7.24 (NRI capable) from Debian trixie, fetched with `apt-get download`
#     using a private sources file and private apt state, then unpacked with `dpkg -x` into
#     /opt/netclaim-deps/containerd. Nothing of the system's apt state or its containerd
#     (if any) is touched: trixie never appears in the system's sources.
#
# Idempotent: when everything is present it only checks and prints, in well under a second.
# Exit status is non-zero, with a message naming the step, on any failure.
#
# Why bookworm's runc: trixie's runc needs glibc 2.38; containerd is pointed at
# /usr/sbin/runc through the runc runtime's BinaryName option (see test/src/containerd.rs).
set -euo pipefail

PREFIX=${NETCLAIM_DEPS_PREFIX:-/opt/netclaim-deps}
CONTAINERD_PREFIX="$PREFIX/containerd"
CONTAINERD_WANT=${NETCLAIM_CONTAINERD_VERSION:-1.7.24}

say() { printf 'install-deps: %s\n' "$*"; }
die() {
	printf 'install-deps: error: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages)"
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
	die "apt-get and dpkg are required (Debian bookworm expected)"

# --- 1. bookworm packages ------------------------------------------------------------------
# package name -> a file whose presence proves the package's part we use is installed.
declare -A probe=(
	[runc]=/usr/sbin/runc
	[containernetworking-plugins]=/usr/lib/cni/bridge
	[iproute2]=/usr/sbin/ip
	[ethtool]=/usr/sbin/ethtool
	[gcc]=/usr/bin/gcc
	[iputils-ping]=/usr/bin/ping
)
missing=()
for pkg in runc containernetworking-plugins iproute2 ethtool gcc iputils-ping; do
	if [ -x "${probe[$pkg]}" ]; then
		say "$pkg: present (${probe[$pkg]})"
	else
		missing+=("$pkg")
	fi
done
# gcc -static needs the static libc archive (libc6-dev, normally pulled in by gcc).
if [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ] && [ ! -e "/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo none)/libc.a" ]; then
	missing+=(libc6-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
	say "installing from the system's apt sources: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 update -q ||
		die "apt-get update failed"
	apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
	for pkg in "${missing[@]}"; do
		if [ -n "${probe[$pkg]:-}" ] && [ ! -x "${probe[$pkg]}" ]; then
			die "$pkg was installed but ${probe[$pkg]} is still missing"
		fi
	done
	say "installed: ${missing[*]}"
fi

# --- 2. containerd from trixie, private prefix ---------------------------------------------
containerd_version() {
	"$CONTAINERD_PREFIX/usr/bin/containerd" --version 2>/dev/null | awk '{print $3}'
}

have=$(containerd_version || true)
if [ -n "$have" ] && [[ "$have" == "$CONTAINERD_WANT"* ]]; then
	say "containerd $have: present ($CONTAINERD_PREFIX/usr/bin)"
	exit 0
fi
[ -z "$have" ] || say "containerd in $CONTAINERD_PREFIX is '$have', want $CONTAINERD_WANT: replacing it"

# The mirror host the machine already uses for Debian (deb822 `URIs:` or one-line `deb`).
mirror=$(
	{
		grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i=2;i<=NF;i++) print $i}'
		grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
			sed -E 's/\[[^]]*\]//' | awk '{print $2}'
	} | grep -E '/debian/?$' | head -n1
) || true
mirror=${mirror%/}
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
say "fetching containerd from trixie on $mirror (private apt state)"

work=$(mktemp -d /tmp/netclaim-deps.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/download" "$work/etc"
: >"$work/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring missing (package debian-archive-keyring)"
echo "deb [signed-by=$keyring] $mirror trixie main" >"$work/etc/sources.list"

apt_private=(
	-o "Dir::Etc::sourcelist=$work/etc/sources.list"
	-o "Dir::Etc::sourceparts=-"
	-o "Dir::State::Lists=$work/lists"
	-o "Dir::State::status=$work/status"
	-o "Dir::Cache=$work/cache"
	-o "APT::Sandbox::User=root"
	-o "Acquire::Languages=none"
)
apt-get "${apt_private[@]}" update -q >"$work/update.log" 2>&1 || {
	cat "$work/update.log" >&2
	die "apt-get update of the private trixie sources failed"
}

# Prefer exactly the wanted upstream version; fall back to trixie's current containerd.
version=$(apt-cache "${apt_private[@]}" madison containerd |
	awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -E "^${CONTAINERD_WANT//./\\.}([~+-]|$)" | head -n1 || true)
if [ -z "$version" ]; then
	version=$(apt-cache "${apt_private[@]}" madison containerd | awk -F'|' '{gsub(/ /,"",$2); print $2}' | head -n1)
	[ -n "$version" ] || die "trixie has no containerd package"
	say "warning: containerd $CONTAINERD_WANT not in trixie; taking $version"
fi
(cd "$work/download" && apt-get "${apt_private[@]}" download -q "containerd=$version") ||
	die "apt-get download containerd=$version failed"
deb=$(ls "$work/download"/containerd_*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "apt-get download produced no containerd .deb"

# Unpack next to the target, then swap it in so a failure never leaves half a prefix.
mkdir -p "$PREFIX"
stage=$(mktemp -d "$PREFIX/.containerd.XXXXXX")
dpkg -x "$deb" "$stage" || {
	rm -rf "$stage"
	die "dpkg -x $deb failed"
}
got=$("$stage/usr/bin/containerd" --version 2>/dev/null | awk '{print $3}') || true
if [ -z "$got" ]; then
	rm -rf "$stage"
	die "the unpacked containerd does not run on this machine"
fi
rm -rf "$CONTAINERD_PREFIX.old"
[ -e "$CONTAINERD_PREFIX" ] && mv "$CONTAINERD_PREFIX" "$CONTAINERD_PREFIX.old"
mv "$stage" "$CONTAINERD_PREFIX"
chmod 0755 "$CONTAINERD_PREFIX"
rm -rf "$CONTAINERD_PREFIX.old"
say "containerd $got ($(basename "$deb")) unpacked into $CONTAINERD_PREFIX"
ls "$CONTAINERD_PREFIX/usr/bin" | sed 's/^/install-deps:   /'
