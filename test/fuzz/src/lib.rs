//! What each fuzz target runs on one input, and the properties it asserts.
//!
//! Shared, as this one file, by the cargo-fuzz targets in `fuzz_targets/` and by the
//! corpus replay test `test/tests/fuzz_corpora.rs` (which includes it with `#[path]`), so
//! plain `cargo test` replays every corpus and regression input through exactly what the
//! fuzzer ran. A property that does not hold panics, which the fuzzer reports as a crash
//! and the replay test as a failure naming the input file.
//!
//! Every target calls the function the driver itself calls on that input; where the
//! driver's decoder reads from an async stream, the target drives it over an in-memory
//! reader that hands out the bytes in pieces of a size the input chooses, so frame
//! boundaries split at every offset.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netclaim::checkpoint;
use netclaim::cni::{DeviceRef, network_data, plugin_stdin, substitute_device, typed_result};
use netclaim::deadline::HookDeadline;
use netclaim::nri::mux::{self, MuxError};
use netclaim::nri::plugin::{PLUGIN_SERVICE, handler_budget, network_namespace_path};
use netclaim::nri::proto::{
    ConfigureRequest, PodSandbox, RemovePodSandboxRequest, RunPodSandboxRequest, StateChangeEvent,
    StopPodSandboxRequest, SynchronizeRequest,
};
use netclaim::nri::ttrpc::{self, Frame, TtrpcError};
use netclaim_api::attributes::MAX_OPAQUE_PARAMETERS_BYTES;
use netclaim_api::cni::{CNI_VERSIONS, check_plugin_type, default_device_field, device_fields};
use netclaim_api::policy::{
    self, DEFAULT_ALLOWED_PLUGINS, DEVICE_KEYS, HOST_DEVICE_SELECTORS, MAX_PLUGINS,
    PluginAllowlist, RUNTIME_KEYS,
};
use netclaim_api::{CniNetworkList, ConfigError};
use prost::Message;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// What a fuzz target runs on one input.
pub type Check = fn(&[u8]);

/// The fuzz targets by name: the names of their corpus and regression directories.
pub const TARGETS: [(&str, Check); 7] = [
    ("config", config),
    ("cni_list", cni_list),
    ("cni_policy", cni_policy),
    ("cni_result", cni_result),
    ("nri_mux", nri_mux),
    ("nri_ttrpc", nri_ttrpc),
    ("checkpoint", checkpoint),
];

/// The opaque-config parser (`netclaim_api::parse_config`).
///
/// Properties: an accepted config survives its own re-encoding (parses again, to an equal
/// config: the driver stores merged configs in its checkpoint as JSON); a refused one has
/// at least one error, each with a message, and every path is one a user can read (no
/// line/column position).
pub fn config(data: &[u8]) {
    match netclaim_api::parse_config(data) {
        Ok(config) => {
            let encoded = serde_json::to_vec(&config).expect("a parsed config encodes");
            let again = netclaim_api::parse_config(&encoded).unwrap_or_else(|error| {
                panic!(
                    "the re-encoded config is refused: {error}\n{}",
                    String::from_utf8_lossy(&encoded)
                )
            });
            assert_eq!(again, config, "the config changed in a re-encoding");
        }
        Err(error) => check_config_error(&error),
    }
}

fn check_config_error(error: &ConfigError) {
    assert!(!error.errors.is_empty(), "an error without problems");
    for problem in &error.errors {
        assert!(!problem.message.is_empty(), "a problem without a message");
    }
    assert!(!error.to_string().is_empty());
}

/// CNI network configuration lists (`CniNetworkList::parse`) and NetworkAttachmentDefinitions
/// (`CniNetworkList::from_network_attachment_definition`).
///
/// Properties: an accepted list has a supported version, plugins, and a safe `type` for
/// each, and survives `to_json` (what the runner hands the plugins); the input text as a
/// NAD's `spec.config` gets the same answer as parsing it directly; the input as a whole
/// NAD object never panics, and an accepted one equals its `spec.config` parsed directly.
pub fn cni_list(data: &[u8]) {
    let parsed = CniNetworkList::parse(data);
    match &parsed {
        Ok(list) => {
            assert!(
                CNI_VERSIONS.contains(&list.cni_version.as_str()),
                "version {:?} accepted",
                list.cni_version
            );
            assert!(!list.plugins.is_empty(), "a list without plugins accepted");
            for plugin in &list.plugins {
                let plugin_type = plugin.plugin_type().expect("an accepted plugin has a type");
                assert!(check_plugin_type(plugin_type).is_ok(), "{plugin_type:?}");
            }
            let encoded = serde_json::to_vec(&list.to_json()).expect("a list encodes");
            let again = CniNetworkList::parse(&encoded).unwrap_or_else(|error| {
                panic!(
                    "the re-encoded list is refused: {error}\n{}",
                    String::from_utf8_lossy(&encoded)
                )
            });
            assert_eq!(&again, list, "the list changed in a re-encoding");
        }
        Err(error) => check_config_error(error),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let nad = json!({"spec": {"config": text}});
        let via_nad = CniNetworkList::from_network_attachment_definition(&nad);
        if text.len() > MAX_OPAQUE_PARAMETERS_BYTES {
            let error = via_nad.expect_err("an oversized NAD spec.config accepted");
            assert_eq!(error.errors[0].path, "spec.config");
        } else if text.trim().is_empty() {
            via_nad.expect_err("an empty NAD spec.config accepted");
        } else {
            match (&parsed, via_nad) {
                (Ok(direct), Ok(via_nad)) => assert_eq!(direct, &via_nad),
                (Err(_), Err(error)) => check_config_error(&error),
                (direct, via_nad) => panic!(
                    "parsing directly gave {direct:?}, as a NAD's spec.config gave {via_nad:?}"
                ),
            }
        }
    }
    if let Ok(object) = serde_json::from_slice::<Value>(data) {
        match CniNetworkList::from_network_attachment_definition(&object) {
            Ok(list) => {
                let config = object["spec"]["config"]
                    .as_str()
                    .expect("an accepted NAD has a string spec.config");
                assert!(
                    config.len() <= MAX_OPAQUE_PARAMETERS_BYTES,
                    "an oversized NAD accepted"
                );
                let direct = CniNetworkList::parse(config.as_bytes())
                    .expect("an accepted NAD's spec.config parses directly");
                assert_eq!(direct, list);
            }
            Err(error) => check_config_error(&error),
        }
    }
}

/// The tenant boundary on CNI networks (`netclaim_api::policy`): what a claim-authored
/// network (inline, or a NetworkAttachmentDefinition) and a claim's plugin overrides may
/// make netclaim hand a CNI plugin, following the steps of the driver's prepare
/// (`driver/src/prepare.rs`): `check_claim_network`, the overrides (validated as a claim
/// config by `parse_config`, then `apply_plugin_overrides`), `check_plugins` with the
/// default allowlist, `substitute_device`, and the stdin the runner builds (`plugin_stdin`).
///
/// Input: a JSON object with `network` (a conflist object) or `nad` (a NAD object; `pad`
/// appends `pad × 512` spaces to its `spec.config`, to reach the size limit), and optional
/// `deviceField` and `overrides` (a claim's `cni.pluginOverrides`).
///
/// Properties: a NAD over the size limit is refused at `spec.config`; `check_plugins`
/// accepts exactly the lists the model accepts (plugin count, allowlist on every `type` and
/// `ipam.type`, device-taking types first only, no host-device selector); an accepted
/// override never changes an executable; and when everything is accepted, what each plugin
/// reads *as a Go plugin decodes JSON* (keys matched case-insensitively with Unicode simple
/// folding, the last matching key winning; serde_json writes keys sorted) has: the
/// allocated device in every substituted field, the checked IPAM type, and nowhere a host
/// device key, a runtime key, a path key or a string that reads as a path.
pub fn cni_policy(data: &[u8]) {
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let parsed = if let Some(nad) = input.get("nad") {
        let mut nad = nad.clone();
        let pad = input
            .get("pad")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(64);
        if pad > 0
            && let Some(Value::String(config)) = nad.pointer_mut("/spec/config")
        {
            config.push_str(&" ".repeat(pad as usize * 512));
        }
        let size = nad
            .pointer("/spec/config")
            .and_then(Value::as_str)
            .map(str::len);
        let parsed = CniNetworkList::from_network_attachment_definition(&nad);
        if size.is_some_and(|size| size > MAX_OPAQUE_PARAMETERS_BYTES) {
            let error = parsed.expect_err("an oversized NAD spec.config accepted");
            assert_eq!(error.errors.len(), 1);
            assert_eq!(error.errors[0].path, "spec.config");
            assert!(error.errors[0].message.contains("bytes"), "{error}");
            return;
        }
        parsed
    } else if let Some(network) = input.get("network") {
        let bytes = serde_json::to_vec(network).expect("JSON encodes");
        CniNetworkList::parse(&bytes)
    } else {
        return;
    };
    let list = match parsed {
        Ok(list) => list,
        Err(error) => return check_config_error(&error),
    };
    let allowed = PluginAllowlist::default();
    let plugins_ok = policy::check_plugins(&list, &allowed);
    assert_eq!(
        plugins_ok.is_ok(),
        plugins_model(&list),
        "check_plugins gave {plugins_ok:?} for {:?}",
        list.plugins
    );
    if let Err(error) = &plugins_ok {
        check_config_error(error);
        for problem in &error.errors {
            assert!(problem.path.starts_with("plugins"), "{problem:?}");
        }
    }
    let device_field = input.get("deviceField").and_then(Value::as_str);
    let claim_ok = policy::check_claim_network(&list, device_field);
    if let Err(error) = &claim_ok {
        check_config_error(error);
    }
    // The claim's cni section as parse_config validates it (deviceField, overrides).
    let mut cni = Map::new();
    if let Some(field) = device_field {
        cni.insert("deviceField".into(), Value::String(field.to_owned()));
    }
    let overrides = match input.get("overrides") {
        Some(Value::Object(overrides)) => overrides.clone(),
        _ => Map::new(),
    };
    if !overrides.is_empty() {
        cni.insert("pluginOverrides".into(), Value::Object(overrides.clone()));
    }
    let claim_config = json!({
        "apiVersion": netclaim_api::API_VERSION,
        "kind": netclaim_api::KIND,
        "cni": cni,
    });
    let encoded = serde_json::to_vec(&claim_config).expect("JSON encodes");
    let config_ok = netclaim_api::parse_config(&encoded);
    let overrides = overrides.into_iter().collect();
    let overridden = policy::apply_plugin_overrides(&list, &overrides);
    if let Ok(after) = &overridden {
        assert_eq!(
            executables(after),
            executables(&list),
            "an override changed a type"
        );
        assert_eq!(after.plugins.len(), list.plugins.len());
    }
    let (Ok(()), Ok(_), Ok(list), Ok(())) = (claim_ok, config_ok, overridden, plugins_ok) else {
        return;
    };
    // check_plugins runs again on the overridden list, as prepare does.
    if policy::check_plugins(&list, &allowed).is_err() {
        return;
    }
    let device = DeviceRef {
        ifname: "eth1".into(),
        pci_address: Some("0000:03:00.1".into()),
    };
    let Ok(list) = substitute_device(&list, device_field, &device) else {
        return;
    };
    let substituted = device_fields(list.plugins[0].plugin_type(), device_field);
    for (index, plugin) in list.plugins.iter().enumerate() {
        let stdin = plugin_stdin(plugin, &list, None);
        if index == 0 {
            for field in &substituted {
                let (key, value) = go_field(&stdin, field).expect("a substituted field is set");
                assert_eq!(
                    (key.as_str(), value.as_str()),
                    (
                        field.as_str(),
                        Some(if field == "deviceID" {
                            "0000:03:00.1"
                        } else {
                            "eth1"
                        })
                    ),
                    "plugin 0 reads {field} from the claim's {key:?}, not the allocated device"
                );
            }
        }
        let ipam = go_field(&stdin, "ipam").map(|(_, ipam)| ipam);
        if let Some(Value::Object(ipam)) = ipam
            && let Some((_, read)) = go_field(ipam, "type")
        {
            let read = read.as_str().expect("a checked IPAM type is a string");
            assert!(
                allowed.permits(read),
                "plugins[{index}] runs IPAM type {read:?}"
            );
        }
        for (key, value) in &stdin {
            let exempt = key == "type"
                || key == "cniVersion"
                || key == "name"
                || (index == 0 && (substituted.contains(key) || key == "deviceID"));
            if exempt {
                continue;
            }
            let at = format!("plugins[{index}].{key}");
            if go_fold(key) == "ipam"
                && let Value::Object(ipam) = value
            {
                for (ipam_key, ipam_value) in ipam {
                    if go_fold(ipam_key) != "type" {
                        claim_entry_model(&format!("{at}.{ipam_key}"), ipam_key, ipam_value);
                    }
                }
                continue;
            }
            claim_entry_model(&at, key, value);
        }
    }
}

/// Which plugins `check_plugins` must accept, from the rules in `netclaim_api::policy`.
fn plugins_model(list: &CniNetworkList) -> bool {
    list.plugins.len() <= MAX_PLUGINS
        && list.plugins.iter().enumerate().all(|(index, plugin)| {
            let plugin_type = plugin.plugin_type().unwrap_or_default();
            // Every `type` of every `ipam`, in any spelling a Go plugin reads as those.
            let ipam_types_allowed = plugin
                .0
                .iter()
                .filter(|(key, _)| go_fold(key) == "ipam")
                .filter_map(|(_, ipam)| ipam.as_object())
                .flat_map(|ipam| ipam.iter().filter(|(key, _)| go_fold(key) == "type"))
                .all(|(_, t)| {
                    t.as_str()
                        .is_some_and(|t| DEFAULT_ALLOWED_PLUGINS.contains(&t))
                });
            DEFAULT_ALLOWED_PLUGINS.contains(&plugin_type)
                && ipam_types_allowed
                && (index == 0 || default_device_field(plugin_type).is_none())
                && (plugin_type != "host-device"
                    || !plugin.0.keys().any(|key| {
                        HOST_DEVICE_SELECTORS
                            .iter()
                            .any(|s| go_fold(s) == go_fold(key))
                    }))
        })
}

fn executables(list: &CniNetworkList) -> Vec<(Option<String>, Option<String>)> {
    list.plugins
        .iter()
        .map(|p| {
            (
                p.plugin_type().map(str::to_owned),
                p.0.get("ipam")
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            )
        })
        .collect()
}

/// A key as Go's `encoding/json` matches it to a struct field: case-insensitively, with
/// Unicode simple case folding (`ſ` U+017F matches `s`, the Kelvin sign U+212A `k`).
fn go_fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The key and value a Go plugin decodes into its field `field`: the last key, in the
/// order serde_json writes them, that folds to the field's name.
fn go_field<'a>(object: &'a Map<String, Value>, field: &str) -> Option<(&'a String, &'a Value)> {
    let folded = go_fold(field);
    object.iter().rfind(|(key, _)| go_fold(key) == folded)
}

/// What a claim's network may never hand a plugin, at any depth, as a Go plugin reads keys.
fn claim_entry_model(at: &str, key: &str, value: &Value) {
    let folded = go_fold(key);
    assert!(
        !DEVICE_KEYS
            .iter()
            .chain(&RUNTIME_KEYS)
            .any(|k| go_fold(k) == folded),
        "{at}: a claim's network hands a plugin {key:?}"
    );
    assert!(
        !(folded == "resolvconf"
            || ["dir", "path", "file", "socket"]
                .iter()
                .any(|s| folded.ends_with(s))),
        "{at}: a claim's network hands a plugin the path key {key:?}"
    );
    claim_value_model(at, value);
}

fn claim_value_model(at: &str, value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                claim_entry_model(&format!("{at}.{key}"), key, inner);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                claim_value_model(&format!("{at}[{index}]"), inner);
            }
        }
        Value::String(text) => assert!(
            !policy::looks_like_path(text),
            "{at}: a claim's network hands a plugin the path {text:?}"
        ),
        _ => {}
    }
}

/// CNI ADD results (`netclaim::cni::typed_result`) and what a claim's status reports of
/// them (`netclaim::cni::network_data`).
///
/// Properties: an accepted result's `ips[].interface` indexes are in range and the result
/// survives re-encoding; `network_data` for any interface name reports that name, at most
/// the 16 IPs the API allows, only addresses the result has, and the MAC of an interface
/// of that name.
pub fn cni_result(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let result = match typed_result(&raw) {
        Ok(result) => result,
        Err(message) => {
            assert!(!message.is_empty(), "an error without a message");
            return;
        }
    };
    for ip in &result.ips {
        if let Some(index) = ip.interface {
            assert!(
                index < result.interfaces.len(),
                "interface {index} accepted"
            );
        }
    }
    let encoded = serde_json::to_value(&result).expect("a result encodes");
    let again = typed_result(&encoded).expect("a re-encoded result parses");
    assert_eq!(again, result, "the result changed in a re-encoding");
    let names = result
        .interfaces
        .iter()
        .map(|interface| interface.name.as_str())
        .chain(["net1", ""]);
    for name in names {
        let Some(network) = network_data(&result, name) else {
            assert!(
                !result.interfaces.iter().any(|i| i.name == name),
                "no network data for interface {name:?}, which the result lists"
            );
            continue;
        };
        assert_eq!(network.interface_name, name);
        assert!(
            network.ips.len() <= 16,
            "{} IPs reported",
            network.ips.len()
        );
        for ip in &network.ips {
            assert!(result.ips.iter().any(|r| r.address == *ip), "{ip} invented");
        }
        if let Some(mac) = &network.hardware_address {
            assert!(
                result
                    .interfaces
                    .iter()
                    .any(|i| i.name == name && i.mac.as_ref() == Some(mac)),
                "MAC {mac} is not that of an interface {name:?}"
            );
        }
    }
}

/// The NRI socket multiplexer's receive path (`netclaim::nri::mux::read_frames`).
///
/// Input: one byte choosing the read size, then the bytes of the trunk. The reader runs
/// over them with conns 1 and 2 open, and is checked against a plain model of the wire
/// format: each conn receives exactly the concatenated payloads of its complete frames,
/// in order; the outcome is a clean end, EOF inside a frame, or an oversized frame (the
/// conn and length it announced) exactly when the model says so.
pub fn nri_mux(data: &[u8]) {
    let Some((&read_size, trunk)) = data.split_first() else {
        return;
    };
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let routes = HashMap::from([
        (mux::PLUGIN_SERVICE_CONN, tx1),
        (mux::RUNTIME_SERVICE_CONN, tx2),
    ]);
    let outcome =
        futures::executor::block_on(mux::read_frames(PieceReader::new(trunk, read_size), routes));
    let mut received = [Vec::new(), Vec::new()];
    for (rx, got) in [&mut rx1, &mut rx2].into_iter().zip(&mut received) {
        while let Ok(payload) = rx.try_recv() {
            got.extend_from_slice(&payload);
        }
    }
    let model = MuxModel::of(trunk);
    assert_eq!(received[0], model.conns[0], "conn 1 received other bytes");
    assert_eq!(received[1], model.conns[1], "conn 2 received other bytes");
    match (outcome, model.end) {
        (Ok(()), MuxEnd::Clean) => {}
        (Err(MuxError::Io(error)), MuxEnd::Truncated) => {
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof)
        }
        (Err(MuxError::OversizedFrame { conn, length }), MuxEnd::Oversized(c, l)) => {
            assert_eq!((conn, length), (c, l))
        }
        (outcome, end) => panic!("the reader ended with {outcome:?}, the model with {end:?}"),
    }
}

/// How a trunk ends, by the model.
#[derive(Debug)]
enum MuxEnd {
    Clean,
    Truncated,
    Oversized(u32, u32),
}

/// A plain reading of the mux wire format: `u32 BE conn | u32 BE length | payload`.
struct MuxModel {
    conns: [Vec<u8>; 2],
    end: MuxEnd,
}

impl MuxModel {
    fn of(mut trunk: &[u8]) -> Self {
        let mut conns = [Vec::new(), Vec::new()];
        let end = loop {
            if trunk.is_empty() {
                break MuxEnd::Clean;
            }
            let Some((header, rest)) = trunk.split_first_chunk::<8>() else {
                break MuxEnd::Truncated;
            };
            let conn = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if length as usize > mux::MAX_READ_PAYLOAD {
                break MuxEnd::Oversized(conn, length);
            }
            let Some((payload, rest)) = rest.split_at_checked(length as usize) else {
                break MuxEnd::Truncated;
            };
            match conn {
                mux::PLUGIN_SERVICE_CONN => conns[0].extend_from_slice(payload),
                mux::RUNTIME_SERVICE_CONN => conns[1].extend_from_slice(payload),
                _ => {}
            }
            trunk = rest;
        };
        MuxModel { conns, end }
    }
}

/// One conn's ttrpc stream (`netclaim::nri::ttrpc::read_frame`, `decode_request`,
/// `decode_response`) and the NRI messages the plugin's handlers decode from requests.
///
/// Input: one byte choosing the read size, then the stream. Properties: the frames read
/// are exactly those of a plain model of the framing (header, payload of the announced
/// length, oversized frames skipped), and the reader fails only on EOF inside a frame;
/// a decoded request came on an odd stream id; every NRI request payload decodes or fails
/// without panicking, and the deadlines the plugin derives from a request's timeout are
/// computed without overflow.
pub fn nri_ttrpc(data: &[u8]) {
    let Some((&read_size, stream)) = data.split_first() else {
        return;
    };
    let mut reader = PieceReader::new(stream, read_size);
    let mut model = stream;
    loop {
        let frame = futures::executor::block_on(ttrpc::read_frame(&mut reader));
        let expected = TtrpcModelFrame::next(&mut model);
        match (frame, expected) {
            (Ok(None), TtrpcModelFrame::End) => break,
            (Err(TtrpcError::Io(error)), TtrpcModelFrame::Truncated) => {
                assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
                break;
            }
            (Ok(Some(Frame::Oversized { header })), TtrpcModelFrame::Oversized(raw)) => {
                assert_eq!(header_bytes(&header), raw);
            }
            (Ok(Some(Frame::Message { header, payload })), TtrpcModelFrame::Message(raw, body)) => {
                assert_eq!(header_bytes(&header), raw);
                assert_eq!(&payload[..], body);
                ttrpc_message(header.kind, header.stream_id, payload);
            }
            (frame, expected) => {
                panic!("read_frame gave {frame:?}, the model {expected:?}")
            }
        }
    }
}

fn header_bytes(header: &ttrpc::FrameHeader) -> [u8; ttrpc::HEADER_LEN] {
    let mut raw = [0u8; ttrpc::HEADER_LEN];
    raw[..4].copy_from_slice(&header.length.to_be_bytes());
    raw[4..8].copy_from_slice(&header.stream_id.to_be_bytes());
    raw[8] = header.kind;
    raw[9] = header.flags;
    raw
}

/// The next frame of a ttrpc stream, by the model.
#[derive(Debug)]
enum TtrpcModelFrame<'a> {
    End,
    Truncated,
    Oversized([u8; ttrpc::HEADER_LEN]),
    Message([u8; ttrpc::HEADER_LEN], &'a [u8]),
}

impl<'a> TtrpcModelFrame<'a> {
    fn next(stream: &mut &'a [u8]) -> Self {
        if stream.is_empty() {
            return Self::End;
        }
        let Some((header, rest)) = stream.split_first_chunk::<{ ttrpc::HEADER_LEN }>() else {
            return Self::Truncated;
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some((payload, rest)) = rest.split_at_checked(length) else {
            return Self::Truncated;
        };
        *stream = rest;
        if length > ttrpc::MAX_MESSAGE_LEN {
            Self::Oversized(*header)
        } else {
            Self::Message(*header, payload)
        }
    }
}

/// Decodes one frame's payload the way the server (requests) or client (responses) does.
fn ttrpc_message(kind: u8, stream_id: u32, payload: Bytes) {
    match kind {
        ttrpc::TYPE_REQUEST => match ttrpc::decode_request(stream_id, payload) {
            Ok((context, message)) => {
                assert!(stream_id % 2 == 1, "a request on even stream {stream_id}");
                if let Some(timeout) = context.timeout {
                    deadlines(timeout);
                }
                if context.service == PLUGIN_SERVICE {
                    nri_request(&context.method, message);
                }
            }
            Err(status) => assert_eq!(status.code, ttrpc::code::INVALID_ARGUMENT),
        },
        ttrpc::TYPE_RESPONSE => {
            let _ = ttrpc::decode_response(payload);
        }
        _ => {}
    }
}

/// Decodes an NRI request as the plugin's handler for `method` does, and looks at what the
/// hooks read of it.
fn nri_request(method: &str, message: Bytes) {
    let pods: Vec<PodSandbox> = match method {
        "Configure" => {
            if let Ok(request) = ConfigureRequest::decode(message)
                && let Ok(ms) = u64::try_from(request.request_timeout)
                && ms > 0
            {
                deadlines(Duration::from_millis(ms));
            }
            Vec::new()
        }
        "Synchronize" => SynchronizeRequest::decode(message)
            .map(|request| request.pods)
            .unwrap_or_default(),
        "StateChange" => StateChangeEvent::decode(message)
            .ok()
            .and_then(|event| event.pod)
            .into_iter()
            .collect(),
        "RunPodSandbox" => RunPodSandboxRequest::decode(message)
            .ok()
            .and_then(|request| request.pod)
            .into_iter()
            .collect(),
        "StopPodSandbox" => StopPodSandboxRequest::decode(message)
            .ok()
            .and_then(|request| request.pod)
            .into_iter()
            .collect(),
        "RemovePodSandbox" => RemovePodSandboxRequest::decode(message)
            .ok()
            .and_then(|request| request.pod)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for pod in &pods {
        if let Some(path) = network_namespace_path(pod) {
            assert!(!path.is_empty());
        }
    }
}

/// The deadline arithmetic a runtime-supplied timeout goes through in the plugin.
fn deadlines(timeout: Duration) {
    let budget = handler_budget(timeout);
    assert!(budget <= timeout);
    let deadline = HookDeadline::for_runtime("fuzz", budget, timeout);
    let _ = deadline.work_budget();
    let _ = deadline.expiry_message("fuzzing");
}

/// Checkpoint records (`netclaim::checkpoint::decode_durable`, `decode_volatile`,
/// `decode_record`) and netclaim 0.1 checkpoints (`netclaim::checkpoint::decode_legacy`).
///
/// Input: one byte choosing the mode, then the bytes. Modes: 0, a durable record file
/// (slotted or a single record); 1, a volatile one (damaged slots, and single records that
/// are not JSON, are ignored); 2, the bytes as the `data` of an envelope with a correct
/// checksum (so the fuzzer reaches the claim decoding behind the checksum); 3, a 0.1
/// checkpoint file; 4, the bytes as the `data` of a 0.1 checkpoint with a correct
/// checksum. Properties: a volatile file is ignored only when it has the slotted shape or
/// is not JSON; every loaded claim is written back ([`checkpoint::encode`]) to a record
/// that loads as the same claim and `seq`.
pub fn checkpoint(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => durable(bytes),
        1 => volatile(bytes),
        2 => record(&record_around(bytes), false),
        3 => legacy(bytes),
        _ => {
            if let Ok(data) = serde_json::from_slice::<Value>(bytes) {
                legacy(&legacy_around(&data));
            }
        }
    }
}

fn record(bytes: &[u8], torn_ok: bool) {
    match checkpoint::decode_record(bytes, torn_ok) {
        Ok(Some((seq, claim))) => written_back(seq, &claim),
        Ok(None) => assert!(
            torn_ok && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err(),
            "a record that is JSON was ignored"
        ),
        Err(reason) => assert!(!reason.is_empty(), "corrupt without a reason"),
    }
}

fn volatile(bytes: &[u8]) {
    match checkpoint::decode_volatile(bytes) {
        Ok(Some(record)) => {
            written_back(record.seq, &record.claim);
            if let Some(slots) = record.slots {
                assert_eq!(2 * slots.size, bytes.len(), "slots cover the file");
            }
        }
        // Ignored: damaged slots, or a single record that is not JSON.
        Ok(None) => assert!(
            bytes.len().is_multiple_of(8192)
                || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err(),
            "a single volatile record that is JSON was ignored"
        ),
        Err(reason) => assert!(!reason.is_empty(), "corrupt without a reason"),
    }
}

fn durable(bytes: &[u8]) {
    match checkpoint::decode_durable(bytes) {
        Ok(record) => {
            written_back(record.seq, &record.claim);
            if let Some(slots) = record.slots {
                assert_eq!(2 * slots.size, bytes.len(), "slots cover the file");
            }
        }
        Err(reason) => assert!(!reason.is_empty(), "corrupt without a reason"),
    }
}

fn legacy(bytes: &[u8]) {
    match checkpoint::decode_legacy(bytes) {
        Ok(claims) => {
            for claim in &claims {
                written_back(1, claim);
            }
        }
        Err(reason) => assert!(!reason.is_empty(), "corrupt without a reason"),
    }
}

fn written_back(seq: u64, claim: &netclaim::state::PreparedClaim) {
    let encoded = checkpoint::encode(claim, seq).expect("a loaded claim encodes");
    match checkpoint::decode_record(&encoded, false) {
        Ok(Some((again_seq, again))) => {
            assert_eq!(again_seq, seq);
            assert_eq!(&again, claim, "the claim changed in a write and a load");
        }
        other => panic!(
            "the record written for a loaded claim loads as {other:?}\n{}",
            String::from_utf8_lossy(&encoded)
        ),
    }
}

/// A version 2 record envelope around `data`, with the checksum the driver writes.
fn record_around(data: &[u8]) -> Vec<u8> {
    let checksum = hex::encode(Sha256::digest(data));
    let mut out = format!(r#"{{"version":2,"seq":7,"checksum":"{checksum}","data":"#).into_bytes();
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// A netclaim 0.1 checkpoint of `data`: the checksum is over key-sorted compact JSON.
fn legacy_around(data: &Value) -> Vec<u8> {
    let canonical = serde_json::to_vec(&sorted(data)).expect("JSON encodes");
    let checksum = hex::encode(Sha256::digest(&canonical));
    serde_json::to_vec(&json!({"version": 1, "checksum": checksum, "data": data}))
        .expect("JSON encodes")
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// An in-memory stream that hands out at most `piece` bytes per read: `read_size` 0
/// means everything at once, otherwise `read_size % 16 + 1` bytes (1 to 16), so headers
/// and payloads arrive split at every offset. Never pending.
struct PieceReader<'a> {
    rest: &'a [u8],
    piece: usize,
}

impl<'a> PieceReader<'a> {
    fn new(bytes: &'a [u8], read_size: u8) -> Self {
        let piece = match read_size {
            0 => usize::MAX,
            n => usize::from(n % 16) + 1,
        };
        PieceReader { rest: bytes, piece }
    }
}

impl AsyncRead for PieceReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.rest.len().min(self.piece).min(buf.remaining());
        let (head, tail) = self.rest.split_at(n);
        buf.put_slice(head);
        self.rest = tail;
        Poll::Ready(Ok(()))
    }
}
