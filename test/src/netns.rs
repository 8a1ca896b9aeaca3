//! Network-namespace fixtures: every networking test builds its "node" and "pods" inside
//! namespaces it creates itself, so nothing on the host (eth0, its routes) is ever touched.
//!
//! Namespaces are made with `ip netns add` (so they appear under `/run/netns/<name>` like
//! the ones a container runtime pins) and deleted on drop. Interfaces created inside die
//! with the namespace.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace owned by a test; deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Creates `nc-<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("nc-{prefix}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, as a runtime would pass it to NRI.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside the namespace (`ip netns exec`, which also remounts /sys so
    /// that sysfs shows this namespace's devices).
    pub fn exec(&self, cmd: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(cmd);
        run("ip", &full)
    }

    /// Whether an interface of that name exists in the namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        self.ip(&["link", "show", "dev", ifname]).is_ok()
    }

    /// `ip -j addr show dev <ifname>` parsed as JSON.
    pub fn link_json(&self, ifname: &str) -> Result<serde_json::Value> {
        let out = self.ip(&["-j", "-d", "addr", "show", "dev", ifname])?;
        let mut parsed: Vec<serde_json::Value> = serde_json::from_str(&out)
            .with_context(|| format!("parsing ip -j output for {ifname}"))?;
        if parsed.is_empty() {
            bail!("no link {ifname} in {}", self.name);
        }
        Ok(parsed.swap_remove(0))
    }

    /// Creates a veth pair with both ends in this namespace.
    pub fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", peer])
            .map(drop)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(err) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {err:#}");
        }
    }
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A sysfs mounted from inside a test netns, so that in-process code reading
/// `<dir>/class/net` sees that netns's interfaces (sysfs shows the devices of the netns
/// that mounted it). Lazily unmounted and removed on drop.
#[derive(Debug)]
pub struct NetnsSysfs {
    dir: tempfile::TempDir,
}

impl NetnsSysfs {
    /// The mount point, to use as a sysfs root.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for NetnsSysfs {
    fn drop(&mut self) {
        if let Err(err) = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("cleanup: unmounting {}: {err}", self.dir.path().display());
        }
    }
}

impl TestNetns {
    /// Mounts a read-only sysfs showing this namespace's devices on a fresh temp dir.
    ///
    /// A short-lived thread enters the netns (only that thread changes netns) and mounts
    /// there; the mount itself lives in the process's mount namespace.
    pub fn mount_sysfs(&self) -> Result<NetnsSysfs> {
        let dir = tempfile::Builder::new().prefix("nc-sysfs-").tempdir()?;
        let target = dir.path().to_path_buf();
        let netns_path = self.path();
        std::thread::spawn(move || -> Result<()> {
            use nix::mount::{MsFlags, mount};
            let netns = std::fs::File::open(&netns_path)
                .with_context(|| format!("opening {}", netns_path.display()))?;
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the netns")?;
            let flags =
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("sysfs"), &target, Some("sysfs"), flags, None::<&str>)
                .with_context(|| format!("mounting sysfs on {}", target.display()))?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the sysfs mount thread panicked"))??;
        Ok(NetnsSysfs { dir })
    }
}

/// Writes `script` to `dir/name` as an executable (0755): the test CNI plugins.
///
/// # Errors
/// When the file cannot be written or its mode set.
pub fn write_executable(
    dir: &std::path::Path,
    name: &str,
    script: &str,
) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))?;
    Ok(path)
}
