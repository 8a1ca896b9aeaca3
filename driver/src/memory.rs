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
//! Taken instead: [`trim_once`], one `malloc_trim(0)` after the first slices are written.
//! The start-up peak (the first discovery pass and the first slice writes hold ~18 MB at
//! once with 1,000 NICs) is otherwise kept as free memory inside the arenas for the
//! daemon's whole life, since later passes reuse only part of it; one walk of the heap at
//! start-up, timed and logged, is a bounded price for that.
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

/// Returns the free memory inside malloc's arenas to the kernel, the first time it is
/// called (later calls do nothing and return `None`). Returns how long malloc's locks were
/// held. Blocking: call it from a blocking thread.
// The workspace denies unsafe code; this foreign call is the second exception, with its
// proof below.
#[allow(unsafe_code)]
pub fn trim_once() -> Option<std::time::Duration> {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    let started = std::time::Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer and works only on malloc's own structures,
        // under malloc's own locks (glibc documents it MT-Safe), so it cannot race any
        // allocation of ours and reads or writes no memory we own; it returns whether it
        // released anything, which is not needed.
        unsafe {
            nix::libc::malloc_trim(0);
        }
    }
    Some(started.elapsed())
}
