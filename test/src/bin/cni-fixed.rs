//! `cni-fixed`: a CNI plugin that does nothing but answer, for measuring what runs around
//! plugins (netclaim's runner and hooks) without the real plugins' noise.
//!
//! Real plugins (Go binaries that take netlink locks and touch the kernel) vary by
//! milliseconds from one run to the next, which hides a sub-millisecond overhead. This one
//! starts in well under a millisecond and always does the same thing:
//!
//! - `ADD`: prints `prevResult` when the config has one (as a chained plugin that changes
//!   nothing would), else a result naming `CNI_IFNAME` in `CNI_NETNS` with the config's
//!   `address` (default `192.0.2.10/24`). It creates no interface.
//! - `DEL`, `CHECK`, `STATUS`, `GC`: succeeds silently.
//! - `VERSION`: the versions of the spec it answers for.
//!
//! Used by `cargo bench -p netclaim-test --bench cni -- <rounds> fixed`; never by the
//! product or the tests, which run the real plugins.

use std::io::Read;

use serde_json::{Value, json};

fn main() {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdin = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut stdin) {
        fail(&format!("reading stdin: {error}"));
    }
    match command.as_str() {
        "VERSION" => print(&json!({
            "cniVersion": "1.1.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        })),
        "ADD" => {
            let config: Value = serde_json::from_slice(&stdin)
                .unwrap_or_else(|error| fail(&format!("the config is not JSON: {error}")));
            let version = config.get("cniVersion").cloned().unwrap_or(json!("1.0.0"));
            let result = match config.get("prevResult") {
                Some(Value::Object(prev)) => {
                    let mut prev = prev.clone();
                    prev.insert("cniVersion".into(), version);
                    Value::Object(prev)
                }
                _ => json!({
                    "cniVersion": version,
                    "interfaces": [{
                        "name": std::env::var("CNI_IFNAME").unwrap_or_default(),
                        "sandbox": std::env::var("CNI_NETNS").unwrap_or_default(),
                    }],
                    "ips": [{
                        "address": config.get("address").cloned()
                            .unwrap_or(json!("192.0.2.10/24")),
                        "interface": 0,
                    }],
                }),
            };
            print(&result);
        }
        "DEL" | "CHECK" | "STATUS" | "GC" => {}
        other => fail(&format!("unknown CNI_COMMAND {other:?}")),
    }
}

fn print(value: &Value) {
    println!("{value}");
}

/// Exits as a CNI plugin reports an error: code 1 and an error object on stdout.
fn fail(message: &str) -> ! {
    println!(
        "{}",
        json!({"cniVersion": "1.0.0", "code": 999, "msg": message})
    );
    std::process::exit(1);
}
