//! Attribute names, API limits and name checks: netclaim's API crate owns them
//! (`netclaim_api::attributes`); discovery uses them through this one re-export so that
//! every call site reads `names::…`.

pub use netclaim_api::attributes::*;
