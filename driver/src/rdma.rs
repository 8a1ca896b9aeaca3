//! RDMA for moved NICs: which character devices a pod's containers need, and moving the
//! RDMA device into the pod's network namespace when the node's RDMA subsystem is in
//! exclusive mode.
//!
//! An RDMA NIC (a RoCE or InfiniBand port, often an SR-IOV VF next to a GPU) is two kernel
//! objects: the netdev, which netclaim moves into the pod like any NIC, and the RDMA device
//! (`mlx5_0`, found at `class/net/<if>/device/infiniband/<dev>`), which applications reach
//! through character devices:
//! - `/dev/infiniband/uverbsN` (libibverbs; `class/infiniband_verbs/uverbsN/ibdev` names its
//!   RDMA device), mode 0666 as the kernel creates it;
//! - `/dev/infiniband/rdma_cm` (librdmacm; one for the node, `class/misc/rdma_cm`), 0666;
//! - `/dev/infiniband/umadN` (libibumad: `ibstat`, management datagrams;
//!   `class/infiniband_mad/umadN/ibdev`), 0600 as the kernel creates it.
//!
//! `issmN` (which lets its opener act as the fabric's subnet manager) is left out on
//! purpose; dranet gives it (through the rdmamap library), netclaim does not.
//!
//! The major and minor numbers come from the `dev` files in sysfs, not from a stat of
//! `/dev` on the node: sysfs is the kernel's own record (udev creates `/dev` from it), and a
//! daemon in a pod sees the host's sysfs but not necessarily its `/dev`. The character
//! devices reach containers as CDI `deviceNodes` ([`crate::cdi`]).
//!
//! # Network-namespace mode
//! In the default *shared* mode every netns sees every RDMA device, and the character
//! devices are all a pod needs. In *exclusive* mode (`rdma system set netns exclusive`, or
//! ib_core's `netns_mode=0`) an RDMA device is only usable from the netns it is in, so it
//! must move into the pod's netns with the NIC, and back. The mode is read from
//! `module/ib_core/parameters/netns_mode` in sysfs (`Y` shared, `N` exclusive): the module
//! parameter is bound to the variable `rdma system set netns` changes (ib_core's
//! `ib_devices_shared_netns`), so it shows the current mode. It is read at prepare and
//! recorded with the NIC: the kernel refuses to change the mode (`EBUSY`) while any network
//! namespace other than the initial one exists, which on a node running pods is always.
//!
//! Moving uses the RDMA netlink family (`NETLINK_RDMA`, client `RDMA_NL_NLDEV`), written
//! here by hand (no crate speaks it): `RDMA_NLDEV_CMD_GET` dumps the devices of a netns
//! (index and name), `RDMA_NLDEV_CMD_SET` with `RDMA_NLDEV_ATTR_DEV_INDEX` and
//! `RDMA_NLDEV_NET_NS_FD` moves one, as `rdma dev set <dev> netns <ns>` does. Numbers from
//! the kernel's `include/uapi/rdma/rdma_netlink.h`. When a netns is destroyed, the kernel
//! moves its RDMA devices back to the initial netns by itself.
//!
//! # What ran where
//! The sysfs reading runs against fixture trees in tests (`test/fixtures/sysfs`) and the
//! message encoding against byte-level unit tests; no RDMA hardware, `rxe` or `ib_core`
//! exists on the test machines, so the kernel's RDMA netlink was only met there as
//! "Protocol not supported" (which the attach reports).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::netlink::{NetHandle, in_netns_thread};
use crate::state::{PreparedRdma, RdmaCharDevice};

/// The RDMA facts of interface `if_name` from sysfs under `sysfs_root`, or `None` when it
/// has no RDMA device. Blocking (sysfs reads).
///
/// A NIC with several RDMA devices (unusual) gets the first by name, as discovery's
/// `rdmaDevice` attribute says.
pub fn rdma_of_interface(sysfs_root: &Path, if_name: &str) -> Option<PreparedRdma> {
    let nic = crate::discovery::sysfs::read_nic(sysfs_root, if_name);
    let device = nic.rdma_devices.into_iter().next()?;
    let char_devices = char_devices(sysfs_root, &device);
    Some(PreparedRdma {
        netns_exclusive: netns_mode(sysfs_root) == NetnsMode::Exclusive,
        device,
        char_devices,
    })
}

/// The node's RDMA network-namespace mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsMode {
    /// Every netns sees every RDMA device (the kernel's default; also when ib_core is not
    /// loaded and there is no RDMA at all).
    Shared,
    /// An RDMA device is only usable in the netns it is in.
    Exclusive,
}

/// The mode, from ib_core's `netns_mode` parameter (see the [module docs](self)).
pub fn netns_mode(sysfs_root: &Path) -> NetnsMode {
    let param = sysfs_root.join("module/ib_core/parameters/netns_mode");
    match fs::read_to_string(param)
        .map(|s| s.trim().to_owned())
        .as_deref()
    {
        Ok("N" | "n" | "0") => NetnsMode::Exclusive,
        _ => NetnsMode::Shared,
    }
}

/// The character devices of RDMA device `device` a container needs (see the
/// [module docs](self)), sorted by path. Entries whose `dev` file is missing or unreadable
/// are left out.
pub fn char_devices(sysfs_root: &Path, device: &str) -> Vec<RdmaCharDevice> {
    let mut found = Vec::new();
    for (class, prefix, file_mode) in [
        ("infiniband_verbs", "uverbs", 0o666),
        ("infiniband_mad", "umad", 0o600),
    ] {
        let class_dir = sysfs_root.join("class").join(class);
        let Ok(entries) = fs::read_dir(&class_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(prefix) {
                continue;
            }
            let dir = class_dir.join(&name);
            let belongs = fs::read_to_string(dir.join("ibdev")).is_ok_and(|d| d.trim() == device);
            if let (true, Some((major, minor))) = (belongs, read_dev(&dir.join("dev"))) {
                found.push(RdmaCharDevice {
                    path: format!("/dev/infiniband/{name}"),
                    major,
                    minor,
                    file_mode,
                });
            }
        }
    }
    if let Some((major, minor)) = read_dev(&sysfs_root.join("class/misc/rdma_cm/dev")) {
        found.push(RdmaCharDevice {
            path: "/dev/infiniband/rdma_cm".to_owned(),
            major,
            minor,
            file_mode: 0o666,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// A sysfs `dev` file: `major:minor`.
fn read_dev(path: &Path) -> Option<(u32, u32)> {
    let text = fs::read_to_string(path).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Moves RDMA device `device` from the host's netns (`host`) into the pod's at `pod_netns`.
/// Idempotent: a device already in the pod's netns is left there.
///
/// # Errors
/// Why not (the pod's netns cannot be opened, the kernel has no RDMA netlink, the device
/// is in neither netns, the kernel refused), naming the device.
pub async fn move_into_pod(host: &NetHandle, device: &str, pod_netns: &Path) -> Result<(), String> {
    let what = || format!("moving RDMA device {device} into the pod's netns");
    let pod = File::open(pod_netns)
        .map_err(|e| format!("{}: opening {}: {e}", what(), pod_netns.display()))?;
    let host = host
        .netns_file()
        .map_err(|e| format!("{}: the host netns: {e}", what()))?;
    move_between(device, host, pod)
        .await
        .map_err(|e| format!("{}: {e}", what()))
}

/// Moves RDMA device `device` from the pod's netns at `pod_netns` back to the host's.
/// Idempotent. Returns a note when there was nothing left to move because the pod's netns
/// is gone (the kernel then returned the device to the initial netns itself).
///
/// # Errors
/// As [`move_into_pod`].
pub async fn give_back(
    host: &NetHandle,
    device: &str,
    pod_netns: &Path,
) -> Result<Option<String>, String> {
    let what = || format!("giving RDMA device {device} back to the host's netns");
    let pod = match File::open(pod_netns) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(format!(
                "the pod's netns {} is gone; the kernel returned RDMA device {device} to \
                 the initial netns",
                pod_netns.display()
            )));
        }
        Err(e) => return Err(format!("{}: opening {}: {e}", what(), pod_netns.display())),
    };
    let host = host
        .netns_file()
        .map_err(|e| format!("{}: the host netns: {e}", what()))?;
    match move_between(device, pod, host).await {
        Ok(()) => Ok(None),
        // No RDMA subsystem, or the device is in neither netns (its driver unbound, the
        // function removed): there is nothing to give back, and the NIC must not stay
        // stuck in the pod for it.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::NotFound
            ) =>
        {
            Ok(Some(format!("{}: nothing to move: {e}", what())))
        }
        Err(e) => Err(format!("{}: {e}", what())),
    }
}

/// Moves `device` from the netns `from` to the netns `to`; done already when it is in `to`.
async fn move_between(device: &str, from: File, to: File) -> io::Result<()> {
    let to_probe = to.try_clone()?;
    let name = device.to_owned();
    let moved = in_netns_thread(from, move || {
        let socket = RdmaSocket::open()?;
        match socket.device_index(&name)? {
            Some(index) => socket.move_to(index, to.as_raw_fd()).map(|()| true),
            None => Ok(false),
        }
    })
    .await?;
    if moved {
        return Ok(());
    }
    let name = device.to_owned();
    let already_there = in_netns_thread(to_probe.try_clone()?, move || {
        RdmaSocket::open()?.device_index(&name)
    })
    .await?;
    match already_there {
        Some(_) => Ok(()),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no RDMA device {device} in either netns"),
        )),
    }
}

// ---- the RDMA netlink messages ---------------------------------------------------------

const NETLINK_RDMA: isize = 20;
/// `RDMA_NL_NLDEV`: the nldev client.
const RDMA_NL_NLDEV: u16 = 5;
const RDMA_NLDEV_CMD_GET: u16 = 1;
const RDMA_NLDEV_CMD_SET: u16 = 2;
const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
const RDMA_NLDEV_NET_NS_FD: u16 = 68;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HEADER_LEN: usize = 16;
/// How long one reply may take (the kernel answers at once; this only bounds a hang).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op)`.
const fn nldev_type(op: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + op
}

/// A request: the netlink header and the attributes (RDMA netlink has no family header).
fn request(msg_type: u16, flags: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, payload) in attrs {
        let len = 4 + payload.len();
        body.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(payload);
        body.resize(body.len() + (4 - len % 4) % 4, 0);
    }
    let total = HEADER_LEN + body.len();
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// One message of a reply.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// A device of a dump: its index and name.
    Device { index: u32, name: String },
    /// `NLMSG_ERROR` with 0: the acknowledgement.
    Ack,
    /// `NLMSG_ERROR` with an errno.
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// Anything else (left alone).
    Other,
}

/// The messages of one datagram. Malformed input ends the parse with an error.
fn parse(datagram: &[u8]) -> io::Result<Vec<Reply>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed RDMA netlink reply");
    let mut replies = Vec::new();
    let mut rest = datagram;
    while rest.len() >= HEADER_LEN {
        let len =
            usize::try_from(u32_at(rest, 0).ok_or_else(malformed)?).map_err(|_| malformed())?;
        if len < HEADER_LEN || len > rest.len() {
            return Err(malformed());
        }
        let msg_type = u16_at(rest, 4).ok_or_else(malformed)?;
        let payload = &rest[HEADER_LEN..len];
        replies.push(match msg_type {
            NLMSG_ERROR => {
                let errno = i32::from_ne_bytes(
                    payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(malformed)?,
                );
                if errno == 0 {
                    Reply::Ack
                } else {
                    Reply::Error(-errno)
                }
            }
            NLMSG_DONE => Reply::Done,
            t if t == nldev_type(RDMA_NLDEV_CMD_GET) => device_of(payload).ok_or_else(malformed)?,
            _ => Reply::Other,
        });
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(replies)
}

/// The index and name attributes of a device message.
fn device_of(mut attrs: &[u8]) -> Option<Reply> {
    let (mut index, mut name) = (None, None);
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)? & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        let payload = &attrs[4..len];
        match kind {
            RDMA_NLDEV_ATTR_DEV_INDEX => index = Some(u32_at(payload, 0)?),
            RDMA_NLDEV_ATTR_DEV_NAME => {
                let text = payload.split(|b| *b == 0).next()?;
                name = Some(String::from_utf8_lossy(text).into_owned());
            }
            _ => {}
        }
        let padded = (len + 3) & !3;
        attrs = attrs.get(padded..).unwrap_or_default();
    }
    Some(Reply::Device {
        index: index?,
        name: name?,
    })
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// A `NETLINK_RDMA` socket in the netns of the thread that opened it. Blocking: used only
/// on the netns thread.
struct RdmaSocket {
    socket: netlink_sys::Socket,
}

impl RdmaSocket {
    fn open() -> io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(NETLINK_RDMA).map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::EPROTONOSUPPORT) {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel has no RDMA netlink (is ib_core loaded?): {e}"),
                )
            } else {
                e
            }
        })?;
        socket.bind_auto()?;
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(5), 0),
        )
        .map_err(io::Error::from)?;
        Ok(Self { socket })
    }

    /// Sends `msg` and collects replies until `done` says so.
    fn exchange(&self, msg: &[u8], mut done: impl FnMut(&Reply) -> bool) -> io::Result<Vec<Reply>> {
        self.socket.send(msg, 0)?;
        let mut all = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            for reply in parse(&datagram)? {
                if let Reply::Error(errno) = reply {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                let finished = done(&reply);
                all.push(reply);
                if finished {
                    return Ok(all);
                }
            }
        }
    }

    /// The index of the RDMA device `name` in this netns.
    fn device_index(&self, name: &str) -> io::Result<Option<u32>> {
        let msg = request(
            nldev_type(RDMA_NLDEV_CMD_GET),
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            &[],
        );
        let replies = self.exchange(&msg, |r| matches!(r, Reply::Done))?;
        Ok(replies.into_iter().find_map(|r| match r {
            Reply::Device { index, name: n } if n == name => Some(index),
            _ => None,
        }))
    }

    /// Moves device `index` to the netns of `netns_fd`.
    fn move_to(&self, index: u32, netns_fd: i32) -> io::Result<()> {
        let fd = u32::try_from(netns_fd).map_err(io::Error::other)?;
        let msg = request(
            nldev_type(RDMA_NLDEV_CMD_SET),
            NLM_F_REQUEST | NLM_F_ACK,
            2,
            &[
                (RDMA_NLDEV_ATTR_DEV_INDEX, &index.to_ne_bytes()),
                (RDMA_NLDEV_NET_NS_FD, &fd.to_ne_bytes()),
            ],
        );
        self.exchange(&msg, |r| matches!(r, Reply::Ack)).map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../test/fixtures/sysfs")
    }

    #[test]
    fn the_message_types_are_the_kernels() {
        // RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_SET) from rdma_netlink.h.
        assert_eq!(nldev_type(RDMA_NLDEV_CMD_SET), 5122);
        assert_eq!(nldev_type(RDMA_NLDEV_CMD_GET), 5121);
    }

    #[test]
    fn a_move_request_carries_the_index_and_the_netns_fd() {
        let msg = request(
            nldev_type(RDMA_NLDEV_CMD_SET),
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            &[
                (RDMA_NLDEV_ATTR_DEV_INDEX, &3u32.to_ne_bytes()),
                (RDMA_NLDEV_NET_NS_FD, &9u32.to_ne_bytes()),
            ],
        );
        let mut want = Vec::new();
        want.extend_from_slice(&32u32.to_ne_bytes());
        want.extend_from_slice(&5122u16.to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        for (kind, value) in [(1u16, 3u32), (68, 9)] {
            want.extend_from_slice(&8u16.to_ne_bytes());
            want.extend_from_slice(&kind.to_ne_bytes());
            want.extend_from_slice(&value.to_ne_bytes());
        }
        assert_eq!(msg, want);
    }

    #[test]
    fn a_dump_reply_yields_devices_then_done_and_errors_are_errnos() {
        let name = b"mlx5_1\0";
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&RDMA_NLDEV_ATTR_DEV_INDEX.to_ne_bytes());
        attrs.extend_from_slice(&4u32.to_ne_bytes());
        attrs.extend_from_slice(&u16::try_from(4 + name.len()).unwrap().to_ne_bytes());
        attrs.extend_from_slice(&RDMA_NLDEV_ATTR_DEV_NAME.to_ne_bytes());
        attrs.extend_from_slice(name);
        attrs.push(0); // padding to 4
        let device = request(nldev_type(RDMA_NLDEV_CMD_GET), 0x2, 1, &[]);
        let mut datagram = device[..HEADER_LEN].to_vec();
        datagram[..4].copy_from_slice(
            &u32::try_from(HEADER_LEN + attrs.len())
                .unwrap()
                .to_ne_bytes(),
        );
        datagram.extend_from_slice(&attrs);
        datagram.extend_from_slice(&request(NLMSG_DONE, 0x2, 1, &[]));
        // An error message: errno -ENODEV, then the echoed request header.
        let mut error = request(NLMSG_ERROR, 0, 2, &[]);
        error.extend_from_slice(&(-19i32).to_ne_bytes());
        error.extend_from_slice(&[0; HEADER_LEN]);
        let error_len = u32::try_from(error.len()).unwrap();
        error[..4].copy_from_slice(&error_len.to_ne_bytes());
        datagram.extend_from_slice(&error);
        assert_eq!(
            parse(&datagram).unwrap(),
            [
                Reply::Device {
                    index: 4,
                    name: "mlx5_1".into()
                },
                Reply::Done,
                Reply::Error(19)
            ]
        );
        let mut truncated = datagram.clone();
        truncated[..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert_eq!(
            parse(&truncated).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn the_fixture_nic_has_its_verbs_mad_and_cm_devices_but_not_issm() {
        let rdma = rdma_of_interface(&fixtures(), "ens1f0").unwrap();
        assert_eq!(rdma.device, "mlx5_0");
        assert!(!rdma.netns_exclusive);
        let paths: Vec<(&str, u32, u32, u32)> = rdma
            .char_devices
            .iter()
            .map(|d| (d.path.as_str(), d.major, d.minor, d.file_mode))
            .collect();
        assert_eq!(
            paths,
            [
                ("/dev/infiniband/rdma_cm", 10, 58, 0o666),
                ("/dev/infiniband/umad0", 231, 0, 0o600),
                ("/dev/infiniband/uverbs0", 231, 192, 0o666),
            ]
        );
        // Another RDMA device's nodes (mlx5_1's uverbs1) are not this NIC's.
        assert!(
            char_devices(&fixtures(), "mlx5_1")
                .iter()
                .all(|d| d.path != "/dev/infiniband/uverbs0")
        );
        assert_eq!(rdma_of_interface(&fixtures(), "ens2"), None);
        assert_eq!(rdma_of_interface(&fixtures(), "veth0"), None);
    }

    #[test]
    fn the_mode_comes_from_ib_core_and_defaults_to_shared() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(netns_mode(root.path()), NetnsMode::Shared);
        let params = root.path().join("module/ib_core/parameters");
        fs::create_dir_all(&params).unwrap();
        fs::write(params.join("netns_mode"), "N\n").unwrap();
        assert_eq!(netns_mode(root.path()), NetnsMode::Exclusive);
        fs::write(params.join("netns_mode"), "Y\n").unwrap();
        assert_eq!(netns_mode(root.path()), NetnsMode::Shared);
        assert_eq!(netns_mode(&fixtures()), NetnsMode::Shared);
    }

    #[tokio::test]
    async fn without_rdma_netlink_a_move_says_so() {
        // No test machine has ib_core: the kernel refuses the socket, and the message says
        // why. (On a machine with RDMA this would find no such device instead.)
        let host = NetHandle::current().unwrap();
        let error = move_into_pod(&host, "mlx5_0", Path::new("/proc/self/ns/net"))
            .await
            .unwrap_err();
        assert!(
            error.starts_with("moving RDMA device mlx5_0 into the pod's netns: "),
            "{error}"
        );
        assert!(
            error.contains("the kernel has no RDMA netlink (is ib_core loaded?)")
                || error.contains("no RDMA device mlx5_0 in either netns"),
            "{error}"
        );
        let gone = give_back(&host, "mlx5_0", Path::new("/nonexistent/netns"))
            .await
            .unwrap();
        assert!(gone.unwrap().contains("is gone"));
    }
}
