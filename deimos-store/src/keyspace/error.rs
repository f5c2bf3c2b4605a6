//! The etcd v2 error table and the one error type every key-space operation returns.
//!
//! Clients (etcdctl v2, python-etcd, node-etcd) branch on the numeric `errorCode`, not on the
//! message, so the codes and messages below are etcd v2's own, byte for byte. The HTTP status of
//! each code follows Deimos's API reference (`/work/shared/reference/etcd-v2-api.md`).
//!
//! Invariant: `StoreError::index` is the store index (`X-Etcd-Index`) at the moment the error was
//! produced; a failed command never changes that index.

use deimos_api::error::EtcdError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest value accepted in a key (1 MiB). Bigger values are refused with [`ErrorCode::InvalidField`]
/// so one write cannot blow up a Raft entry, a redb record or a watcher's buffer.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// An etcd v2 error code. The discriminant is the wire number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    KeyNotFound = 100,
    TestFailed = 101,
    NotFile = 102,
    NoMorePeer = 103,
    NotDir = 104,
    NodeExist = 105,
    KeyIsPreserved = 106,
    RootReadOnly = 107,
    DirNotEmpty = 108,
    ExistingPeerAddr = 109,
    Unauthorized = 110,
    ValueRequired = 200,
    PrevValueRequired = 201,
    TtlNaN = 202,
    IndexNaN = 203,
    ValueOrTtlRequired = 204,
    TimeoutNaN = 205,
    NameRequired = 206,
    IndexOrValueRequired = 207,
    IndexValueMutex = 208,
    InvalidField = 209,
    InvalidForm = 210,
    RefreshValue = 211,
    RefreshTtlRequired = 212,
    RaftInternal = 300,
    LeaderElect = 301,
    WatcherCleared = 400,
    EventIndexCleared = 401,
}

impl ErrorCode {
    /// Every code, in numeric order (used by tests and by clients decoding errors).
    pub const ALL: [ErrorCode; 28] = [
        ErrorCode::KeyNotFound,
        ErrorCode::TestFailed,
        ErrorCode::NotFile,
        ErrorCode::NoMorePeer,
        ErrorCode::NotDir,
        ErrorCode::NodeExist,
        ErrorCode::KeyIsPreserved,
        ErrorCode::RootReadOnly,
        ErrorCode::DirNotEmpty,
        ErrorCode::ExistingPeerAddr,
        ErrorCode::Unauthorized,
        ErrorCode::ValueRequired,
        ErrorCode::PrevValueRequired,
        ErrorCode::TtlNaN,
        ErrorCode::IndexNaN,
        ErrorCode::ValueOrTtlRequired,
        ErrorCode::TimeoutNaN,
        ErrorCode::NameRequired,
        ErrorCode::IndexOrValueRequired,
        ErrorCode::IndexValueMutex,
        ErrorCode::InvalidField,
        ErrorCode::InvalidForm,
        ErrorCode::RefreshValue,
        ErrorCode::RefreshTtlRequired,
        ErrorCode::RaftInternal,
        ErrorCode::LeaderElect,
        ErrorCode::WatcherCleared,
        ErrorCode::EventIndexCleared,
    ];

    /// The wire number (`errorCode`).
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Decode a wire number; `None` for numbers etcd v2 never sends.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// etcd v2's message for this code (exact text; clients sometimes log or match it).
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::KeyNotFound => "Key not found",
            ErrorCode::TestFailed => "Compare failed",
            ErrorCode::NotFile => "Not a file",
            ErrorCode::NoMorePeer => "Reached the max number of peers in the cluster",
            ErrorCode::NotDir => "Not a directory",
            ErrorCode::NodeExist => "Key already exists",
            ErrorCode::KeyIsPreserved => "The prefix of given key is a keyword in etcd",
            ErrorCode::RootReadOnly => "Root is read only",
            ErrorCode::DirNotEmpty => "Directory not empty",
            ErrorCode::ExistingPeerAddr => "Peer address has existed",
            ErrorCode::Unauthorized => "The request requires user authentication",
            ErrorCode::ValueRequired => "Value is Required in POST form",
            ErrorCode::PrevValueRequired => "PrevValue is Required in POST form",
            ErrorCode::TtlNaN => "The given TTL in POST form is not a number",
            ErrorCode::IndexNaN => "The given index in POST form is not a number",
            ErrorCode::ValueOrTtlRequired => "Value or TTL is required in POST form",
            ErrorCode::TimeoutNaN => "The given timeout in POST form is not a number",
            ErrorCode::NameRequired => "Name is required in POST form",
            ErrorCode::IndexOrValueRequired => "Index or value is required",
            ErrorCode::IndexValueMutex => "Index and value cannot both be specified",
            ErrorCode::InvalidField => "Invalid field",
            ErrorCode::InvalidForm => "Invalid POST form",
            ErrorCode::RefreshValue => "Value provided on refresh",
            ErrorCode::RefreshTtlRequired => "A TTL must be provided on refresh",
            ErrorCode::RaftInternal => "Raft Internal Error",
            ErrorCode::LeaderElect => "During Leader Election",
            ErrorCode::WatcherCleared => "watcher is cleared due to etcd recovery",
            ErrorCode::EventIndexCleared => "The event in requested index is outdated and cleared",
        }
    }

    /// HTTP status for this code, as etcd 3.4's v2 API answers (checked side by side): 404 for a
    /// missing key, 412 for a failed precondition, 403 for 102 and 108, 401 for auth, 500 for
    /// consensus trouble, 400 for everything else — including 104 "Not a directory" and 107
    /// "Root is read only", which etcd leaves at its default (clients rely on the status).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::KeyNotFound => 404,
            ErrorCode::TestFailed | ErrorCode::NodeExist => 412,
            ErrorCode::NotFile | ErrorCode::DirNotEmpty => 403,
            ErrorCode::Unauthorized => 401,
            ErrorCode::RaftInternal | ErrorCode::LeaderElect => 500,
            _ => 400,
        }
    }
}

/// The error of every key-space operation, rendered to clients as
/// `{"errorCode":n,"message":"...","cause":"...","index":i}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    pub code: ErrorCode,
    /// What failed: usually the key path, or `[x != y]` for a failed compare.
    pub cause: String,
    /// The store index when the error happened.
    pub index: u64,
}

impl StoreError {
    pub fn new(code: ErrorCode, cause: impl Into<String>, index: u64) -> StoreError {
        StoreError {
            code,
            cause: cause.into(),
            index,
        }
    }

    pub fn message(&self) -> &'static str {
        self.code.message()
    }

    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// A value over [`MAX_VALUE_BYTES`].
    pub fn value_too_large(len: usize, index: u64) -> StoreError {
        StoreError::new(
            ErrorCode::InvalidField,
            format!("value is {len} bytes; the limit is {MAX_VALUE_BYTES} bytes"),
            index,
        )
    }

    /// A key path that can never name a node (too long, NUL byte, ...).
    pub fn invalid_key(why: impl std::fmt::Display, index: u64) -> StoreError {
        StoreError::new(
            ErrorCode::InvalidField,
            format!("invalid key: {why}"),
            index,
        )
    }

    /// Persisted records that cannot be decoded into a consistent tree.
    pub fn corrupt(why: impl std::fmt::Display) -> StoreError {
        StoreError::new(
            ErrorCode::RaftInternal,
            format!("corrupt key-space record: {why}"),
            0,
        )
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.code.code(),
            self.code.message(),
            self.cause,
            self.index
        )
    }
}

impl std::error::Error for StoreError {}

/// The wire body: etcd's error shape, with the message the code implies.
impl From<&StoreError> for EtcdError {
    fn from(e: &StoreError) -> EtcdError {
        EtcdError {
            error_code: e.code.code(),
            message: e.code.message().to_string(),
            cause: e.cause.clone(),
            index: e.index,
        }
    }
}

impl Serialize for StoreError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EtcdError::from(self).serialize(serializer)
    }
}

/// Decodes an error body back into a code this store knows; the message is implied by the code.
impl<'de> Deserialize<'de> for StoreError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = EtcdError::deserialize(deserializer)?;
        let code = ErrorCode::from_code(w.error_code).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown etcd error code {}", w.error_code))
        })?;
        Ok(StoreError::new(code, w.cause, w.index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_exactly_etcds() {
        let e = StoreError::new(ErrorCode::KeyNotFound, "/foo", 7);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":7}"#
        );
        let back: StoreError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn codes_messages_and_statuses() {
        let expect = [
            (100, "Key not found", 404),
            (101, "Compare failed", 412),
            (102, "Not a file", 403),
            (104, "Not a directory", 400),
            (105, "Key already exists", 412),
            (107, "Root is read only", 400),
            (108, "Directory not empty", 403),
            (110, "The request requires user authentication", 401),
            (200, "Value is Required in POST form", 400),
            (201, "PrevValue is Required in POST form", 400),
            (202, "The given TTL in POST form is not a number", 400),
            (203, "The given index in POST form is not a number", 400),
            (209, "Invalid field", 400),
            (210, "Invalid POST form", 400),
            (211, "Value provided on refresh", 400),
            (212, "A TTL must be provided on refresh", 400),
            (300, "Raft Internal Error", 500),
            (301, "During Leader Election", 500),
            (400, "watcher is cleared due to etcd recovery", 400),
            (
                401,
                "The event in requested index is outdated and cleared",
                400,
            ),
        ];
        for (code, msg, status) in expect {
            let c = ErrorCode::from_code(code).unwrap();
            assert_eq!(c.code(), code);
            assert_eq!(c.message(), msg);
            assert_eq!(c.http_status(), status, "status of {code}");
        }
        assert_eq!(ErrorCode::from_code(999), None);
        // ALL is strictly increasing, so from_code is a bijection on it.
        assert!(ErrorCode::ALL.windows(2).all(|w| w[0].code() < w[1].code()));
    }

    #[test]
    fn unknown_code_does_not_decode() {
        assert!(serde_json::from_str::<StoreError>(r#"{"errorCode":999,"message":"x"}"#).is_err());
    }
}
