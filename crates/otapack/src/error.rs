//! Host-side errors: a package error from the core, or something about files, keys and images.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// The package (or a key) was rejected by the format/verification rules.
    Package(otapack_core::Error),
    /// Reading or writing a file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A key file could not be used.
    Key {
        path: Option<PathBuf>,
        reason: String,
    },
    /// A firmware image could not be loaded.
    Image { path: PathBuf, reason: String },
    /// The request itself is not valid (bad option value, impossible combination).
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Package(e) => write!(f, "{e}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Key {
                path: Some(p),
                reason,
            } => write!(f, "key {}: {reason}", p.display()),
            Error::Key { path: None, reason } => write!(f, "key: {reason}"),
            Error::Image { path, reason } => write!(f, "image {}: {reason}", path.display()),
            Error::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Package(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<otapack_core::Error> for Error {
    fn from(e: otapack_core::Error) -> Self {
        Error::Package(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Attaches a path to an I/O error.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
