//! Windows: who a process runs as. The default pipe is named after the
//! user's SID, so the client and the daemon must read it the same way: this
//! is the one place that does.

use std::io;

use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::{GetTokenInformation, TokenUser, TOKEN_QUERY, TOKEN_USER};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// The `TOKEN_USER` of `process` (its user's SID and the buffer the SID
/// points into): compare two with `EqualSid` through [`TokenUserBuf::sid`].
#[derive(Debug)]
pub struct TokenUserBuf(Vec<u8>);

impl TokenUserBuf {
    /// The SID; valid while `self` lives.
    pub fn sid(&self) -> windows_sys::Win32::Security::PSID {
        // SAFETY: the buffer starts with a TOKEN_USER (GetTokenInformation
        // succeeded) whose SID pointer points into the same buffer.
        unsafe { std::ptr::read_unaligned(self.0.as_ptr().cast::<TOKEN_USER>()) }
            .User
            .Sid
    }
}

/// The user `process` runs as.
///
/// # Safety
///
/// `process` must be a valid process handle with query access (or the
/// current-process pseudo-handle) for the duration of the call.
pub unsafe fn token_user(process: HANDLE) -> io::Result<TokenUserBuf> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is valid (the caller's promise); `token` receives a
    // handle that is closed below.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 256];
    let mut len = 0u32;
    // SAFETY: `buf` is writable for `buf.len()` bytes; `len` receives the size used.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            buf.len() as u32,
            &mut len,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: opened above, not used after this.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return Err(err);
    }
    Ok(TokenUserBuf(buf))
}

/// The current user's SID as a string (`S-1-5-21-…`).
pub fn current_user_sid() -> io::Result<String> {
    // SAFETY: the current-process pseudo-handle is always valid.
    let user = unsafe { token_user(GetCurrentProcess()) }?;
    let mut wide: *mut u16 = std::ptr::null_mut();
    // SAFETY: the SID is valid while `user` lives; `wide` receives a
    // LocalAlloc'd NUL-terminated string that is freed below.
    if unsafe { ConvertSidToStringSidW(user.sid(), &mut wide) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `wide` is NUL-terminated; it is read up to the NUL, then freed.
    unsafe {
        let mut n = 0;
        while *wide.add(n) != 0 {
            n += 1;
        }
        let sid = String::from_utf16_lossy(std::slice::from_raw_parts(wide, n));
        LocalFree(wide as _);
        Ok(sid)
    }
}
