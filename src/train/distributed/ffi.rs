//! The C ABI of csrc/c10d_shim.cpp (compiled by build.rs). Every function returning
//! `*mut c_char` returns NULL on success or a malloc'ed error message.

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct RawStore {
    _private: [u8; 0],
}

#[repr(C)]
pub struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    pub fn txcat_c10d_free_bytes(b: *mut u8);

    pub fn txcat_c10d_tcp_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
    ) -> *mut c_char;
    pub fn txcat_c10d_prefix_store_new(
        prefix: *const c_char,
        base: *const RawStore,
        out: *mut *mut RawStore,
    ) -> *mut c_char;
    pub fn txcat_c10d_store_free(store: *mut RawStore);
    pub fn txcat_c10d_store_set(
        store: *mut RawStore,
        key: *const c_char,
        value: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn txcat_c10d_store_get(
        store: *mut RawStore,
        key: *const c_char,
        value: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;

    pub fn txcat_c10d_gloo_new(
        store: *const RawStore,
        rank: c_int,
        size: c_int,
        hostname: *const c_char,
        iface: *const c_char,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    pub fn txcat_c10d_nccl_new(
        plugin: *const c_char,
        store: *const RawStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    pub fn txcat_c10d_group_free(group: *mut RawGroup);

    /// `tensor` is the `at::Tensor*` behind a tch `C_tensor` pointer.
    pub fn txcat_c10d_allreduce(
        group: *mut RawGroup,
        tensor: *mut c_void,
        op: c_int,
    ) -> *mut c_char;
    pub fn txcat_c10d_broadcast(
        group: *mut RawGroup,
        tensor: *mut c_void,
        root: c_int,
    ) -> *mut c_char;
    pub fn txcat_c10d_barrier(group: *mut RawGroup) -> *mut c_char;
    pub fn txcat_c10d_allgather(
        group: *mut RawGroup,
        input: *mut c_void,
        output: *mut c_void,
    ) -> *mut c_char;
}

/// Turns a shim result into `Err(message)` (freeing the C string).
pub fn check(err: *mut c_char) -> Result<(), String> {
    crate::shim::take_error(err)
}
