//! Ethernet MAC addresses as users write them: six hex octets separated by colons.

/// Parses `02:00:5e:10:00:01` (either case) into its six octets.
///
/// Only the colon form is accepted: it is what `ip link` prints and what the kernel's
/// sysfs `address` file holds, so a config copied from either parses.
///
/// # Errors
/// A message naming what is wrong with the text, for a [`crate::FieldError`].
///
/// # Example
/// ```
/// assert_eq!(
///     netclaim_api::mac::parse_mac("02:00:5E:10:00:01"),
///     Ok([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01])
/// );
/// assert!(netclaim_api::mac::parse_mac("02:00:5e:10:00").is_err());
/// ```
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let mut octets = [0u8; 6];
    let mut parts = text.split(':');
    for octet in &mut octets {
        let part = parts.next().unwrap_or_default();
        *octet = parse_octet(part).ok_or_else(|| not_a_mac(text))?;
    }
    if parts.next().is_some() {
        return Err(not_a_mac(text));
    }
    Ok(octets)
}

/// True for a group (multicast or broadcast) address: the I/G bit, the lowest bit of the
/// first octet, is set. Such an address cannot be an interface's own address.
pub fn is_multicast(octets: &[u8; 6]) -> bool {
    octets[0] & 1 == 1
}

/// Parses exactly two hex digits; `u8::from_str_radix` alone would take `+f` or `f`.
fn parse_octet(part: &str) -> Option<u8> {
    if part.len() == 2 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(part, 16).ok()
    } else {
        None
    }
}

fn not_a_mac(text: &str) -> String {
    format!("{text:?} is not a MAC address: want six two-digit hex octets like 02:00:00:00:00:01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_cases() {
        assert_eq!(
            parse_mac("aa:BB:cc:DD:ee:FF"),
            Ok([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "2:00:00:00:00:01",
            "+2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "02:00:00:00:00:01:",
            "020000000001",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn multicast_bit() {
        assert!(is_multicast(&[0x01, 0, 0x5e, 0, 0, 1]));
        assert!(is_multicast(&[0xff; 6]));
        assert!(!is_multicast(&[0x02, 0, 0, 0, 0, 1]));
    }
}
