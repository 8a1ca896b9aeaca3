//! Keeping the daemon's resident memory close to what it uses (glibc malloc).
//!
//! A discovery pass and a slice write build and drop megabytes with 1,000 NICs (device
//! attributes, JSON bodies). glibc keeps freed memory in its arenas, one per thread that
//! ever allocated (up to 8 per core), and returns it to the kernel only from the top of the
//! main heap, so an idle daemon kept the high-water mark of every thread's arena resident:
//! 65 MiB with 1,000 devices published, 22 MiB with 4 (`discovery` bench). Two measures:
//! - [`limit_arenas`] at start-up: two arenas (the runtime has two workers; blocking-pool
//!   threads share them), so freed memory is reused across threads instead of stranded in
//!   per-thread arenas.
//! - [`give_back_free_memory`] after the work that builds the most (a slice write after the
//!   device list changed): `malloc_trim(0)` returns every free page of every arena to the
//!   kernel (`madvise(MADV_DONTNEED)` inside the heaps, not only the top). It walks the
//!   arenas under their locks, so it runs on the blocking pool, never on a runtime worker.
//!
//! Other C libraries (musl) return memory by themselves; there both are no-ops.

/// Limits glibc malloc to two arenas. Call before the runtime starts its threads.
// The workspace denies unsafe code; these two foreign calls are the only exceptions, each
// with its proof below.
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

/// Returns the heap's free pages to the kernel, on the blocking pool.
#[allow(unsafe_code)]
pub async fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trimmed = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim takes an integer (the padding to keep at the top of the
            // heap) and is thread-safe: it takes each arena's lock while it works.
            unsafe { nix::libc::malloc_trim(0) }
        })
        .await;
        if let Err(error) = trimmed {
            tracing::debug!("returning free heap memory to the kernel: {error}");
        }
    }
}
