//! Bytes that held secrets on their way in are overwritten before their
//! memory is freed. Without a dependency (the client is std only): a
//! volatile write per byte, which the compiler may not elide.

/// Overwrites `bytes` with zeros.
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, exclusive reference into `bytes`; a
        // volatile write keeps the compiler from eliding the wipe.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Appends `data` to `buf` without leaving a copy behind: where `Vec`
/// would reallocate (and free the old block as it was), the bytes move to
/// a larger block and the old one is wiped first. Grows to at most
/// `limit` bytes of capacity when `buf.len() + data.len()` fits in it.
pub fn extend_wiped(buf: &mut Vec<u8>, data: &[u8], limit: usize) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let capacity = needed.max(buf.capacity() * 2).min(limit.max(needed));
        let mut grown = Vec::with_capacity(capacity);
        grown.extend_from_slice(buf);
        wipe(buf);
        *buf = grown;
    }
    buf.extend_from_slice(data);
}

/// A line read from the socket: its bytes (a request's or an answer's, so
/// maybe a secret) are wiped when it is dropped. Reads as a byte slice.
#[derive(PartialEq, Eq)]
pub struct Line(Vec<u8>);

impl Line {
    pub fn new(bytes: Vec<u8>) -> Line {
        Line(bytes)
    }
}

impl From<Vec<u8>> for Line {
    fn from(bytes: Vec<u8>) -> Line {
        Line(bytes)
    }
}

impl std::ops::Deref for Line {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Line({} bytes)", self.0.len())
    }
}

/// A global allocator for tests that finds secrets left in freed memory:
/// while armed, every block freed (or moved by a reallocation) is searched
/// for a marker. Install it with `#[global_allocator]` in a test binary.
#[cfg(test)]
pub(crate) mod leak_check {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// What the tests put in their secrets.
    pub(crate) const MARKER: &[u8] = b"SECRET-MARKER-7f3a";

    pub(crate) struct Checking;

    static ARMED: AtomicBool = AtomicBool::new(false);
    static FOUND: AtomicUsize = AtomicUsize::new(0);
    /// One armed test at a time.
    pub(crate) static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn check(ptr: *const u8, size: usize) {
        if !ARMED.load(Ordering::Relaxed) || size < MARKER.len() {
            return;
        }
        // SAFETY: `ptr` points to `size` bytes of a live block (about to be freed).
        let block = unsafe { std::slice::from_raw_parts(ptr, size) };
        if block.windows(MARKER.len()).any(|w| w == MARKER) {
            FOUND.fetch_add(1, Ordering::Relaxed);
        }
    }

    // SAFETY: every call is passed to `System` unchanged; `check` only reads
    // the block before it is freed.
    unsafe impl GlobalAlloc for Checking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            check(ptr, layout.size());
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as `GlobalAlloc::realloc`'s default: a new block, the
            // bytes copied, the old block freed (and checked).
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new = System.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }

    /// Runs `f` armed; the number of freed blocks that held the marker.
    pub(crate) fn freed_with_marker(f: impl FnOnce()) -> usize {
        let _turn = TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        FOUND.store(0, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        f();
        ARMED.store(false, Ordering::SeqCst);
        FOUND.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
#[global_allocator]
static CHECKING: leak_check::Checking = leak_check::Checking;

#[cfg(test)]
mod tests {
    use super::leak_check::{freed_with_marker, MARKER};
    use super::*;

    #[test]
    fn a_line_is_wiped_when_dropped() {
        let found = freed_with_marker(|| {
            let mut bytes = b"{\"token\":\"".to_vec();
            bytes.extend_from_slice(MARKER);
            drop(Line::new(bytes));
        });
        assert_eq!(found, 0);
        // The check itself sees an unwiped block.
        let found = freed_with_marker(|| drop(std::hint::black_box(MARKER.to_vec())));
        assert_eq!(found, 1);
    }

    #[test]
    fn growing_leaves_no_copy_behind() {
        let found = freed_with_marker(|| {
            let mut buf = Vec::new();
            extend_wiped(&mut buf, MARKER, 1 << 20);
            for _ in 0..100 {
                extend_wiped(&mut buf, b"more bytes", 1 << 20);
            }
            assert!(buf.starts_with(MARKER));
            wipe(&mut buf);
        });
        assert_eq!(found, 0);
    }
}
