//! The pod-sandbox ("pause") image, built locally: no image registry is reachable from a
//! test machine.
//!
//! The program is `test/fixtures/pause/pause.c`, compiled with `gcc -static -Os` so the
//! image needs no libc. It is packed as a one-layer OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) in an uncompressed tar, which `ctr images import` reads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The C source of the pause program.
pub fn pause_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pause/pause.c")
}

/// Compiles the pause program into `out` with `gcc -static -Os`.
pub fn compile_pause(out: &Path) -> Result<()> {
    let src = pause_source();
    let output = Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(out)
        .arg(&src)
        .output()
        .context("running gcc (install it with hack/install-deps.sh)")?;
    if !output.status.success() {
        bail!(
            "gcc -static -Os {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The OCI architecture name of the machine the tests run on.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// One file of a tar archive.
struct TarEntry<'a> {
    name: &'a str,
    mode: u32,
    data: &'a [u8],
}

/// Writes `value` as a NUL-terminated octal number filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

/// A POSIX ustar archive of regular files (names under 100 bytes), owned by root,
/// timestamp 0 so the digests are reproducible.
fn tar(entries: &[TarEntry<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        if entry.name.len() >= 100 {
            bail!("tar entry name too long: {}", entry.name);
        }
        let mut header = [0u8; 512];
        header[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        octal(&mut header[100..108], u64::from(entry.mode));
        octal(&mut header[108..116], 0); // uid
        octal(&mut header[116..124], 0); // gid
        octal(&mut header[124..136], entry.data.len() as u64);
        octal(&mut header[136..148], 0); // mtime
        header[156] = b'0'; // regular file
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root");
        header[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field read as eight spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(entry.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    // End of archive: two zero blocks.
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Packs the static binary `pause` as a one-layer OCI image-layout tar naming the image
/// `image_name` (e.g. `netclaim.test/pause:1`) with `/pause` as its entrypoint.
pub fn oci_layout_tar(pause: &[u8], image_name: &str) -> Result<Vec<u8>> {
    let layer = tar(&[TarEntry {
        name: "pause",
        mode: 0o755,
        data: pause,
    }])?;
    let layer_digest = sha256_hex(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Entrypoint": ["/pause"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
    }))?;
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let tag = image_name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            // containerd's importer takes the full name from its own annotation; the OCI
            // one alone would only be a tag.
            "annotations": {
                "io.containerd.image.name": image_name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let (layer_path, config_path, manifest_path) = (
        format!("blobs/sha256/{layer_digest}"),
        format!("blobs/sha256/{config_digest}"),
        format!("blobs/sha256/{manifest_digest}"),
    );
    tar(&[
        TarEntry {
            name: "oci-layout",
            mode: 0o644,
            data: br#"{"imageLayoutVersion":"1.0.0"}"#,
        },
        TarEntry {
            name: "index.json",
            mode: 0o644,
            data: &index,
        },
        TarEntry {
            name: &layer_path,
            mode: 0o644,
            data: &layer,
        },
        TarEntry {
            name: &config_path,
            mode: 0o644,
            data: &config,
        },
        TarEntry {
            name: &manifest_path,
            mode: 0o644,
            data: &manifest,
        },
    ])
}

/// The pause program, compiled once per test process (gcc is the slowest part of a node's
/// start): later nodes reuse the bytes.
static PAUSE_PROGRAM: Mutex<Option<Vec<u8>>> = Mutex::new(None);

/// Compiles the pause program under `work_dir` (once per process) and writes its image tar
/// there; returns the tar's path.
pub fn build_pause_image(work_dir: &Path, image_name: &str) -> Result<PathBuf> {
    let program = {
        // A panic elsewhere while holding the lock leaves valid data (or None) behind.
        let mut cached = PAUSE_PROGRAM.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some(program) => program.clone(),
            None => {
                let binary = work_dir.join("pause");
                compile_pause(&binary)?;
                let program = std::fs::read(&binary)
                    .with_context(|| format!("reading {}", binary.display()))?;
                *cached = Some(program.clone());
                program
            }
        }
    };
    let tar = oci_layout_tar(&program, image_name)?;
    let path = work_dir.join("pause-image.tar");
    std::fs::write(&path, tar).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_have_valid_checksums_and_padding() {
        let archive = tar(&[TarEntry {
            name: "a",
            mode: 0o644,
            data: b"hello",
        }])
        .unwrap();
        assert_eq!(archive.len(), 512 + 512 + 1024);
        let header = &archive[..512];
        let stored = std::str::from_utf8(&header[148..154]).unwrap();
        let mut copy = header.to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|b| u32::from(*b)).sum();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
        assert_eq!(&header[124..135], b"00000000005");
        assert_eq!(&archive[512..517], b"hello");
    }

    #[test]
    fn layout_names_the_image_and_digests_match() {
        let archive = oci_layout_tar(b"\x7fELF fake", "netclaim.test/pause:1").unwrap();
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("\"io.containerd.image.name\":\"netclaim.test/pause:1\""));
        assert!(text.contains("\"org.opencontainers.image.ref.name\":\"1\""));
        // Every blob is stored under the digest of its contents.
        let mut offset = 0;
        while offset + 512 <= archive.len() && archive[offset] != 0 {
            let header = &archive[offset..offset + 512];
            let name_end = header[..100].iter().position(|b| *b == 0).unwrap();
            let name = std::str::from_utf8(&header[..name_end]).unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&header[124..135]).unwrap(), 8).unwrap();
            let data = &archive[offset + 512..offset + 512 + size];
            if let Some(digest) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(digest, sha256_hex(data), "blob {name}");
            }
            offset += 512 + size.div_ceil(512) * 512;
        }
    }
}
