//! c10d's key-value stores: the TCPStore every worker rendezvouses through, and PrefixStore
//! namespaces on it.

use std::ffi::CString;
use std::ptr::NonNull;
use std::time::Duration;

use super::ffi;
use super::DistError;

/// A c10d store (TCPStore or a PrefixStore over one). Thread-safe on the C++ side.
#[derive(Debug)]
pub struct Store {
    raw: NonNull<ffi::RawStore>,
    /// Where the store lives, for messages.
    address: String,
}

// SAFETY: c10d stores serialise their own socket access; the handle is only freed on drop.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

fn c_string(what: &str, text: &str) -> Result<CString, DistError> {
    CString::new(text)
        .map_err(|_| DistError::Invalid(format!("{what} {text:?} contains a NUL byte")))
}

impl Store {
    /// Connects to (or, with `is_server`, hosts) the TCPStore at `host:port` and waits until
    /// `world_size` workers have joined, up to `timeout` (which also bounds later waits).
    pub fn tcp(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        let address = format!("{host}:{port}");
        let c_host = c_string("master address", host)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer; the shim catches every C++ exception.
        let result = ffi::check(unsafe {
            ffi::txcat_c10d_tcp_store_new(
                c_host.as_ptr(),
                port,
                i32::from(is_server),
                world_size as i32,
                timeout.as_millis() as i64,
                &mut raw,
            )
        });
        result.map_err(|message| DistError::Store {
            address: address.clone(),
            message,
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| DistError::Store {
            address: address.clone(),
            message: "the shim returned no store".into(),
        })?;
        Ok(Self { raw, address })
    }

    /// A view of this store whose keys all start with `prefix/`.
    pub fn prefixed(&self, prefix: &str) -> Result<Self, DistError> {
        let c_prefix = c_string("store prefix", prefix)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid pointers; the base store outlives the call (PrefixStore keeps a reference).
        let result = ffi::check(unsafe {
            ffi::txcat_c10d_prefix_store_new(c_prefix.as_ptr(), self.raw.as_ptr(), &mut raw)
        });
        result.map_err(|message| self.error(message))?;
        let raw =
            NonNull::new(raw).ok_or_else(|| self.error("the shim returned no store".into()))?;
        Ok(Self {
            raw,
            address: format!("{}/{prefix}", self.address),
        })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let c_key = c_string("store key", key)?;
        // SAFETY: valid key, value pointer and length.
        ffi::check(unsafe {
            ffi::txcat_c10d_store_set(
                self.raw.as_ptr(),
                c_key.as_ptr(),
                value.as_ptr(),
                value.len(),
            )
        })
        .map_err(|message| self.error(message))
    }

    /// The value of `key`, waiting for it to be set up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        let c_key = c_string("store key", key)?;
        let mut bytes = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: valid key and out-pointers.
        ffi::check(unsafe {
            ffi::txcat_c10d_store_get(self.raw.as_ptr(), c_key.as_ptr(), &mut bytes, &mut len)
        })
        .map_err(|message| self.error(message))?;
        if bytes.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: the shim malloc'ed `len` bytes at `bytes`; copied, then freed once.
        let out = unsafe { std::slice::from_raw_parts(bytes, len) }.to_vec();
        unsafe { ffi::txcat_c10d_free_bytes(bytes) };
        Ok(out)
    }

    pub(super) fn raw(&self) -> *const ffi::RawStore {
        self.raw.as_ptr()
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn error(&self, message: String) -> DistError {
        DistError::Store {
            address: self.address.clone(),
            message,
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by the shim, freed once (c10d's refcount keeps it alive for groups).
        unsafe { ffi::txcat_c10d_store_free(self.raw.as_ptr()) };
    }
}
