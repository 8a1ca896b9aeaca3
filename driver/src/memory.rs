//! Keeping the daemon's resident memory close to what it uses (glibc malloc).
//!
//! A discovery pass and a slice write build and drop megabytes with 1,000 NICs (device
//! attributes, JSON bodies). glibc keeps freed memory in its arenas, one per thread that
//! ever allocated (up to 8 per core), and returns it to the kernel only from the top of the
//! main heap, so an idle daemon kept the high-water mark of every thread's arena resident:
//! 65 MiB with 1,000 devices published, 22 MiB with 4 (`discovery` bench). So
//! [`limit_arenas`] at start-up: two arenas (the runtime has two workers; blocking-pool
//! threads share them), so freed memory is reused across threads instead of stranded in
//! per-thread arenas.
//!
//! Refused: `malloc_trim(0)` after each slice write. It walks every arena under its lock,
//! and with it the node_health test's carrier-loss report missed its one-second bound in
//! 2 of 5 runs (0 of 5 without): a hook or health report waiting on malloc's lock costs
//! more than the megabytes it returns.
//!
//! Other C libraries (musl) do not have arenas; there this is a no-op.

/// Limits glibc malloc to two arenas. Call before the runtime starts its threads.
// The workspace denies unsafe code; this foreign call is the only exception, with its
// proof below.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and only changes malloc's tunables; called
        // from the main thread before any other thread exists, so no allocation races it.
        // M_ARENA_MAX is -8 in glibc's malloc.h; a failure (returns 0) keeps the default.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
        }
    }
}
