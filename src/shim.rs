//! The Rust half of the C++ shims' error convention (csrc/guarded.h): an entry point returns NULL
//! on success or a malloc'ed, NUL-terminated message, which the caller reads and frees here.

use std::ffi::{c_char, CStr};

/// `Ok` for NULL, else the message (the C string is freed).
pub(crate) fn take_error(err: *mut c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: non-null results are NUL-terminated strings the shim malloc'ed.
    let message = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: freed once, with the C allocator that made it (guarded.h's dup_string).
    unsafe { libc::free(err.cast()) };
    Err(message)
}
