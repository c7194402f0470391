//! One error type for every filesystem operation, shared by the Connect
//! service (mapped to Connect codes) and the plain-HTTP `/files` endpoints
//! (mapped to HTTP statuses).

use std::io;

use connectrpc::ConnectError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The disk (or the inode table) is full.
    #[error("{context}: {source}")]
    NoSpace { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    Internal(String),
}

impl FsError {
    /// Classifies an I/O error by its kind so callers get `not_found`,
    /// `permission_denied`, ... instead of a blanket `internal`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                return FsError::NoSpace { context, source };
            }
            Some(libc::ELOOP) => {
                return FsError::FailedPrecondition(format!(
                    "{context}: cyclic symlink or too many links: {source}"
                ));
            }
            Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) | Some(libc::EISDIR) => {
                return FsError::InvalidArgument(format!("{context}: {source}"));
            }
            _ => {}
        }
        match source.kind() {
            io::ErrorKind::NotFound => FsError::NotFound(format!("{context}: {source}")),
            io::ErrorKind::PermissionDenied => {
                FsError::PermissionDenied(format!("{context}: {source}"))
            }
            io::ErrorKind::AlreadyExists => FsError::AlreadyExists(format!("{context}: {source}")),
            _ => FsError::Io { context, source },
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            FsError::InvalidArgument(_) | FsError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
            FsError::NotFound(_) => StatusCode::NOT_FOUND,
            FsError::AlreadyExists(_) => StatusCode::CONFLICT,
            FsError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            FsError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            FsError::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            FsError::Io { .. } | FsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<FsError> for ConnectError {
    fn from(err: FsError) -> Self {
        let message = err.to_string();
        match err {
            FsError::InvalidArgument(_) => ConnectError::invalid_argument(message),
            FsError::NotFound(_) => ConnectError::not_found(message),
            FsError::AlreadyExists(_) => ConnectError::already_exists(message),
            FsError::PermissionDenied(_) => ConnectError::permission_denied(message),
            FsError::Unauthenticated(_) => ConnectError::unauthenticated(message),
            FsError::FailedPrecondition(_) => ConnectError::failed_precondition(message),
            FsError::NoSpace { .. } => ConnectError::resource_exhausted(message),
            FsError::Io { .. } | FsError::Internal(_) => ConnectError::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_kind() {
        let not_found = FsError::io("stat", io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(not_found, FsError::NotFound(_)));
        assert_eq!(not_found.http_status(), StatusCode::NOT_FOUND);

        let denied = FsError::io("open", io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(denied, FsError::PermissionDenied(_)));

        let full = FsError::io("write", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.http_status(), StatusCode::INSUFFICIENT_STORAGE);

        let other = FsError::io("read", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.http_status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn connect_codes_follow_the_variant() {
        let err: ConnectError = FsError::NotFound("missing".into()).into();
        assert_eq!(err.http_status(), StatusCode::NOT_FOUND);
        let err: ConnectError = FsError::AlreadyExists("there".into()).into();
        assert_eq!(err.http_status(), StatusCode::CONFLICT);
        let err: ConnectError = FsError::InvalidArgument("bad".into()).into();
        assert_eq!(err.http_status(), StatusCode::BAD_REQUEST);
    }
}
