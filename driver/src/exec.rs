//! The processes netclaim starts, and how: CNI plugins ([`crate::cni::runner`]) and the
//! host tools `nsenter` and `ethtool` ([`crate::netlink`]'s ethtool features).
//!
//! # Guarantees
//! - Every program runs by absolute path: plugins from the plugin directories, the tools
//!   from [`HostTools`], resolved once (at start in the daemon) in [`TOOL_DIRS`] or given
//!   by flag (`--nsenter-path`, `--ethtool-path`); never looked up through `PATH`.
//! - Every run has exactly the environment its caller gives (the tools get
//!   [`TOOL_ENV`]: a fixed `PATH` and the C locale), `/` as its working directory, stdin
//!   from the caller or nothing, and runs in its own process group.
//! - Every run has a time limit; past it the whole process group gets SIGKILL and is
//!   reaped. Output is read up to a cap and the rest drained, so a chatty child never
//!   blocks on a full pipe.
//! - Arguments that come from configuration (interface and feature names) never start
//!   with `-`, and come after `--` where the tool takes it (`nsenter`), so none is read
//!   as an option ([`check_operand`]).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

/// At most this much of a child's stdout is kept (a CNI result is a few KiB).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// At most this much of a child's stderr is kept.
pub const MAX_STDERR: usize = 64 * 1024;

/// Where host tools are looked for, in order, when no flag names them.
pub const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The whole environment of a host tool: a fixed `PATH` (the tools exec nothing else,
/// but `nsenter` execs the tool it is given, by absolute path) and the C locale, whose
/// output netclaim parses.
pub const TOOL_ENV: [(&str, &str); 2] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("LC_ALL", "C"),
];

/// How long a host tool may run. `ethtool -K` can reset a NIC (hundreds of
/// milliseconds on some); the NRI hook that waits for it has about 2 s in all, and
/// cancelling the hook kills the tool too.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(2);

/// The host tools netclaim runs, by absolute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTools {
    /// `nsenter` (util-linux), to run `ethtool` inside a pod's network namespace.
    pub nsenter: Result<PathBuf, String>,
    /// `ethtool`, for `interface.ethtoolFeatures`.
    pub ethtool: Result<PathBuf, String>,
}

impl HostTools {
    /// Resolves each tool: the given path (which must be an absolute path to an
    /// executable file), else the first executable of that name in [`TOOL_DIRS`]. A tool
    /// that is not found is not an error here: only the claims that need it fail, with
    /// the reason.
    pub fn resolve(nsenter: Option<&Path>, ethtool: Option<&Path>) -> Self {
        Self {
            nsenter: resolve_tool("nsenter", nsenter, "--nsenter-path", "util-linux"),
            ethtool: resolve_tool("ethtool", ethtool, "--ethtool-path", "ethtool"),
        }
    }
}

fn resolve_tool(
    name: &str,
    given: Option<&Path>,
    flag: &str,
    package: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = given {
        if !path.is_absolute() {
            return Err(format!("{flag} {}: give an absolute path", path.display()));
        }
        return if is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(format!("{flag} {}: not an executable file", path.display()))
        };
    }
    TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            format!(
                "{name} not found in {} (install the {package} package, or name it with {flag})",
                TOOL_DIRS.join(", ")
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

static TOOLS: OnceLock<HostTools> = OnceLock::new();

/// Sets the host tools for this process (the daemon, at start, from its flags).
///
/// # Errors
/// They were set (or used, which resolves the defaults) before: the first value stays.
pub fn set_host_tools(tools: HostTools) -> Result<(), HostTools> {
    TOOLS.set(tools)
}

/// The host tools: as set by [`set_host_tools`], else resolved from [`TOOL_DIRS`] on first
/// use.
pub fn host_tools() -> &'static HostTools {
    TOOLS.get_or_init(|| HostTools::resolve(None, None))
}

/// Checks a configuration-supplied operand (an interface or feature name) before it goes
/// on a command line.
///
/// # Errors
/// It is empty, starts with `-` (a tool would read it as an option), or holds a NUL.
///
/// # Example
/// ```
/// use netclaim::exec::check_operand;
/// assert!(check_operand("interface name", "eth1").is_ok());
/// let error = check_operand("interface name", "-s").unwrap_err();
/// assert!(error.contains("starts with '-'"));
/// ```
pub fn check_operand(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if value.starts_with('-') {
        return Err(format!(
            "the {what} {value:?} starts with '-', which a tool would read as an option; refused"
        ));
    }
    if value.contains('\0') {
        return Err(format!("the {what} {value:?} contains NUL"));
    }
    Ok(())
}

/// Why a run gave no output.
#[derive(Debug)]
pub enum RunFailure {
    /// It could not be started.
    Spawn(io::Error),
    /// It ran past the timeout and was killed with its process group.
    Timeout,
}

/// Runs `program` (an absolute path) with `args`, exactly `env`, `stdin` as its input, in
/// its own process group with `/` as its working directory, and collects its output
/// (stdout up to [`MAX_OUTPUT`] bytes, stderr up to [`MAX_STDERR`]); past `timeout` the
/// whole group gets SIGKILL and is reaped. Dropping the future kills the child.
///
/// # Errors
/// [`RunFailure`].
pub async fn run_with_args(
    program: &Path,
    args: &[OsString],
    env: &[(String, OsString)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<std::process::Output, RunFailure> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(RunFailure::Spawn)?;
    let pid = child.id();
    let mut input = child.stdin.take();
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let run = async {
        let feed = async {
            if let Some(mut input) = input.take() {
                // A child may exit without reading stdin (a CNI VERSION, an error): a
                // broken pipe is its answer, not ours to report.
                let _ = input.write_all(stdin).await;
            }
        };
        let read_out = read_capped(stdout_pipe.as_mut(), MAX_OUTPUT);
        let read_err = read_capped(stderr_pipe.as_mut(), MAX_STDERR);
        let ((), stdout, stderr, status) = tokio::join!(feed, read_out, read_err, child.wait());
        status.map(|status| std::process::Output {
            status,
            stdout,
            stderr,
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(error)) => Err(RunFailure::Spawn(error)),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The group id is the child's pid (process_group(0)); killing the group
                // also ends grandchildren that would keep its pipes open.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Err(RunFailure::Timeout)
        }
    }
}

/// [`run_with_args`] without arguments (how CNI plugins run: everything is in the
/// environment and on stdin).
///
/// # Errors
/// [`RunFailure`].
pub async fn run_with_timeout(
    program: &Path,
    env: &[(String, OsString)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<std::process::Output, RunFailure> {
    run_with_args(program, &[], env, stdin, timeout).await
}

/// Runs a host tool with [`TOOL_ENV`], no input and [`TOOL_TIMEOUT`].
///
/// # Errors
/// The tool could not start or timed out, as an [`io::Error`] naming it.
pub async fn run_tool(program: &Path, args: &[OsString]) -> io::Result<std::process::Output> {
    let env: Vec<(String, OsString)> = TOOL_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
        .collect();
    run_with_args(program, args, &env, b"", TOOL_TIMEOUT)
        .await
        .map_err(|failure| match failure {
            RunFailure::Spawn(error) => io::Error::new(
                error.kind(),
                format!("running {}: {error}", program.display()),
            ),
            RunFailure::Timeout => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not finish within {TOOL_TIMEOUT:?}; killed it",
                    program.display()
                ),
            ),
        })
}

/// Reads `pipe` to its end, keeping at most `cap` bytes (the rest is read and dropped, so
/// the writer never blocks on a full pipe).
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<&mut R>, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(pipe) = pipe else {
        return kept;
    };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect()
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_without_blocking_the_child() {
        // `sh` reads its script from stdin: print 3 MiB, then say it got to the end.
        let script = b"head -c 3145728 /dev/zero; echo finished >&2";
        let output = run_with_timeout(
            Path::new("/bin/sh"),
            &env(&TOOL_ENV),
            script,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout.len(), MAX_OUTPUT);
        assert_eq!(String::from_utf8_lossy(&output.stderr).trim(), "finished");
    }

    #[tokio::test]
    async fn a_child_past_its_time_is_killed_with_its_children() {
        let started = std::time::Instant::now();
        let outcome = run_with_timeout(
            Path::new("/bin/sh"),
            &env(&TOOL_ENV),
            b"sleep 30 & sleep 30",
            Duration::from_millis(200),
        )
        .await;
        assert!(matches!(outcome, Err(RunFailure::Timeout)), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_tool_sees_only_the_fixed_environment_and_runs_in_the_root() {
        // The child prints what it got.
        let output = run_tool(
            Path::new("/bin/sh"),
            &["-c".into(), "env; echo cwd=$(pwd)".into()],
        )
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| !["PWD", "SHLVL", "_", "cwd", "OLDPWD"].contains(k))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["LC_ALL", "PATH"], "{text}");
        assert!(text.contains("cwd=/\n"), "{text}");
    }

    #[test]
    fn operands_starting_with_a_dash_are_refused() {
        for bad in ["-K", "--help", "-", ""] {
            let error = check_operand("feature name", bad).unwrap_err();
            assert!(error.starts_with("the feature name"), "{error}");
        }
        assert!(check_operand("interface name", "eth-1").is_ok());
    }

    #[test]
    fn tools_resolve_to_absolute_executables_or_say_how_to_get_them() {
        let tools = HostTools::resolve(Some(Path::new("/bin/sh")), Some(Path::new("sh")));
        assert_eq!(tools.nsenter, Ok(PathBuf::from("/bin/sh")));
        assert_eq!(
            tools.ethtool,
            Err("--ethtool-path sh: give an absolute path".to_owned())
        );
        let missing = resolve_tool("no-such-tool-here", None, "--x-path", "x");
        let why = missing.unwrap_err();
        assert!(
            why.starts_with("no-such-tool-here not found in /usr/sbin, /sbin, /usr/bin, /bin"),
            "{why}"
        );
        assert!(why.contains("--x-path"), "{why}");
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let not_exec = resolve_tool("x", Some(&plain), "--x-path", "x");
        assert!(not_exec.unwrap_err().contains("not an executable file"));
    }
}
