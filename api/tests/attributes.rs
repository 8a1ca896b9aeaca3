//! Attribute names and values at the API's limits.
// Test helpers outside #[test] fns may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use netclaim_api::DRIVER_NAME;
use netclaim_api::attributes::*;

#[test]
fn c_identifier_limits() {
    assert!(is_c_identifier(&"a".repeat(32)));
    assert!(!is_c_identifier(&"a".repeat(33)));
    assert!(is_c_identifier("_x1"));
    for bad in ["", "1x", "a-b", "a.b", "a/b", "é"] {
        assert!(!is_c_identifier(bad), "{bad:?}");
    }
}

#[test]
fn dns_label_limits() {
    assert!(is_dns_label(&"a".repeat(63)));
    assert!(!is_dns_label(&"a".repeat(64)));
    assert!(is_dns_label("0"));
    for bad in ["", "-a", "a-", "A", "a_b", "a.b"] {
        assert!(!is_dns_label(bad), "{bad:?}");
    }
}

#[test]
fn qualified_name_limits() {
    let domain_63 = format!("{}.io", "d".repeat(60));
    assert_eq!(domain_63.len(), 63);
    assert!(is_qualified_name(&format!("{domain_63}/x")));
    assert!(!is_qualified_name(&format!("d{domain_63}/x")));
    assert!(is_qualified_name(&format!(
        "netclaim.dev/{}",
        "a".repeat(32)
    )));
    assert!(!is_qualified_name(&format!(
        "netclaim.dev/{}",
        "a".repeat(33)
    )));
    for bad in [
        "/x",
        "netclaim.dev/",
        "a/b/c",
        "-a.io/x",
        "a..io/x",
        "UPPER.io/x",
    ] {
        assert!(!is_qualified_name(bad), "{bad:?}");
    }
}

#[test]
fn published_names_are_valid_and_distinct() {
    let unique: BTreeSet<_> = NETCLAIM_ATTRIBUTES.iter().collect();
    assert_eq!(unique.len(), NETCLAIM_ATTRIBUTES.len());
    assert!(NETCLAIM_ATTRIBUTES.len() <= MAX_ATTRIBUTES_PER_DEVICE);
    for name in NETCLAIM_ATTRIBUTES {
        assert!(is_c_identifier(name), "{name}");
        assert!(is_qualified_name(&qualified(name)), "{name}");
    }
    for name in [PCIE_ROOT, MULTUS_RESOURCE_NAME, MULTUS_DEVICE_ID] {
        assert!(is_qualified_name(name), "{name}");
    }
    assert_eq!(qualified(IF_NAME), format!("{DRIVER_NAME}/ifName"));
    assert!(PCIE_ROOT.starts_with(&format!("{KUBERNETES_DOMAIN}/")));
    assert!(MULTUS_RESOURCE_NAME.starts_with(&format!("{MULTUS_DOMAIN}/")));
    assert!(MULTUS_DEVICE_ID.starts_with(&format!("{MULTUS_DOMAIN}/")));
    assert_eq!(DRIVER_DOMAIN, DRIVER_NAME);
}

#[test]
fn api_limits() {
    assert_eq!(MAX_ATTRIBUTES_PER_DEVICE, 32);
    assert_eq!(MAX_STRING_VALUE_LEN, 64);
    assert_eq!(MAX_DEVICES_PER_SLICE, 128);
    assert_eq!(MAX_OPAQUE_PARAMETERS_BYTES, 10240);
}

#[test]
fn truncate_value_limits() {
    let exactly = "v".repeat(64);
    assert_eq!(truncate_value(&exactly), exactly);
    assert_eq!(truncate_value(&format!("{exactly}w")), exactly);
    // A 3-byte character straddling byte 64 is dropped whole.
    let straddling = format!("{}€", "v".repeat(62));
    assert_eq!(truncate_value(&straddling), "v".repeat(62));
}

#[test]
fn device_names() {
    assert_eq!(
        device_name_for("ens3", Some("0000:03:00.0")),
        "pci-0000-03-00-0"
    );
    assert_eq!(device_name_for("eth1", None), "eth1");
    assert_eq!(device_name_for("eth1", Some("not-pci")), "eth1");
    // Sanitized or ambiguous names get a stable hash suffix.
    let vlan = device_name_for("eth1.100", None);
    assert!(
        vlan.starts_with("eth1-100-") && vlan.len() == "eth1-100-".len() + 8,
        "{vlan}"
    );
    assert_eq!(device_name_for("eth1.100", None), vlan, "stable");
    assert_ne!(device_name_for("ETH0", None), device_name_for("eth0", None));
    assert_ne!(device_name_for("eth1_100", None), vlan);
    assert_ne!(
        device_name_for("pci-0000-03-00-0", None),
        "pci-0000-03-00-0"
    );
    for name in [
        "ETH0",
        "eth1.100",
        "_",
        "-",
        "",
        "pci-0000-03-00-0",
        "a💥b",
        &"x".repeat(80),
        &"Y".repeat(80),
    ] {
        let device = device_name_for(name, None);
        assert!(is_dns_label(&device), "{name:?} gave {device:?}");
    }
}
