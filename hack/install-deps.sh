#!/usr/bin/env bash
# Installs what the node-level tests of netclaim need on a Debian bookworm machine (as root):
#
#   * from bookworm (the system's own apt sources): runc, containernetworking-plugins (CNI
#     binaries in /usr/lib/cni), iproute2, ethtool, gcc, g++ (libfuzzer-sys compiles libFuzzer
#     for hack/fuzz.sh), ping -- only the ones that are missing;
#   * containerd 1.7.24 (NRI capable) from Debian trixie into /opt/netclaim-deps/containerd,
#   * containerd 2.1.9 from Debian sid into /opt/netclaim-deps/containerd2 (the real-runtime
#     tests run on both majors),
#   * kubectl 1.36.4 from Debian sid into /opt/netclaim-deps/kubectl (`kubectl kustomize`,
#     `kubectl get` against the API server stand-in; the machine's own kubectl is older),
#   each fetched with `apt-get download` using a private sources file and private apt state
#   (lists, status, cache), then unpacked with `dpkg -x` into its private prefix. Nothing of
#   the system's apt state, its containerd or its kubectl (if any) is touched: trixie and sid
#   never appear in the system's sources.
#
# Idempotent: when everything is present it only checks and prints, in well under a second.
# Exit status is non-zero, with a message naming the step, on any failure.
#
# Why bookworm's runc: trixie's runc needs glibc 2.38; containerd is pointed at
# /usr/sbin/runc through the runc runtime's BinaryName option (see test/src/containerd/config.rs).
set -euo pipefail

PREFIX=${NETCLAIM_DEPS_PREFIX:-/opt/netclaim-deps}
CONTAINERD_WANT=${NETCLAIM_CONTAINERD_VERSION:-1.7.24}
CONTAINERD2_WANT=${NETCLAIM_CONTAINERD2_VERSION:-2.1.9}
KUBECTL_WANT=${NETCLAIM_KUBECTL_VERSION:-1.36.4}

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
	[g++]=/usr/bin/g++
	[iputils-ping]=/usr/bin/ping
)
missing=()
for pkg in runc containernetworking-plugins iproute2 ethtool gcc g++ iputils-ping; do
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

# --- 2. private packages from trixie and sid -----------------------------------------------
# Each: suite, Debian package, wanted upstream version, prefix, binary under the prefix, and
# how to read the version the binary reports.
containerd_version() { "$1" --version 2>/dev/null | awk '{print $3}'; }
kubectl_version() {
	"$1" version --client 2>/dev/null | awk '/^Client Version:/ {sub(/^v/, "", $3); print $3}'
}

# The private apt state of one suite, updated on first use only.
work=""
cleanup() { [ -z "$work" ] || rm -rf "$work"; }
trap cleanup EXIT
declare -A suite_ready=()

mirror_host() {
	# The mirror the machine already uses for Debian (deb822 `URIs:` or one-line `deb`).
	local mirror
	mirror=$(
		{
			grep -hsE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i=2;i<=NF;i++) print $i}'
			grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
				sed -E 's/\[[^]]*\]//' | awk '{print $2}'
		} | grep -E '/debian/?$' | head -n1
	) || true
	mirror=${mirror%/}
	[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
	printf '%s\n' "$mirror"
}

# Prints the apt options of suite $1's private state (one per line, for mapfile).
apt_options() {
	local dir="$work/$1"
	printf '%s\n' \
		-o "Dir::Etc::sourcelist=$dir/etc/sources.list" \
		-o "Dir::Etc::sourceparts=-" \
		-o "Dir::State::Lists=$dir/lists" \
		-o "Dir::State::status=$dir/status" \
		-o "Dir::Cache=$dir/cache" \
		-o "APT::Sandbox::User=root" \
		-o "Acquire::Languages=none"
}

prepare_suite() {
	local suite=$1 dir mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	[ -z "${suite_ready[$suite]:-}" ] || return 0
	[ -n "$work" ] || work=$(mktemp -d /tmp/netclaim-deps.XXXXXX)
	dir="$work/$suite"
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/download" "$dir/etc"
	: >"$dir/status"
	[ -r "$keyring" ] || die "$keyring missing (package debian-archive-keyring)"
	mirror=$(mirror_host)
	echo "deb [signed-by=$keyring] $mirror $suite main" >"$dir/etc/sources.list"
	say "reading $suite's package lists from $mirror (private apt state)"
	local -a opts
	mapfile -t opts < <(apt_options "$suite")
	apt-get "${opts[@]}" update -q >"$dir/update.log" 2>&1 || {
		cat "$dir/update.log" >&2
		die "apt-get update of the private $suite sources failed"
	}
	suite_ready[$suite]=1
}

# install_private SUITE PACKAGE WANT PREFIX BINARY VERSION_FN
# Leaves PREFIX holding PACKAGE's files when BINARY (relative to PREFIX) reports WANT;
# otherwise downloads PACKAGE (exactly WANT when SUITE has it, else SUITE's current one,
# with a warning) and swaps it in.
install_private() {
	local suite=$1 package=$2 want=$3 prefix=$4 binary=$5 version_fn=$6
	local have got version deb stage
	have=$("$version_fn" "$prefix/$binary" || true)
	if [ -n "$have" ] && [[ "$have" == "$want"* ]]; then
		say "$package $have: present ($prefix/$binary)"
		return 0
	fi
	[ -z "$have" ] || say "$package in $prefix is '$have', want $want: replacing it"
	prepare_suite "$suite"
	local -a opts
	mapfile -t opts < <(apt_options "$suite")
	local madison
	madison=$(apt-cache "${opts[@]}" madison "$package" | awk -F'|' '{gsub(/ /,"",$2); print $2}')
	version=$(grep -E "^${want//./\\.}([~+-]|$)" <<<"$madison" | head -n1 || true)
	if [ -z "$version" ]; then
		version=$(head -n1 <<<"$madison")
		[ -n "$version" ] || die "$suite has no $package package"
		say "warning: $package $want not in $suite; taking $version"
	fi
	local download="$work/$suite/download"
	(cd "$download" && apt-get "${opts[@]}" download -q "$package=$version" >/dev/null) ||
		die "apt-get download $package=$version (from $suite) failed"
	deb=$(ls "$download/${package}_"*.deb 2>/dev/null | head -n1)
	[ -n "$deb" ] || die "apt-get download produced no $package .deb"

	# Unpack next to the target, then swap it in so a failure never leaves half a prefix.
	mkdir -p "$PREFIX"
	stage=$(mktemp -d "$PREFIX/.$(basename "$prefix").XXXXXX")
	dpkg -x "$deb" "$stage" || {
		rm -rf "$stage"
		die "dpkg -x $deb failed"
	}
	got=$("$version_fn" "$stage/$binary" || true)
	if [ -z "$got" ]; then
		rm -rf "$stage"
		die "the unpacked $package ($stage/$binary) does not run on this machine"
	fi
	rm -rf "$prefix.old"
	[ -e "$prefix" ] && mv "$prefix" "$prefix.old"
	mv "$stage" "$prefix"
	chmod 0755 "$prefix"
	rm -rf "$prefix.old"
	say "$package $got ($(basename "$deb"), $suite) unpacked into $prefix"
	ls "$prefix/$(dirname "$binary")" | sed 's/^/install-deps:   /'
}

install_private trixie containerd "$CONTAINERD_WANT" "$PREFIX/containerd" usr/bin/containerd containerd_version
install_private sid containerd "$CONTAINERD2_WANT" "$PREFIX/containerd2" usr/bin/containerd containerd_version
install_private sid kubectl "$KUBECTL_WANT" "$PREFIX/kubectl" usr/bin/kubectl kubectl_version
