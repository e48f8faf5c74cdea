//! otapack-core: the otapack update package format, for devices and hosts alike.
//!
//! `#![no_std]`, no allocation unless the `alloc` feature (owned representations and emit),
//! `rsa` (RSA verification) or `zstd` (zstd slices, otapack-zstd: one fixed allocation of
//! its tables and window, sized from the manifest) is enabled.
//!
//! - [`wire`]: the container, one module per structure: checked zero-copy views, and `Repr`s
//!   with `emit` behind `alloc`. `docs/format.md` is the byte-level spec.
//! - [`package::Package`]: a whole package, structurally checked.
//! - [`keys`]: trusted keys and signature checks; [`verify`]: whole-package verification;
//!   [`decode`]: slice decoding with digest checks.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod apply;
pub mod decode;
pub mod error;
pub mod inplace;
pub mod keys;
pub mod package;
pub mod patch;
pub mod policy;
pub mod predict;
pub mod ram;
pub mod session;
pub mod state;
pub mod verify;
pub mod wire;

pub use error::{Error, Result};
pub use package::Package;
