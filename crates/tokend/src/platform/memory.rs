//! Keeping the daemon small: glibc's allocator gives each thread that
//! allocates an arena of its own and keeps what is freed for later, so a
//! daemon that starts a thousand sites or rewrites its store a thousand
//! times would keep that peak for its whole life. One arena, and freed
//! pages handed back once a burst of work is over.

use std::time::Duration;

use tokio::sync::Notify;

/// Quiet time after the last piece of work before freed memory is returned.
const QUIET: Duration = Duration::from_secs(2);

/// Called once, before any thread starts.
pub(crate) fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes plain integers; it only changes the allocator's
    // policy, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // A fixed threshold (glibc raises its own after each large free):
        // large, brief buffers (the file store's text with a thousand
        // sites) are mapped and unmapped whole instead of being carved
        // from the heap between small long-lived allocations.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Hands free pages back to the system.
pub(crate) fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Told of each piece of work done (a connection served); returns freed
/// memory once the daemon has been quiet for a moment. No work, no wakeups.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    work: Notify,
}

impl Trimmer {
    pub(crate) fn worked(&self) {
        self.work.notify_one();
    }

    pub(crate) async fn run(&self) {
        loop {
            self.work.notified().await;
            while tokio::time::timeout(QUIET, self.work.notified())
                .await
                .is_ok()
            {}
            release();
        }
    }
}
