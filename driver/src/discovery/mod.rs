//! NIC discovery (not yet written)
